"""Sample, Noise Predictor as MODEL, Denoising Trajectory, Add Noise and the latent nodes in an in-process ComfyUI,
on a tiny random pixel-space U-Net; every result is checked against a run made by hand or by ComfyUI itself."""
import pytest
import torch

from harness.nodes import run_node

from diffusion_blocks.networks.prediction import Cond, TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet_loading import save_unet
from diffusion_blocks.samplers import SAMPLERS

TINY = dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(0, 1),
            transformer_depth_output=(1, 1, 0, 0), context_dim=64, num_heads=-1, head_channels=32)
PIXELS = UNetConfig(in_channels=3, out_channels=3, **TINY)
SD_LATENTS = UNetConfig(in_channels=4, out_channels=4, **TINY)
SDXL_LIKE = UNetConfig(in_channels=4, out_channels=4, adm_in_channels=2816, **TINY)
SIZE, SEED, CFG = 16, 7, 3.0
PADDING, CAPTION = 8, 22  # views.grid's padding, and its caption band for cells under 216 pixels (12 pt + 10)
NEW_NODES = {"DB_Sample", "DB_DenoisingTrajectory", "DB_AddNoise", "DB_NoisePredictorAsModel", "DB_EmptyLatent", "DB_CompareAtEqualCost",
             "DB_LatentToImage", "DB_ImageToLatent"}


def random_unet(config, seed):
    """A U-Net with every parameter random (none left at zero, so the output depends on everything)."""
    torch.manual_seed(seed)
    unet = UNet(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if parameter.ndim > 1:
                fan_in = parameter[0].numel()
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in**0.5)
            else:
                parameter.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0)
                                + 0.1 * torch.randn(parameter.shape, generator=generator))
    return unet


@pytest.fixture(scope="module")
def nodes(pack_nodes):
    return pack_nodes


@pytest.fixture(scope="module")
def unet_files(comfy, tmp_path_factory):
    """Tiny U-Nets in a registered diffusion_models folder: pixel space (eps and v) and SD-like 4-channel latents."""
    import folder_paths

    folder = tmp_path_factory.mktemp("models") / "diffusion_models"
    folder.mkdir()
    save_unet(random_unet(PIXELS, 0), folder / "tiny_pixels_eps.safetensors", TrainingSpec(latent_scale=1.0))
    save_unet(random_unet(PIXELS, 1), folder / "tiny_pixels_v.safetensors", TrainingSpec(prediction="v", latent_scale=1.0))
    save_unet(random_unet(SD_LATENTS, 2), folder / "tiny_sd.safetensors", TrainingSpec())
    save_unet(random_unet(SDXL_LIKE, 3), folder / "tiny_sdxl.safetensors", TrainingSpec(latent_scale=0.13025))
    folder_paths.add_model_folder_path("diffusion_models", str(folder), is_default=True)
    return folder


def load(nodes, name="tiny_pixels_eps"):
    patcher, = run_node(nodes["DB_LoadUNet"], unet_name=f"diffusion_models/{name}.safetensors", weight_dtype="fp32",
                        prediction="auto", zero_snr="auto")
    return patcher


def text(seed):
    return [[torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(seed)), {}]]


def karras(sigma_max, steps=4):
    from diffusion_blocks.schedules import get_sigmas

    return get_sigmas("karras", steps=steps, sigma_min=0.03, sigma_max=sigma_max)


def our_sampler(name, **options):
    from diffusion_blocks.nodes.sampler_nodes import make_sampler

    return make_sampler(name, **options)


def sample(nodes, unet, sampler, sigmas, seed=SEED, latent=None, cfg=CFG, **more):
    latent = latent or {"samples": torch.zeros(1, 3, SIZE, SIZE)}
    return run_node(nodes["DB_Sample"], unet=unet, sampler=sampler, sigmas=sigmas, latent=latent, seed=seed, cfg=cfg,
                    positive=text(1), negative=text(2), **more)


