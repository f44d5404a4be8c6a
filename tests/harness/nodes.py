"""Running the pack's V3 nodes, and ComfyUI's own nodes of either kind, in-process."""


def run_node(cls, **inputs):
    """Execute a V3 node the way ComfyUI's executor calls it and return its outputs as a tuple."""
    return cls.execute(**inputs).result


def run_comfy_node(node, **inputs):
    """A ComfyUI node's first output, V1 (FUNCTION) or V3 (execute) alike (core nodes move from one to the other)."""
    if hasattr(node, "FUNCTION"):
        return getattr(node(), node.FUNCTION)(**inputs)[0]
    return node.execute(**inputs).result[0]
