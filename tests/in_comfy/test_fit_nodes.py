"""Fit Schedule and Load Fitted Schedule in an in-process ComfyUI, on a tiny random pixel-space U-Net."""
import json

import pytest
import torch

from harness.nodes import run_node

from diffusion_blocks.networks.prediction import Cond, TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet_loading import save_unet
from diffusion_blocks.pipeline.fit_schedule import fit_schedule
from diffusion_blocks.pipeline.guidance import Guided
from diffusion_blocks.pipeline.noise import start_noise

TINY = UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
                  transformer_depth=(0, 1), transformer_depth_output=(1, 1, 0, 0), context_dim=64, num_heads=-1,
                  head_channels=32)
SIZE, CFG = 8, 3.0
SETTINGS = dict(sampler="dpmpp_2m", calls=3, cfg=CFG, seed=5, seeds=2, grid_size=6, teacher_substeps=1)


def text(seed):
    return [[torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(seed)), {}]]


@pytest.fixture(scope="module")
def nodes(pack_nodes):
    return pack_nodes


@pytest.fixture(scope="module")
def unet(comfy, nodes, tmp_path_factory):
    """A tiny v-prediction pixel U-Net with every weight random, loaded through Load U-Net."""
    import folder_paths

    folder = tmp_path_factory.mktemp("fit_models") / "diffusion_models"
    folder.mkdir()
    torch.manual_seed(0)
    network = UNet(TINY).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / max(parameter[0].numel(), 1) ** 0.5)
    save_unet(network, folder / "tiny_fit.safetensors", TrainingSpec(prediction="v", latent_scale=1.0))
    folder_paths.add_model_folder_path("diffusion_models", str(folder), is_default=True)
    patcher, = run_node(nodes["DB_LoadUNet"], unet_name="diffusion_models/tiny_fit.safetensors", weight_dtype="fp32",
                        prediction="auto", zero_snr="auto")
    return patcher


@pytest.fixture()
def user_dir(comfy, tmp_path):
    import folder_paths

    before = folder_paths.get_user_directory()
    folder_paths.set_user_directory(str(tmp_path / "user"))
    yield tmp_path / "user"
    folder_paths.set_user_directory(before)


def fit(nodes, **inputs):
    latent = {"samples": torch.zeros(1, 3, SIZE, SIZE)}
    return run_node(nodes["DB_FitSchedule"], positive=text(1), negative=text(2), latent=latent,
                    **{**SETTINGS, **inputs})


def test_fit_equals_the_core_saves_under_the_user_folder_and_is_reused(nodes, unet, user_dir, monkeypatch):
    sigmas, plot = fit(nodes, unet=unet)
    denoiser = unet.model.denoiser
    guided = Guided(denoiser, Cond(text(1)[0][0]), Cond(text(2)[0][0]), CFG)
    expected = fit_schedule(guided, start_noise((2, 3, SIZE, SIZE), 5), float(denoiser.schedule.sigma_min),
                            float(denoiser.schedule.sigma_max), "dpmpp_2m", 3, grid_size=6, teacher_substeps=1)
    assert torch.equal(sigmas, expected.sigmas)
    assert plot.ndim == 4 and plot.shape[-1] == 3
    saved = list((user_dir / "diffusion_blocks" / "fitted_schedules").glob("*.json"))
    assert len(saved) == 1 and saved[0].name.startswith("tiny_fit-dpmpp_2m-3calls-")
    assert json.loads(saved[0].read_text())["fits"][0]["sigmas"] == sigmas.tolist()

    from diffusion_blocks.nodes import fit_nodes

    monkeypatch.setattr(fit_nodes, "fit_schedule", lambda *a, **k: pytest.fail("refitted an identical fit"))
    again, _ = fit(nodes, unet=unet)
    assert torch.equal(again, sigmas)
    with pytest.raises(pytest.fail.Exception, match="refitted"):  # other settings: a new fit is needed
        fit(nodes, unet=unet, seeds=3)


def test_order_is_fitted_for_the_samplers_that_take_it_and_ignored_by_the_others(nodes, unet, user_dir, monkeypatch):
    sigmas, _ = fit(nodes, unet=unet, sampler="uni_pc_bh2", order=1)
    denoiser = unet.model.denoiser
    guided = Guided(denoiser, Cond(text(1)[0][0]), Cond(text(2)[0][0]), CFG)
    expected = fit_schedule(guided, start_noise((2, 3, SIZE, SIZE), 5), float(denoiser.schedule.sigma_min),
                            float(denoiser.schedule.sigma_max), "uni_pc_bh2", 3, grid_size=6, teacher_substeps=1,
                            sampler_options={"order": 1})
    assert torch.equal(sigmas, expected.sigmas)
    folder = user_dir / "diffusion_blocks" / "fitted_schedules"
    saved, = folder.glob("tiny_fit-uni_pc_bh2_order_1-3calls-*.json")
    record = json.loads(saved.read_text())
    assert record["fits"][0]["options"] == {"order": 1} and record["settings"]["sampler_options"] == {"order": 1}
    fit(nodes, unet=unet, sampler="euler")
    plain, = folder.glob("tiny_fit-euler-3calls-*.json")
    assert "sampler_options" not in json.loads(plain.read_text())["settings"]  # keys of fits saved before order
    from diffusion_blocks.nodes import fit_nodes

    monkeypatch.setattr(fit_nodes, "fit_schedule", lambda *a, **k: pytest.fail("refitted"))
    fit(nodes, unet=unet, sampler="euler", order=2)  # euler has no order: the same fit, loaded
    with pytest.raises(pytest.fail.Exception, match="refitted"):
        fit(nodes, unet=unet, sampler="uni_pc_bh2", order=2)