def test_new_nodes_have_prefix_category_description_and_tooltips(nodes):
    assert NEW_NODES <= set(nodes)
    for node_id in NEW_NODES:
        schema = nodes[node_id].GET_SCHEMA()
        assert schema.category.startswith("diffusion_blocks/") and schema.description, node_id
        assert all(item.tooltip for item in schema.inputs), node_id


@pytest.mark.parametrize("name", ["euler", "euler_ancestral", "dpmpp_2m"])
def test_sample_equals_the_sampler_run_by_hand_on_the_denoiser(nodes, unet_files, name):
    unet, sigmas = load(nodes), karras(14.6)
    latent, denoised = sample(nodes, unet, our_sampler(name), sigmas)
    denoiser = unet.model.denoiser
    cond, uncond = text(1)[0][0], text(2)[0][0]
    noise = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(SEED))
    steps = []
    with torch.no_grad():
        expected = SAMPLERS[name](lambda x, s, **_: denoiser(x, s, cond, uncond, CFG), sigmas[0] * noise, sigmas,
                                  extra_args={"seed": SEED}, callback=steps.append)
    assert torch.equal(latent["samples"], expected)
    assert torch.equal(denoised["samples"], steps[-1]["denoised"]) and len(steps) == len(sigmas) - 1


def test_start_noise_of_one_item_is_comfyuis_seeded_cpu_noise_and_item_k_is_seed_plus_k(comfy):
    import comfy.sample

    from diffusion_blocks.pipeline import start_noise

    one = torch.zeros(1, 3, 5, 6)
    assert torch.equal(start_noise(one.shape, 123), comfy.sample.prepare_noise(one, 123))
    assert torch.equal(start_noise(one.shape, 123), torch.randn(1, 3, 5, 6, generator=torch.Generator().manual_seed(123)))
    batch = start_noise((3, 3, 5, 6), 123)
    for k in range(3):
        assert torch.equal(batch[k:k + 1], comfy.sample.prepare_noise(one, 123 + k))


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "ddpm"])
def test_sample_of_a_batch_equals_the_single_images_of_seed_plus_k(nodes, unet_files, name):
    unet, sigmas = load(nodes), karras(14.6)
    batch, _ = sample(nodes, unet, our_sampler(name), sigmas, latent={"samples": torch.zeros(3, 3, SIZE, SIZE)})
    for k in range(3):
        single, _ = sample(nodes, unet, our_sampler(name), sigmas, seed=SEED + k)
        torch.testing.assert_close(batch["samples"][k:k + 1], single["samples"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batch["samples"][0], batch["samples"][1], atol=1e-2)


def test_sample_node_equals_the_in_process_pipeline(nodes, unet_files):
    from diffusion_blocks.pipeline import generate

    unet, sigmas = load(nodes, "tiny_pixels_v"), karras(14.6)
    node, _ = sample(nodes, unet, our_sampler("euler_ancestral"), sigmas, latent={"samples": torch.zeros(2, 3, SIZE, SIZE)})
    direct = generate(unet.model.denoiser, SAMPLERS["euler_ancestral"], sigmas, torch.zeros(2, 3, SIZE, SIZE), [SEED, SEED + 1],
                      cond=Cond(text(1)[0][0]), uncond=Cond(text(2)[0][0]), cfg=CFG)
    torch.testing.assert_close(node["samples"], direct.samples, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["euler", "euler_ancestral", "dpmpp_2m", "heun"])
def test_comfyuis_own_sampler_gives_what_ours_of_the_same_name_gives(nodes, unet_files, name):
    import comfy.samplers

    unet, sigmas = load(nodes), karras(14.6)
    theirs, _ = sample(nodes, unet, comfy.samplers.ksampler(name), sigmas)
    ours, _ = sample(nodes, unet, our_sampler(name), sigmas)
    torch.testing.assert_close(theirs["samples"], ours["samples"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_comfyuis_sampler_custom_on_the_native_model_equals_sample(nodes, unet_files, prediction):
    import comfy.sample
    import comfy.samplers

    unet = load(nodes, f"tiny_pixels_{prediction}")
    model, = run_node(nodes["DB_NoisePredictorAsModel"], unet=unet)
    sigmas = karras(10.0)  # below sigma_max: ComfyUI then adds noise as sigma_0 * noise, as Sample does
    latent = torch.zeros(1, 3, SIZE, SIZE)
    noise = comfy.sample.prepare_noise(latent, SEED)
    theirs = comfy.sample.sample_custom(model, noise, CFG, comfy.samplers.ksampler("dpmpp_2m"), sigmas, text(1), text(2),
                                        latent, seed=SEED)
    ours, _ = sample(nodes, unet, our_sampler("dpmpp_2m"), sigmas)
    torch.testing.assert_close(theirs, ours["samples"], rtol=1e-5, atol=1e-5)


def test_native_model_of_an_sdxl_type_network_builds_the_same_vector_and_latent_scale(nodes, unet_files):
    import comfy.sample
    import comfy.samplers

    unet = load(nodes, "tiny_sdxl")
    model, = run_node(nodes["DB_NoisePredictorAsModel"], unet=unet)
    pooled = torch.randn(1, 1280, generator=torch.Generator().manual_seed(9))
    positive = [[text(1)[0][0], {"pooled_output": pooled, "width": 96, "height": 64}]]
    negative = [[text(2)[0][0], {"pooled_output": -pooled}]]
    latent, sigmas = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(8)), karras(10.0)
    theirs = comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, SEED), CFG,
                                        comfy.samplers.ksampler("euler"), sigmas, positive, negative, latent, seed=SEED)
    ours, _ = run_node(nodes["DB_Sample"], unet=unet, sampler=our_sampler("euler"), sigmas=sigmas,
                       latent={"samples": latent}, seed=SEED, cfg=CFG, positive=positive, negative=negative)
    # fp32 through SDXL-type blocks: summation order differs between CPUs (1.3e-5 seen on one), hence 1e-4
    torch.testing.assert_close(theirs, ours["samples"], rtol=1e-4, atol=1e-4)


