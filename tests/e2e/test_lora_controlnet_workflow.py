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


def assert_same_picture(label, ours, theirs, plain):
    """Ours is ComfyUI's picture (mean difference at most 0.5 / 255), and what was applied made a real difference
    (plain, without it, is far from it)."""
    difference = np.abs(ours - theirs).mean()
    print(f"\n[{label}] mean |ours - ComfyUI's| {difference:.3f} / 255, "
          f"the effect {np.abs(ours - plain).mean():.2f} / 255")
    assert ours.shape == (SIZE, SIZE, 3) and ours.std() > 1
    assert difference <= 0.5
    assert np.abs(ours - plain).mean() > 20 * max(difference, 0.1)


def test_lora_and_controlnet_on_the_pack_unet_give_comfyuis_picture(comfy_server, workflow):
    ids = {node["class_type"]: key for key, node in workflow.items()}
    on_comfyui = copy.deepcopy(workflow)  # the LoRA on the checkpoint's own MODEL, everything else the same
    on_comfyui[ids["LoraLoaderModelOnly"]]["inputs"]["model"] = [ids["CheckpointLoaderSimple"], 0]
    without = copy.deepcopy(workflow)  # the pack's U-Net, neither LoRA nor ControlNet
    sampler = without[ids["KSampler"]]["inputs"]
    sampler.update(model=[ids["DB_NoisePredictorAsModel"], 0],
                   positive=without[ids["ControlNetApplyAdvanced"]]["inputs"]["positive"],
                   negative=without[ids["ControlNetApplyAdvanced"]]["inputs"]["negative"])
    assert_same_picture("lora + controlnet", *(picture(comfy_server, w) for w in (workflow, on_comfyui, without)))


def sampled_by(workflow, sampler_node, area=True):
    """The workflow with its KSampler replaced: `sampler_node` (DB_Sample or SamplerCustom) on the checkpoint's own
    MODEL with the LoRA, a Karras schedule below sigma_max (where both add noise as sigma * noise), its positive the
    ControlNet's, combined with the negative text, weighted 3, over the top left (`area`) or not."""
    ids = {node["class_type"]: key for key, node in workflow.items()}
    out = copy.deepcopy(workflow)
    out[ids["LoraLoaderModelOnly"]]["inputs"]["model"] = [ids["CheckpointLoaderSimple"], 0]
    old = out.pop(ids["KSampler"])["inputs"]
    control = ids["ControlNetApplyAdvanced"]
    negative_text = out[control]["inputs"]["negative"]
    out.update({
        "20": {"class_type": "ConditioningSetAreaPercentage", "inputs": {"conditioning": negative_text, "width": 0.75,
                                                                         "height": 0.75, "x": 0, "y": 0,
                                                                         "strength": 3.0}},
        "21": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": [control, 0],
                                                               "conditioning_2": ["20", 0]}},
        "22": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": old["sampler_name"]}},
        "23": {"class_type": "KarrasScheduler", "inputs": {"steps": old["steps"], "sigma_max": 10.0,
                                                           "sigma_min": 0.0292, "rho": 7.0}},
    })
    common = {"positive": ["21", 0] if area else [control, 0], "negative": [control, 1], "sampler": ["22", 0],
              "sigmas": ["23", 0], "cfg": old["cfg"]}
    if sampler_node == "DB_Sample":
        inputs = {"unet": old["model"], "latent": old["latent_image"], "seed": old["seed"], **common}
    else:
        inputs = {"model": old["model"], "latent_image": old["latent_image"], "noise_seed": old["seed"],
                  "add_noise": True, **common}
    out["24"] = {"class_type": sampler_node, "inputs": inputs}
    out[ids["VAEDecode"]]["inputs"]["samples"] = ["24", 0]
    return out


def test_sample_takes_the_checkpoints_own_model_and_conditioning_as_sampler_custom(comfy_server, workflow):
    """The pack's Sample on ComfyUI's own MODEL (LoRA'd), its positive the ControlNet's combined with an area prompt:
    SamplerCustom's picture; without the area prompt, another."""
    assert_same_picture("native MODEL + combined area",
                        *(picture(comfy_server, sampled_by(workflow, node, area)) for node, area in
                          (("DB_Sample", True), ("SamplerCustom", True), ("DB_Sample", False))))