@pytest.mark.parametrize("route", ["unet", "model"])
def test_a_patch_or_its_strength_asks_for_a_new_fit(nodes, unet, user_dir, monkeypatch, route):
    from diffusion_blocks.nodes import fit_nodes

    wire = unet if route == "unet" else run_node(nodes["DB_NoisePredictorAsModel"], unet=unet)[0]
    key = next(k for k in wire.model_state_dict() if k.endswith("out.2.bias"))
    delta = torch.full_like(wire.model_state_dict()[key], 0.01)

    def patched(strength):
        clone = wire.clone()
        clone.add_patches({key: (delta,)}, strength)
        return clone

    fit(nodes, **{route: patched(0.5)})
    monkeypatch.setattr(fit_nodes, "fit_schedule", lambda *a, **k: pytest.fail("refitted"))
    fit(nodes, **{route: patched(0.5)})  # the same patch again: loaded
    for other in (wire, patched(1.0)):  # unpatched, or another strength: a new fit
        with pytest.raises(pytest.fail.Exception, match="refitted"):
            fit(nodes, **{route: other})


def test_native_model_route_gives_a_valid_saved_fit(nodes, unet, user_dir):
    model, = run_node(nodes["DB_NoisePredictorAsModel"], unet=unet)
    sigmas, _ = fit(nodes, model=model)
    ours, _ = fit(nodes, unet=unet)
    assert len(sigmas) == 4 and sigmas[-1] == 0 and bool((sigmas[1:] < sigmas[:-1]).all())
    assert sigmas[0] == pytest.approx(float(unet.model.denoiser.schedule.sigma_max), rel=1e-6)
    assert torch.allclose(sigmas, ours)  # the same network and guidance through ComfyUI's CFGGuider
    assert len(list((user_dir / "diffusion_blocks" / "fitted_schedules").glob("*.json"))) == 2


def test_exactly_one_of_unet_and_model(nodes, unet, user_dir):
    with pytest.raises(ValueError, match="unet, model: connect exactly one of them .* got neither"):
        fit(nodes)
    model, = run_node(nodes["DB_NoisePredictorAsModel"], unet=unet)
    with pytest.raises(ValueError, match="got both"):
        fit(nodes, unet=unet, model=model)


def test_stop_interrupts_the_fit(nodes, unet, user_dir):
    import comfy.model_management

    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            fit(nodes, unet=unet)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert not (user_dir / "diffusion_blocks" / "fitted_schedules").exists() or not list(
        (user_dir / "diffusion_blocks" / "fitted_schedules").glob("*.json"))


def test_load_lists_shipped_and_saved_fits_and_names_damage(nodes, unet, user_dir):
    from diffusion_blocks.nodes import fit_nodes

    sigmas, _ = fit(nodes, unet=unet)
    load_node = nodes["DB_LoadFittedSchedule"]
    options = load_node.define_schema().inputs[0].options
    saved = [o for o in options if o.endswith(".json")]
    assert len(saved) == 1
    assert "shipped: diffusion_blocks_shapes dpmpp_2m 8 calls" in options
    loaded, = run_node(load_node, fit=saved[0])
    assert torch.equal(loaded, sigmas)
    shipped, = run_node(load_node, fit="shipped: diffusion_blocks_shapes uni_pc 6 calls")
    assert len(shipped) == 7 and shipped[-1] == 0
    from diffusion_blocks.pipeline.fit_store import load, sigmas_of

    record = load(fit_nodes.SHIPPED)
    with_order, = run_node(load_node, fit="shipped: diffusion_blocks_shapes uni_pc_bh2 order=1 8 calls")
    assert torch.equal(with_order, sigmas_of(record, "uni_pc_bh2", 8, {"order": 1}))
    assert not torch.equal(with_order, sigmas_of(record, "uni_pc", 8))
    (user_dir / "diffusion_blocks" / "fitted_schedules" / saved[0]).write_text("{broken")
    with pytest.raises(ValueError, match="is damaged"):
        run_node(load_node, fit=saved[0])
