"""Everything KSampler takes, in the pack's Sample, Denoising Trajectory and Predict Noise: CONDITIONING built by
ComfyUI's own nodes (Combine, areas, masks, strengths, timestep ranges, ControlNet and T2I-Adapter, GLIGEN boxes,
SDXL's per-entry pooled text and sizes), a LATENT's inpainting mask, an inpainting U-Net, and a native MODEL with its
patches.

Each case runs the pack's Sample on the pack's U-Net and ComfyUI's SamplerCustom core on ComfyUI's own UNetModel of the
same weights (harness.unet_twins), same sampler, schedule and seed: the latents agree (fp32, relative L2 within
TOLERANCE), and the feature changes SamplerCustom's latent by far more than that, so a dropped key fails. The pack's
promises hold on this route too: item k of a batch is the image of seed + k, and a split run equals one run.
"""
import dataclasses

import pytest
import torch
from harness.control_models import small_controlnet, small_t2i_adapter
from harness.nodes import run_comfy_node, run_node
from harness.unet_twins import SD1_LIKE, SDXL_LIKE, prompts, relative_l2, twins

TOLERANCE = 2e-3  # relative L2, fp32 (the bar)
CHANGED = 5 * TOLERANCE
SIZE, SEED, CFG = 16, 11, 4.0  # a 16 x 16 latent: 128 x 128 pixels


@pytest.fixture(scope="module")
def pair(comfy, one_thread):
    return twins()


@pytest.fixture(scope="module")
def sdxl_pair(comfy, one_thread):
    return twins(SDXL_LIKE)


def core(name):
    """ComfyUI's own node of that name (a V1 class in nodes.py in both ComfyUI versions), as a function."""
    import nodes

    node = nodes.NODE_CLASS_MAPPINGS[name]
    return lambda **inputs: getattr(node(), node.FUNCTION)(**inputs)


def sigmas(steps=4):
    from diffusion_blocks.schedules import get_sigmas

    return get_sigmas("karras", steps=steps, sigma_min=0.03, sigma_max=10.0)  # below sigma_max: noise = sigma * noise


def euler():
    from diffusion_blocks.nodes.sampler_nodes import make_sampler

    return make_sampler("euler")


def sampler_custom(model, positive, negative, latent, schedule=None, seed=SEED, cfg=CFG):
    """ComfyUI's SamplerCustom core on a MODEL: its guider, its cond batching, its inpainting."""
    import comfy.sample

    noise = comfy.sample.prepare_noise(latent["samples"], seed)
    with torch.no_grad():
        return comfy.sample.sample_custom(model, noise, cfg, euler(), sigmas() if schedule is None else schedule,
                                          positive, negative, latent["samples"], noise_mask=latent.get("noise_mask"),
                                          seed=seed)


def pack_sample(pack_nodes, model, positive, negative, latent, schedule=None, seed=SEED, node="DB_Sample", **more):
    outputs = run_node(pack_nodes[node], unet=model, sampler=euler(), sigmas=sigmas() if schedule is None else schedule,
                       latent=latent, seed=seed, cfg=CFG, positive=positive, negative=negative, **more)
    return outputs[0] if node == "DB_Sample" else outputs[1]


def empty(batch=1, channels=4):
    return {"samples": torch.zeros(batch, channels, SIZE, SIZE)}


def mask(top, left, height, width):
    """A (1, 128, 128) mask in pixels, 1 inside the rectangle."""
    m = torch.zeros(1, 8 * SIZE, 8 * SIZE)
    m[:, top:top + height, left:left + width] = 1.0
    return m


def controlled(positive, negative, control, strength=0.9, start=0.0, end=0.7):
    hint = torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(8))
    return core("ControlNetApplyAdvanced")(positive=positive, negative=negative, control_net=control(), image=hint,
                                           strength=strength, start_percent=start, end_percent=end)


def other_prompt():
    return prompts(seed=5)[0]