def test_comfyuis_ksampler_on_the_native_model_equals_sample_image_to_image(nodes, unet_files):
    import comfy.samplers
    from nodes import common_ksampler

    unet = load(nodes)
    model, = run_node(nodes["DB_NoisePredictorAsModel"], unet=unet)
    image = {"samples": torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1}
    theirs, = common_ksampler(model, SEED, 4, CFG, "euler", "karras", text(1), text(2), image, denoise=0.6)
    sigmas = comfy.samplers.KSampler(model, steps=4, device="cpu", sampler="euler", scheduler="karras", denoise=0.6).sigmas
    ours, _ = sample(nodes, unet, our_sampler("euler"), sigmas, latent=image)
    torch.testing.assert_close(theirs["samples"], ours["samples"], rtol=1e-5, atol=1e-5)


def test_same_seed_same_image_other_seed_other_image(nodes, unet_files):
    unet, sigmas = load(nodes), karras(14.6)
    runs = [sample(nodes, unet, our_sampler("euler_ancestral"), sigmas, seed=s)[0]["samples"] for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])


def test_image_to_image_adds_noise_of_the_first_sigma(nodes, unet_files):
    import comfy.samplers

    start = comfy.samplers.KSAMPLER(lambda model, x, sigmas, extra_args=None, callback=None, disable=None: x)
    image = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4)) * 2 - 1
    sigma_k = 2.5
    latent, _ = sample(nodes, load(nodes), start, torch.tensor([sigma_k, 1.0, 0.0]), latent={"samples": image})
    noise = torch.cat([torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(SEED + k)) for k in (0, 1)])
    torch.testing.assert_close(latent["samples"], image + sigma_k * noise)


