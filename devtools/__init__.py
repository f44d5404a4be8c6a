"""Development tools shared by scripts/, benchmarks/ and tests/: paths, ComfyUI in-process and as a server, workflows, test data.

Never imported by the pack itself (nodes/ and the core); tests/unit/test_layout.py checks that.
"""
