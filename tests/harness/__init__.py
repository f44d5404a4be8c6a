"""Helpers only the tests use (importable as `harness` through pytest.ini's pythonpath); what scripts, benchmarks and tests share is diffusion_blocks.devtools."""