def test_progress_bar_gets_a_preview_of_the_denoised_picture_every_step(nodes, unet_files):
    import comfy.utils

    calls = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total, preview)))
    try:
        sample(nodes, load(nodes), our_sampler("euler"), karras(14.6, steps=3))
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
    assert [(v, t) for v, t, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert all(p[0] == "JPEG" and p[1].size == (SIZE, SIZE) for _, _, p in calls)


def to_cell(t, cell):
    """What the grid should show for a (1, 3, h, w) pixel-space tensor: [0, 1], scaled up by nearest neighbour."""
    pixels = ((t[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0)
    factor = cell // pixels.shape[0]
    return (pixels * 255).round().div(255).repeat_interleave(factor, 0).repeat_interleave(factor, 1)


def grid_cell(grid, row, column, cell):
    y, x = PADDING + row * (cell + CAPTION + PADDING), PADDING + column * (cell + PADDING)
    return grid[0, y:y + cell, x:x + cell]


def test_trajectory_shows_the_steps_asked_for_and_ends_at_sample_denoised(nodes, unet_files):
    unet, sigmas, cell = load(nodes), karras(14.6, steps=6), 32
    latent, denoised = sample(nodes, unet, our_sampler("euler"), sigmas)
    grid, latent_t, denoised_t = run_node(
        nodes["DB_DenoisingTrajectory"], unet=unet, sampler=our_sampler("euler"), sigmas=sigmas,
        latent={"samples": torch.zeros(1, 3, SIZE, SIZE)}, seed=SEED, cfg=CFG, positive=text(1), negative=text(2),
        steps_shown=3, noisy_view="x0 + sigma * noise", cell_size=cell)
    assert torch.equal(latent_t["samples"], latent["samples"]) and torch.equal(denoised_t["samples"], denoised["samples"])
    assert grid.shape[1:] == (PADDING + 2 * (cell + CAPTION + PADDING), PADDING + 3 * (cell + PADDING), 3)
    torch.testing.assert_close(grid_cell(grid, 1, 2, cell), to_cell(denoised["samples"], cell), atol=1.5 / 255, rtol=0)
    start = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(SEED)) * sigmas[0]
    torch.testing.assert_close(grid_cell(grid, 0, 0, cell), to_cell(start, cell), atol=1.5 / 255, rtol=0)
    every, _, _ = run_node(
        nodes["DB_DenoisingTrajectory"], unet=unet, sampler=our_sampler("euler"), sigmas=sigmas,
        latent={"samples": torch.zeros(1, 3, SIZE, SIZE)}, seed=SEED, cfg=CFG, steps_shown=0,
        noisy_view="x / sqrt(1 + sigma^2)", cell_size=cell)
    assert every.shape[2] == PADDING + 6 * (cell + PADDING)


def test_add_noise_cells_are_the_image_plus_sigma_times_seeded_noise(nodes, comfy):
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(5))
    sigmas = torch.tensor([2.0, 0.5, 0.0])
    grid, = run_node(nodes["DB_AddNoise"], sigmas=sigmas, seed=SEED, image=image, noisy_view="x0 + sigma * noise",
                     cell_size=SIZE)
    noise = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(SEED))
    clean = image.permute(0, 3, 1, 2) * 2 - 1
    assert grid.shape[2] == PADDING + 3 * (SIZE + PADDING)
    for k, sigma in enumerate(sigmas.tolist()):
        torch.testing.assert_close(grid_cell(grid, 0, k, SIZE), to_cell(clean + sigma * noise, SIZE), atol=1.5 / 255, rtol=0)


def test_latent_and_image_are_the_affine_map_both_ways(nodes, comfy):
    image = torch.randint(0, 256, (2, 8, 12, 3), generator=torch.Generator().manual_seed(0)) / 255
    latent, = run_node(nodes["DB_ImageToLatent"], image=image)
    assert latent["samples"].shape == (2, 3, 8, 12)
    assert torch.equal(latent["samples"], image.permute(0, 3, 1, 2) * 2 - 1)
    back, = run_node(nodes["DB_LatentToImage"], latent=latent)
    torch.testing.assert_close(back, image, atol=1e-7, rtol=0)
    clipped, = run_node(nodes["DB_LatentToImage"], latent={"samples": torch.tensor([-3.0, 0.0, 3.0]).reshape(1, 3, 1, 1)})
    assert clipped.flatten().tolist() == [0.0, 0.5, 1.0]


