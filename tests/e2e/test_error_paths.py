"""Errors a shared server shows to whoever sends a prompt carry no server paths: ComfyUI prints an exception's type as
module.qualname, and the pack, loaded from a file path, would put that path in it; messages name files only."""
import re

import pytest

from diffusion_blocks.devtools.paths import PACK_ROOT
from diffusion_blocks.devtools.server import WorkflowError

pytestmark = pytest.mark.e2e
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"/]+/)+")


def error_of(server, workflow):
    """The execution_error the server sends over the websocket for a prompt that fails while running."""
    seen = []
    with pytest.raises(WorkflowError):
        server.run(workflow, on_message=lambda m: seen.append(m["data"]) if m["type"] == "execution_error" else None)
    error, = seen
    return error


def preview(node):
    return {"9": {"class_type": "PreviewImage", "inputs": {"images": [node, 0]}}}


def assert_no_paths(server, error):
    shown = f"{error['exception_type']}: {error['exception_message']}"
    for folder in (server.base, PACK_ROOT, server.base.resolve(), PACK_ROOT.resolve()):
        assert str(folder) not in shown
    assert not ABSOLUTE_PATH.search(shown), shown


def test_a_malformed_unet_file_shows_a_plain_value_error_naming_the_file(comfy_server):
    (comfy_server.base / "models" / "diffusion_models" / "header_list.safetensors").write_bytes(
        b"\x08\x00\x00\x00\x00\x00\x00\x00[1,2,3] ")
    workflow = {
        "1": {"class_type": "DB_LoadUNet", "inputs": {"unet_name": "diffusion_models/header_list.safetensors",
                                                      "weight_dtype": "fp32", "prediction": "auto",
                                                      "zero_snr": "auto"}},
        "2": {"class_type": "DB_EmptyLatent", "inputs": {"unet": ["1", 0], "width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "DB_LatentToImage", "inputs": {"latent": ["2", 0]}},
        **preview("3"),
    }
    error = error_of(comfy_server, workflow)
    assert error["exception_type"] == "ValueError"
    assert error["exception_message"].startswith("header_list.safetensors: ")
    assert_no_paths(comfy_server, error)


def test_a_missing_embedding_names_no_folder(comfy_server):
    workflow = {"1": {"class_type": "DB_ShowTokens", "inputs": {"text": "a embedding:not_there fox", "width": 512}},
                **preview("1")}
    error = error_of(comfy_server, workflow)
    assert error["exception_type"] == "ValueError"
    assert error["exception_message"].startswith("embedding:not_there: no file not_there{,.safetensors,.pt,.bin} in "
                                                 "ComfyUI's embeddings folder(s)")
    assert_no_paths(comfy_server, error)


@pytest.mark.parametrize("inputs, message", [
    ({"unet": "foo"}, "unet: expected the pack's U-Net wire (DB_UNET, from Load U-Net), got 'foo'"),
    ({"unet": {"samples": 1}}, "unet: expected the pack's U-Net wire (DB_UNET, from Load U-Net), got a dict with "
                               "keys ['samples']"),
])
def test_a_plain_value_where_a_link_belongs_is_named(comfy_server, inputs, message):
    workflow = {"2": {"class_type": "DB_EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1, **inputs}},
                "3": {"class_type": "DB_LatentToImage", "inputs": {"latent": ["2", 0]}}, **preview("3")}
    error = error_of(comfy_server, workflow)
    assert (error["exception_type"], error["exception_message"].strip()) == ("ValueError", message)
    assert_no_paths(comfy_server, error)