# (positive, negative) with the feature, and without it; each built from the base prompts by ComfyUI's own nodes
def cases():
    combine, area = core("ConditioningCombine"), core("ConditioningSetArea")
    percent, area_strength = core("ConditioningSetAreaPercentage"), core("ConditioningSetAreaStrength")
    set_mask, timesteps = core("ConditioningSetMask"), core("ConditioningSetTimestepRange")
    return {
        "Combine": lambda p, n: ((combine(conditioning_1=p, conditioning_2=other_prompt())[0], n), (p, n)),
        "area in pixels": lambda p, n: (
            (combine(conditioning_1=p, conditioning_2=area(conditioning=other_prompt(), width=64, height=64, x=64,
                                                           y=32, strength=1.0)[0])[0], n),
            (combine(conditioning_1=p, conditioning_2=other_prompt())[0], n)),
        "area in percent, strength": lambda p, n: (
            (combine(conditioning_1=p, conditioning_2=percent(conditioning=other_prompt(), width=0.5, height=0.75,
                                                              x=0.25, y=0.0, strength=1.7)[0])[0], n),
            (combine(conditioning_1=p, conditioning_2=other_prompt())[0], n)),
        "strength": lambda p, n: (  # an entry's weight among the others (alone, it is divided out)
            (combine(conditioning_1=area_strength(conditioning=p, strength=3.0)[0],
                     conditioning_2=other_prompt())[0], n),
            (combine(conditioning_1=p, conditioning_2=other_prompt())[0], n)),
        "mask with strength": lambda p, n: (
            (combine(conditioning_1=p, conditioning_2=set_mask(conditioning=other_prompt(), mask=mask(16, 40, 72, 48),
                                                               set_cond_area="default", strength=0.8)[0])[0], n),
            (combine(conditioning_1=p, conditioning_2=other_prompt())[0], n)),
        "mask bounds": lambda p, n: (
            (combine(conditioning_1=p, conditioning_2=set_mask(conditioning=other_prompt(), mask=mask(16, 40, 72, 48),
                                                               set_cond_area="mask bounds", strength=1.0)[0])[0], n),
            (combine(conditioning_1=p, conditioning_2=set_mask(conditioning=other_prompt(), mask=mask(16, 40, 72, 48),
                                                               set_cond_area="default", strength=1.0)[0])[0], n)),
        "timestep range": lambda p, n: (
            (combine(conditioning_1=timesteps(conditioning=p, start=0.0, end=0.5)[0],
                     conditioning_2=timesteps(conditioning=other_prompt(), start=0.5, end=1.0)[0])[0], n), (p, n)),
        "negative combined": lambda p, n: ((p, combine(conditioning_1=n, conditioning_2=other_prompt())[0]), (p, n)),
        "ControlNet": lambda p, n: (controlled(p, n, small_controlnet), (p, n)),
        "T2I-Adapter": lambda p, n: (controlled(p, n, small_t2i_adapter), (p, n)),
    }


CASES = ["Combine", "area in pixels", "area in percent, strength", "strength", "mask with strength", "mask bounds",
         "timestep range", "negative combined", "ControlNet", "T2I-Adapter"]  # cases()' names (ComfyUI loads later)


def test_every_case_is_run(comfy):
    assert list(cases()) == CASES


@pytest.mark.parametrize("name", CASES)
def test_conditioning_gives_sampler_customs_result_on_comfyuis_own_unet(name, pair, pack_nodes):
    ours, theirs = pair
    (positive, negative), (plain_positive, plain_negative) = cases()[name](*prompts())
    expected = sampler_custom(theirs, positive, negative, empty())
    got = pack_sample(pack_nodes, ours, positive, negative, empty())
    assert relative_l2(got["samples"], expected) <= TOLERANCE
    assert relative_l2(sampler_custom(theirs, plain_positive, plain_negative, empty()), expected) > CHANGED


