"""Samplers in the k-diffusion calling convention: fn(model, x, sigmas, extra_args, callback, disable, **options)."""
