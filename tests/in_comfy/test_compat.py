"""nodes/compat.py: newer io.Schema fields reach a ComfyUI that has them and are left out of one that does not;
anything else unknown still fails."""
import dataclasses

import pytest


def test_schema_passes_search_aliases_where_io_schema_has_them_and_leaves_them_out_elsewhere(comfy):
    from comfy_api.latest import io

    from diffusion_blocks.nodes.compat import schema

    built = schema(node_id="DB_Test", display_name="Test", category="diffusion_blocks/test",
                   search_aliases=["noise schedule"])
    assert isinstance(built, io.Schema) and built.node_id == "DB_Test"
    if "search_aliases" in {field.name for field in dataclasses.fields(io.Schema)}:
        assert built.search_aliases == ["noise schedule"]
    else:
        assert not hasattr(built, "search_aliases")


def test_a_misspelt_field_is_not_dropped(comfy):
    from diffusion_blocks.nodes.compat import schema

    with pytest.raises(TypeError, match="serch_aliases"):
        schema(node_id="DB_Test", display_name="Test", category="diffusion_blocks/test", serch_aliases=["x"])


def test_every_node_of_the_pack_builds_its_schema_on_this_comfyui(pack_nodes):
    schemas = [cls.GET_SCHEMA() for cls in pack_nodes.values()]
    assert len(schemas) >= 44 and all(s.node_id.startswith("DB_") for s in schemas)
