"""Running the pack's V3 nodes in-process."""


def run_node(cls, **inputs):
    """Execute a V3 node the way ComfyUI's executor calls it and return its outputs as a tuple."""
    return cls.execute(**inputs).result
