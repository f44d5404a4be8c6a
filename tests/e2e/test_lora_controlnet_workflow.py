"""A LoRA and a ControlNet on the pack's U-Net in a real server: the example workflow sd1_lora_controlnet on the
random-weight SD1.5 checkpoint, LoRA and ControlNet (devtools/sd_checkpoint.py, sd_adapters.py), against the same
workflow on ComfyUI's own U-Net loaded from the same file."""
import copy
import json

import numpy as np
import pytest
from PIL import Image

from diffusion_blocks.devtools.paths import PACK_ROOT
from diffusion_blocks.devtools.sd_adapters import install_controlnet, install_lora, write_hint_picture
from diffusion_blocks.devtools.sd_checkpoint import install_checkpoint

pytestmark = pytest.mark.e2e
WORKFLOW = PACK_ROOT / "example_workflows" / "api" / "sd1_lora_controlnet.json"
SIZE = 64  # pixels: random weights draw at any size, so draw quickly


@pytest.fixture(scope="module")
def workflow(comfy_server):
    """The example as shipped, its files installed under the names it uses, at SIZE pixels and 3 steps."""
    workflow = json.loads(WORKFLOW.read_text())
    nodes = {node["class_type"]: node["inputs"] for node in workflow.values()}
    install_checkpoint(comfy_server.base, nodes["CheckpointLoaderSimple"]["ckpt_name"])
    install_lora(comfy_server.base, nodes["LoraLoaderModelOnly"]["lora_name"])
    install_controlnet(comfy_server.base, nodes["ControlNetLoader"]["control_net_name"])
    write_hint_picture(comfy_server.base / "input" / nodes["LoadImage"]["image"], SIZE)
    assert (nodes["EmptyLatentImage"]["width"], nodes["KSampler"]["steps"]) == (512, 20)  # as shipped
    nodes["EmptyLatentImage"].update(width=SIZE, height=SIZE)
    nodes["KSampler"]["steps"] = 3
    return workflow


def picture(server, workflow):
    [path] = server.output_images(server.run(workflow))
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_lora_and_controlnet_on_the_pack_unet_give_comfyuis_picture(comfy_server, workflow):
    ids = {node["class_type"]: key for key, node in workflow.items()}
    on_comfyui = copy.deepcopy(workflow)  # the LoRA on the checkpoint's own MODEL, everything else the same
    on_comfyui[ids["LoraLoaderModelOnly"]]["inputs"]["model"] = [ids["CheckpointLoaderSimple"], 0]
    without = copy.deepcopy(workflow)  # the pack's U-Net, neither LoRA nor ControlNet
    sampler = without[ids["KSampler"]]["inputs"]
    sampler.update(model=[ids["DB_NoisePredictorAsModel"], 0],
                   positive=without[ids["ControlNetApplyAdvanced"]]["inputs"]["positive"],
                   negative=without[ids["ControlNetApplyAdvanced"]]["inputs"]["negative"])
    ours, theirs, plain = (picture(comfy_server, w) for w in (workflow, on_comfyui, without))
    difference = np.abs(ours - theirs).mean()
    print(f"\n[lora + controlnet] mean |ours - ComfyUI's| {difference:.3f} / 255, "
          f"their effect {np.abs(ours - plain).mean():.2f} / 255")
    assert ours.shape == (SIZE, SIZE, 3) and ours.std() > 1
    assert difference <= 0.5
    assert np.abs(ours - plain).mean() > 20 * max(difference, 0.1)