def test_sdxl_entries_keep_their_own_pooled_text_and_sizes(sdxl_pair, pack_nodes):
    ours, theirs = sdxl_pair
    positive, negative = prompts(SDXL_LIKE)
    second = [[prompts(SDXL_LIKE, seed=5)[0][0][0],
               {"pooled_output": torch.randn(1, 1280, generator=torch.Generator().manual_seed(3)), "width": 512,
                "height": 384, "crop_w": 32, "target_width": 640, "target_height": 480}]]
    combined = core("ConditioningCombine")(conditioning_1=positive, conditioning_2=second)[0]
    expected = sampler_custom(theirs, combined, negative, empty())
    got = pack_sample(pack_nodes, ours, combined, negative, empty())
    assert relative_l2(got["samples"], expected) <= TOLERANCE
    same_text = [[second[0][0], {"pooled_output": positive[0][1]["pooled_output"]}]]
    plain = core("ConditioningCombine")(conditioning_1=positive, conditioning_2=same_text)[0]
    assert relative_l2(sampler_custom(theirs, plain, negative, empty()), expected) > CHANGED


def image_latent(batch=1):
    return {"samples": torch.randn(batch, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(21))}


def test_an_inpainting_mask_keeps_the_rest_of_the_latent_as_ksampler_does(pair, pack_nodes):
    ours, theirs = pair
    positive, negative = prompts()
    masked = core("SetLatentNoiseMask")(samples=image_latent(), mask=mask(32, 32, 64, 48))[0]
    expected = sampler_custom(theirs, positive, negative, masked)
    got = pack_sample(pack_nodes, ours, positive, negative, masked)
    assert relative_l2(got["samples"], expected) <= TOLERANCE
    assert relative_l2(sampler_custom(theirs, positive, negative, image_latent()), expected) > CHANGED
    assert "noise_mask" in got  # the LATENT keeps its mask, as KSampler's does


def freeu(model):
    from comfy_extras.nodes_freelunch import FreeU

    return run_comfy_node(FreeU, model=model, b1=1.3, b2=1.4, s1=0.9, s2=0.2)


@pytest.mark.parametrize("patched", [False, True], ids=["plain", "FreeU"])
def test_a_native_model_samples_as_sampler_custom_runs_it(patched, pair, pack_nodes):
    """ComfyUI's own UNetModel as the MODEL of Sample (and of Denoising Trajectory), a patch node on it or not."""
    _, theirs = pair
    model = freeu(theirs) if patched else theirs
    positive, negative = prompts()
    expected = sampler_custom(model, positive, negative, empty())
    assert relative_l2(pack_sample(pack_nodes, model, positive, negative, empty())["samples"], expected) <= TOLERANCE
    got = pack_sample(pack_nodes, model, positive, negative, empty(), node="DB_DenoisingTrajectory", steps_shown=2,
                      noisy_view="x0 + sigma * noise", cell_size=32)
    assert relative_l2(got["samples"], expected) <= TOLERANCE
    if patched:
        assert relative_l2(sampler_custom(theirs, positive, negative, empty()), expected) > CHANGED


def test_through_the_guider_item_k_of_a_batch_is_the_image_of_seed_plus_k(pair, pack_nodes):
    ours, _ = pair
    positive, negative = cases()["area in pixels"](*prompts())[0]
    batch = pack_sample(pack_nodes, ours, positive, negative, empty(batch=2))["samples"]
    for k in range(2):
        single = pack_sample(pack_nodes, ours, positive, negative, empty(), seed=SEED + k)["samples"]
        assert relative_l2(batch[k:k + 1], single) <= 1e-5


def test_through_the_guider_a_split_run_equals_one_run(pair, pack_nodes):
    from diffusion_blocks.nodes.sampler_nodes import make_sampler

    ours, theirs = pair
    positive, negative = cases()["timestep range"](*prompts())[0]
    schedule, ancestral = sigmas(steps=6), make_sampler("euler_ancestral")

    def run(latent, part):
        return run_node(pack_nodes["DB_Sample"], unet=theirs, sampler=ancestral, sigmas=part, latent=latent,
                        seed=SEED, cfg=CFG, positive=positive, negative=negative)[0]

    whole = run(empty(), schedule)
    halves = run(run(empty(), schedule[:4]), schedule[3:])
    assert relative_l2(halves["samples"], whole["samples"]) <= 1e-5


def test_a_native_model_needs_its_conditioning_connected(pair, pack_nodes):
    _, theirs = pair
    with pytest.raises(ValueError, match="negative: nothing connected.*ConditioningZeroOut"):
        run_node(pack_nodes["DB_Sample"], unet=theirs, sampler=euler(), sigmas=sigmas(), latent=empty(), seed=SEED,
                 cfg=CFG, positive=prompts()[0])