def test_empty_latent_has_the_unets_shape(nodes, unet_files):
    pixels, = run_node(nodes["DB_EmptyLatent"], unet=load(nodes), width=24, height=16, batch_size=2)
    assert torch.equal(pixels["samples"], torch.zeros(2, 3, 16, 24))
    sd, = run_node(nodes["DB_EmptyLatent"], unet=load(nodes, "tiny_sd"), width=64, height=48, batch_size=1)
    assert torch.equal(sd["samples"], torch.zeros(1, 4, 6, 8))
    with pytest.raises(ValueError, match="width: 60 is not a multiple of 8"):
        run_node(nodes["DB_EmptyLatent"], unet=load(nodes, "tiny_sd"), width=60, height=48, batch_size=1)


def test_bad_inputs_fail_naming_the_input(nodes, unet_files):
    import comfy.samplers

    unet, sigmas = load(nodes), karras(14.6)
    with pytest.raises(ValueError, match=r"latent: shape \(1, 4, 16, 16\) does not fit a U-Net of 3-channel latents"):
        sample(nodes, unet, our_sampler("euler"), sigmas, latent={"samples": torch.zeros(1, 4, SIZE, SIZE)})
    with pytest.raises(ValueError, match="sigmas: empty"):
        sample(nodes, unet, our_sampler("euler"), torch.tensor([]))
    with pytest.raises(ValueError, match="sigmas: sampling needs at least 2 noise levels"):
        sample(nodes, unet, our_sampler("euler"), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="sampler: ComfyUI's CFG\\+\\+ samplers"):
        sample(nodes, unet, comfy.samplers.ksampler("euler_cfg_pp"), sigmas)
    with pytest.raises(ValueError, match="latent: shape .* is not a pixel-space latent"):
        run_node(nodes["DB_LatentToImage"], latent={"samples": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(ValueError, match="image: connect an image or a latent"):
        run_node(nodes["DB_AddNoise"], sigmas=sigmas, seed=0, noisy_view="x0 + sigma * noise", cell_size=0)


def test_comfyuis_model_patches_apply_to_the_native_model(nodes, unet_files):
    """ComfyUI's RescaleCFG patch on our MODEL == our Denoiser's own CFG rescale (Lin et al. 2024), run by hand."""
    import comfy.sample
    import comfy.samplers
    from comfy_extras.nodes_model_advanced import RescaleCFG

    from diffusion_blocks.pipeline import noisy_start, start_noise

    unet = load(nodes, "tiny_pixels_v")
    model, = run_node(nodes["DB_NoisePredictorAsModel"], unet=unet)
    patched, = RescaleCFG().patch(model, multiplier=0.7)
    sigmas, latent = karras(10.0), torch.zeros(1, 3, SIZE, SIZE)
    theirs = comfy.sample.sample_custom(patched, comfy.sample.prepare_noise(latent, SEED), CFG,
                                        comfy.samplers.ksampler("euler"), sigmas, text(1), text(2), latent, seed=SEED)
    denoiser = unet.model.denoiser
    cond, uncond = text(1)[0][0], text(2)[0][0]

    def rescaled(x, sigma, **extra):
        with torch.no_grad():
            return denoiser(x, sigma, cond, uncond, CFG, cfg_rescale=0.7)

    x = noisy_start(latent, start_noise(latent.shape, SEED), sigmas[0])
    ours = SAMPLERS["euler"](rescaled, x, sigmas, extra_args={"seed": SEED}, disable=True)
    plain, _ = sample(nodes, unet, our_sampler("euler"), sigmas)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(theirs, plain["samples"], atol=1e-3)  # the patch did change the result


def test_compare_at_equal_cost_draws_one_captioned_cell_per_sampler_and_schedule(nodes, unet_files):
    unet = load(nodes)
    inputs = dict(unet=unet, samplers="euler, heun, dpmpp_2s_ancestral", schedules="karras, exponential", calls=5,
                  latent={"samples": torch.zeros(1, 3, SIZE, SIZE)}, seed=SEED, cfg=CFG, cell_size=SIZE,
                  positive=text(1), negative=text(2))
    grid, = run_node(nodes["DB_CompareAtEqualCost"], **inputs)
    rows, columns = 3, 2
    assert grid.shape[1:] == (PADDING + rows * (SIZE + CAPTION + PADDING), PADDING + columns * (SIZE + PADDING), 3)
    again, = run_node(nodes["DB_CompareAtEqualCost"], **inputs)
    assert torch.equal(grid, again)
    with pytest.raises(ValueError, match="samplers: unknown name 'eulr'"):
        run_node(nodes["DB_CompareAtEqualCost"], **{**inputs, "samplers": "euler, eulr"})
    with pytest.raises(ValueError, match="samplers: 'dpm_adaptive' is adaptive"):
        run_node(nodes["DB_CompareAtEqualCost"], **{**inputs, "samplers": "dpm_adaptive"})
    with pytest.raises(ValueError, match="schedules: give at least one name"):
        run_node(nodes["DB_CompareAtEqualCost"], **{**inputs, "schedules": " , "})


def split(sigmas, step):
    from diffusion_blocks.nodes.sigma_nodes import SplitSigmasAtStep

    return run_node(SplitSigmasAtStep, sigmas=sigmas, step=step)


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde", "sa_solver", "comfyui dpmpp_2m_sde"])
def test_a_schedule_split_over_two_samples_gives_the_image_of_one(nodes, unet_files, sampler):
    import comfy.samplers

    kind, _, name = sampler.rpartition(" ")
    make = comfy.samplers.ksampler if kind == "comfyui" else our_sampler
    unet, sigmas = load(nodes, "tiny_pixels_v"), karras(14.6, steps=6)
    high, low = split(sigmas, 3)
    empty = {"samples": torch.zeros(2, 3, SIZE, SIZE)}
    whole, _ = sample(nodes, unet, make(name), sigmas, latent=empty)
    first, _ = sample(nodes, unet, make(name), high, latent=empty)
    second, denoised = sample(nodes, unet, make(name), low, latent=first, seed=SEED + 100)  # its own seed goes on
    torch.testing.assert_close(second["samples"], whole["samples"], rtol=0, atol=1e-6)
    assert "db_part_way" not in second and "db_part_way" not in denoised  # it went down to sigma 0
    fresh, _ = sample(nodes, unet, make(name), low, latent={"samples": first["samples"]})  # no record: image-to-image
    assert (fresh["samples"] - whole["samples"]).abs().max() > 1e-2


def test_comfyuis_nodes_take_a_part_way_latent_and_a_changed_one_no_longer_continues(nodes, unet_files):
    from nodes import LatentUpscaleBy

    from comfy_extras.nodes_latent import LatentMultiply

    unet, sigmas = load(nodes), karras(14.6, steps=6)
    high, low = split(sigmas, 3)
    first, _ = sample(nodes, unet, our_sampler("euler_ancestral"), high)
    bigger, = LatentUpscaleBy().upscale(first, "nearest-exact", 2.0)
    assert bigger["samples"].shape[-1] == 2 * SIZE
    larger = sample(nodes, unet, our_sampler("euler_ancestral"), low, latent=bigger)[0]["samples"]
    assert larger.shape[-1] == 2 * SIZE and torch.isfinite(larger).all()
    halved = LatentMultiply.execute(first, 0.5)[0]
    assert "db_part_way" in halved  # ComfyUI's node copied the record along with the changed samples
    again = sample(nodes, unet, our_sampler("euler_ancestral"), low, latent=halved)[0]["samples"]
    by_hand = sample(nodes, unet, our_sampler("euler_ancestral"), low, latent={"samples": halved["samples"]})[0]
    assert torch.equal(again, by_hand["samples"])  # treated as a new image-to-image start
