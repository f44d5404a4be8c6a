"""Helpers for the test tiers: paths, in-process ComfyUI, and a real ComfyUI server."""