def test_the_packs_own_guidance_refuses_what_it_cannot_honour_by_name(pair):
    """The guard behind every node's own route: more than one entry, or a key beyond text, never dropped."""
    from diffusion_blocks.nodes.wires import text_condition

    denoiser = pair[0].model.denoiser
    positive = cases()["area in pixels"](*prompts())[0][0]
    with pytest.raises(ValueError, match="positive: holds 2 entries"):
        text_condition(positive, denoiser, (128, 128))
    with pytest.raises(ValueError, match="negative: carries area, set_area_to_bounds, strength"):
        text_condition(positive[1:], denoiser, (128, 128), negative=True)


def test_predict_noise_through_the_guider_sees_what_one_euler_step_to_zero_lands_on(pair, pack_nodes):
    """Unguided, an Euler step from sigma to 0 lands on the denoised estimate: x + (0 - sigma)(x - D) / sigma = D."""
    import comfy.sample

    from diffusion_blocks.nodes.unet_nodes import look_at

    _, theirs = pair
    positive, sigma, latent = cases()["mask with strength"](*prompts())[0][0], 2.0, image_latent()
    seen = look_at(theirs, latent, sigma, SEED, positive)
    latent_format = theirs.get_model_object("latent_format")
    expected = sampler_custom(theirs, positive, positive, latent, schedule=torch.tensor([sigma, 0.0]), cfg=1.0)
    assert relative_l2(latent_format.process_out(seen.denoised), expected) <= TOLERANCE
    noise = comfy.sample.prepare_noise(latent["samples"], SEED)
    torch.testing.assert_close(seen.noisy, latent_format.process_in(latent["samples"]) + sigma * noise)
    torch.testing.assert_close(seen.noise, (seen.noisy - seen.denoised) / sigma)
    plain = sampler_custom(theirs, prompts()[0], prompts()[0], latent, schedule=torch.tensor([sigma, 0.0]), cfg=1.0)
    assert relative_l2(plain, expected) > CHANGED
    grid, = run_node(pack_nodes["DB_PredictNoise"], unet=theirs, latent=latent, sigma=sigma, seed=SEED,
                     positive=positive)
    assert grid.ndim == 4 and grid.shape[-1] == 3


INPAINTING = {"SD1.x": dataclasses.replace(SD1_LIKE, in_channels=9),  # the latent, the mask, the masked image
              "SDXL": dataclasses.replace(SDXL_LIKE, in_channels=9)}


@pytest.mark.parametrize("layout", list(INPAINTING))
def test_an_inpainting_unet_takes_inpaint_model_conditionings_mask_and_image(layout, comfy, one_thread, pack_nodes,
                                                                               tmp_path):
    """A 9-channel U-Net through the pack's loader: the concat_latent_image / concat_mask that InpaintModelConditioning
    sets on each entry reach it as in ComfyUI's own inpainting model."""
    import folder_paths
    import node_helpers

    from diffusion_blocks.networks.prediction import TrainingSpec
    from diffusion_blocks.networks.unet_loading import save_unet
    from harness.unet_twins import random_network

    config = INPAINTING[layout]
    _, theirs = twins(config, seed=3)
    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    name = f"tiny_inpainting_{layout}.safetensors"  # one name per test: every folder added stays registered
    save_unet(random_network(config, seed=3), folder / name, TrainingSpec(prediction="v"))
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    loaded, = run_node(pack_nodes["DB_LoadUNet"], unet_name=f"diffusion_models/{name}",
                       weight_dtype="fp32", prediction="auto", zero_snr="auto")
    empty_latent, = run_node(pack_nodes["DB_EmptyLatent"], unet=loaded, width=8 * SIZE, height=8 * SIZE, batch_size=1)
    assert empty_latent["samples"].shape == (1, 4, SIZE, SIZE)

    hole = mask(32, 32, 64, 48)
    image = image_latent()["samples"]  # what VAEEncode of the masked picture gives
    inpaint = {"concat_latent_image": image * (1 - torch.nn.functional.interpolate(hole[None], size=SIZE)),
               "concat_mask": hole}
    positive, negative = (node_helpers.conditioning_set_values(c, inpaint) for c in prompts(config))
    latent = {"samples": image, "noise_mask": hole}
    expected = sampler_custom(theirs, positive, negative, latent)
    assert relative_l2(pack_sample(pack_nodes, loaded, positive, negative, latent)["samples"], expected) <= TOLERANCE
    no_image = [node_helpers.conditioning_set_values(c, {"concat_mask": hole}) for c in prompts(config)]
    assert relative_l2(sampler_custom(theirs, *no_image, latent), expected) > CHANGED
    grid, = run_node(pack_nodes["DB_CompareAtEqualCost"], unet=loaded, samplers="euler", schedules="karras", calls=2,
                     latent=latent, seed=SEED, cfg=CFG, positive=positive, negative=negative, cell_size=32)
    assert grid.ndim == 4 and grid.shape[-1] == 3


