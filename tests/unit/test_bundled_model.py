"""The shipped shapes model: one small file the normal loaders read, and pictures that follow their captions."""
import json
from collections import defaultdict

import torch
from safetensors import safe_open

from diffusion_blocks.networks import load_text_encoder, load_unet
from diffusion_blocks.networks.checkpoint import save_checkpoint
from diffusion_blocks.networks.clip_text import ARCHITECTURES, ClipTextTransformer
from diffusion_blocks.networks.families import FAMILIES
from diffusion_blocks.networks.unet import UNet
from diffusion_blocks.training.analyse import score
from diffusion_blocks.pipeline import text_to_image
from diffusion_blocks.training.scenes import sample_scenes
from diffusion_blocks.devtools.paths import PACK_ROOT

BUNDLED = PACK_ROOT / "models" / "diffusion_blocks_shapes.safetensors"
MAX_BYTES = 20_000_000


def test_the_file_is_small_and_says_how_it_was_trained():
    assert BUNDLED.stat().st_size <= MAX_BYTES
    with safe_open(str(BUNDLED), framework="pt") as handle:
        trained = json.loads(handle.metadata()["diffusion_blocks.trained"])
    assert trained["steps"] > 0 and trained["batch"] > 0


def test_the_normal_loaders_read_it_as_the_small_family():
    unet = load_unet(BUNDLED)
    assert unet.family == "small" and unet.config == FAMILIES["small"].unet
    assert unet.trained_as == FAMILIES["small"].training
    encoder = load_text_encoder(BUNDLED)
    assert encoder.family.name == "small"
    assert encoder.towers["s"].config == ARCHITECTURES["clip_small"]


def test_a_saved_checkpoint_loads_back_to_the_same_networks(tmp_path):
    torch.manual_seed(0)
    unet, tower = UNet(FAMILIES["small"].unet).eval(), ClipTextTransformer(ARCHITECTURES["clip_small"]).eval()
    for parameter in [*unet.parameters(), *tower.parameters()]:
        parameter.data.normal_(0, 0.05)  # nothing left at a default value
    path = save_checkpoint(tmp_path / "model.safetensors", unet, tower, FAMILIES["small"].training)
    loaded = load_unet(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in unet.state_dict().items())
    tokens = torch.randint(0, 49406, (2, 77))
    expected = tower(tokens, layer=-1, norm_hidden=True).hidden
    assert torch.equal(load_text_encoder(path).towers["s"](tokens, layer=-1, norm_hidden=True).hidden, expected)


def test_it_draws_what_held_out_captions_ask_for():
    """A quick look at the adherence benchmark's setting (benchmarks/adherence.py measures it on 240 captions)."""
    torch.manual_seed(0)
    scenes = sample_scenes(7, 8, held_out=True)
    images = text_to_image(load_unet(BUNDLED), load_text_encoder(BUNDLED), [s.caption for s in scenes], range(8))
    passed = defaultdict(list)
    for scene, image in zip(scenes, images.numpy()):
        for check, results in score(scene, image).items():
            passed[check] += results
    assert sum(passed["background"]) >= 7 and sum(passed["colour"]) >= 0.8 * len(passed["colour"])


def test_the_same_seed_gives_the_same_pixels_and_another_seed_others():
    unet, encoder = load_unet(BUNDLED), load_text_encoder(BUNDLED)
    prompt = ["a yellow star on a blue background"] * 2
    first, again, other = (text_to_image(unet, encoder, prompt, seeds, steps=6) for seeds in ((1, 2), (1, 2), (3, 4)))
    assert torch.equal(first, again) and not torch.equal(first, other)
