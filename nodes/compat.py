"""The ComfyUI versions the pack runs on (0.3.75 to 0.33): newer V3 schema features used only where the host has them."""
import dataclasses

from comfy_api.latest import io

# io.Schema fields that newer ComfyUI added and older ones lack; they only help users (search), so on an older
# host they are left out. Any other unknown field is a mistake and still fails, in io.Schema itself.
NEWER_SCHEMA_FIELDS = frozenset({"search_aliases"})  # search_aliases: ComfyUI 0.33 (0.3.75 lacks it)
SCHEMA_FIELDS = frozenset(field.name for field in dataclasses.fields(io.Schema))


def schema(**fields):
    """io.Schema(**fields) without the newer fields (NEWER_SCHEMA_FIELDS) that the running ComfyUI does not know."""
    return io.Schema(**{name: value for name, value in fields.items()
                        if name in SCHEMA_FIELDS or name not in NEWER_SCHEMA_FIELDS})