def small_gligen(reference):
    """A GLIGEN model for a twins' layout, as ComfyUI's GLIGENLoader gives it: one gated self-attention per
    transformer of ComfyUI's own U-Net (in its order), a position net for 768-wide text; random, gates open."""
    import comfy.gligen
    import comfy.ldm.modules.attention
    import comfy.model_patcher
    from harness.control_models import randomised

    width, state = 768, {}
    for name, module in reference.model.diffusion_model.named_modules():
        if isinstance(module, comfy.ldm.modules.attention.BasicTransformerBlock):
            dim = module.attn1.to_q.in_features
            gated = randomised(comfy.gligen.GatedSelfAttentionDense(dim, width, 8, dim // 8), seed=len(state))
            torch.nn.init.ones_(gated.alpha_attn), torch.nn.init.ones_(gated.alpha_dense)
            prefix = name.split(".transformer_blocks")[0]
            state.update({f"{prefix}.fuser.{key}": value for key, value in gated.state_dict().items()})
    position = randomised(comfy.gligen.PositionNet(width, width), seed=99, scale=0.2)
    state.update({f"position_net.{key}": value for key, value in position.state_dict().items()})
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(comfy.gligen.load_gligen(state), load_device=cpu, offload_device=cpu)


def test_gligen_boxes_reach_the_pack_unet_as_comfyuis(pair, pack_nodes):
    """GLIGENTextBoxApply's `gligen` entry: ComfyUI's guider runs it as a middle_patch at each transformer, by index."""
    ours, theirs = pair
    positive, negative = prompts()
    pooled = torch.randn(1, 768, generator=torch.Generator().manual_seed(4))
    box = ("position", small_gligen(theirs), [(pooled, 64 // 8, 48 // 8, 16 // 8, 32 // 8)])  # as the node sets it
    boxed = [[positive[0][0], {**positive[0][1], "gligen": box}]]
    expected = sampler_custom(theirs, boxed, negative, empty())
    assert relative_l2(pack_sample(pack_nodes, ours, boxed, negative, empty())["samples"], expected) <= TOLERANCE
    assert relative_l2(sampler_custom(theirs, positive, negative, empty()), expected) > CHANGED


def test_on_a_native_model_progress_shows_previews_and_stop_ends_the_run(pair, pack_nodes):
    import comfy.model_management
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    _, theirs = pair
    calls, previous = [], comfy.utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview, node_id=None):
        calls.append((value, total, preview))
        if value == 2:  # the Stop button: the server's hook raises once an interrupt is asked for
            comfy.model_management.interrupt_current_processing(True)
            comfy.model_management.throw_exception_if_processing_interrupted()

    method = args.preview_method
    args.preview_method = LatentPreviewMethod.Latent2RGB  # the server's --preview-method (none by default)
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            pack_sample(pack_nodes, theirs, *prompts(), empty())
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        comfy.model_management.interrupt_current_processing(False)
        args.preview_method = method
    assert [(v, t) for v, t, _ in calls] == [(1, 4), (2, 4)]
    assert all(p[0] == "JPEG" and p[1].size == (SIZE, SIZE) for _, _, p in calls)


def test_what_the_pack_honours_itself_keeps_its_own_route(pair):
    """One entry of text on the pack's U-Net, a LoRA at most, runs the pack's own guidance (its fast path); each thing
    only the host honours sends the run through ComfyUI's guider."""
    from diffusion_blocks.nodes.wires import needs_host

    ours, theirs = pair
    positive, negative = prompts()
    assert needs_host(ours, empty(), positive, negative) is None
    assert needs_host(ours, empty(), None, None) is None
    assert needs_host(theirs, empty(), positive, negative) == "a native MODEL"
    assert "model patches" in needs_host(freeu(ours), empty(), positive, negative)
    assert needs_host(ours, {**empty(), "noise_mask": mask(0, 0, 8, 8)}, positive, negative) == "an inpainting mask"
    combined = cases()["Combine"](positive, negative)[0][0]
    assert "2 entries" in needs_host(ours, empty(), combined, negative)


def test_compare_at_equal_cost_runs_each_cell_as_sample_does_when_the_conditioning_needs_it(pair, pack_nodes):
    from diffusion_blocks.nodes.compare_nodes import own_guidance
    from diffusion_blocks.pipeline.equal_cost import compare_at_equal_cost
    from diffusion_blocks.samplers import SAMPLERS
    from diffusion_blocks.schedules import get_sigmas

    ours, _ = pair
    positive, negative = cases()["area in percent, strength"](*prompts())[0]
    denoiser = ours.model.denoiser
    [(cell, samples)] = compare_at_equal_cost(denoiser, {"euler": SAMPLERS["euler"]}, ["karras"], 3,
                                              empty()["samples"], SEED,
                                              **own_guidance(ours, empty(), SEED, CFG, positive, negative))
    schedule = get_sigmas("karras", cell.steps, model=denoiser.schedule)  # from sigma_max: Sample's, not KSampler's
    expected = pack_sample(pack_nodes, ours, positive, negative, empty(), schedule=schedule)["samples"]  # start noise
    assert relative_l2(samples, expected) <= 1e-6
    grid, = run_node(pack_nodes["DB_CompareAtEqualCost"], unet=ours, samplers="euler", schedules="karras", calls=3,
                     latent=empty(), seed=SEED, cfg=CFG, positive=positive, negative=negative, cell_size=32)
    plain, = run_node(pack_nodes["DB_CompareAtEqualCost"], unet=ours, samplers="euler", schedules="karras", calls=3,
                      latent=empty(), seed=SEED, cfg=CFG, positive=prompts()[0], negative=negative, cell_size=32)
    assert grid.shape == plain.shape and not torch.equal(grid, plain)


def test_fit_schedule_fits_through_the_guider_when_the_conditioning_needs_it(pair, pack_nodes, comfy, tmp_path):
    """On the pack's U-Net with combined conditioning, Fit Schedule fits through ComfyUI's guider: the fit of a native
    MODEL of the same weights. Its memo is keyed by all the conditioning carries: a second entry is another fit."""
    import folder_paths

    ours, theirs = pair
    positive, negative = cases()["area in percent, strength"](*prompts())[0]
    user = folder_paths.get_user_directory()
    folder_paths.set_user_directory(str(tmp_path))

    def fit(conditioning=positive, latent=None, **model_input):
        return run_node(pack_nodes["DB_FitSchedule"], **model_input, sampler="euler", calls=3, positive=conditioning,
                        negative=negative, cfg=CFG, latent=latent or empty(), seed=SEED, seeds=1, grid_size=6,
                        teacher_substeps=1)[0]
    try:
        torch.testing.assert_close(fit(unet=ours), fit(model=theirs))
        saved = set((tmp_path / "diffusion_blocks" / "fitted_schedules").glob("*.json"))
        fit(conditioning=prompts()[0], model=theirs)  # the first entry alone: not the combined fit's memo
        assert len(set((tmp_path / "diffusion_blocks" / "fitted_schedules").glob("*.json")) - saved) == 1
        with pytest.raises(ValueError, match="latent: carries an inpainting mask"):
            fit(unet=ours, latent={**empty(), "noise_mask": mask(0, 0, 8, 8)})
    finally:
        folder_paths.set_user_directory(user)
