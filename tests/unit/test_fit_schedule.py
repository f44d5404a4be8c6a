"""Fitted schedules (OSS, Pei et al. 2025) on a Gaussian mixture, whose ideal denoiser is exact."""
import json
from pathlib import Path

import pytest
import torch

from diffusion_blocks.devtools.gmm import GaussianMixture, reference_solution
from diffusion_blocks.pipeline.fit_schedule import (fit_schedule, fit_schedules, log_grid, parse_sampler_label, rmse,
                                                    sampler_label)
from diffusion_blocks.pipeline.fit_store import load, record, save, sigmas_of, weights_hash
from diffusion_blocks.samplers import SAMPLERS
from diffusion_blocks.schedules import get_sigmas

SIGMA_MIN, SIGMA_MAX = 0.01, 80.0
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "diffusion_blocks_shapes.fitted.json"
BUNDLED = ROOT / "models" / "diffusion_blocks_shapes.safetensors"


@pytest.fixture(scope="module")
def gmm():
    return GaussianMixture(dim=8, components=4, seed=0)


@pytest.fixture(scope="module")
def noise():
    return torch.randn(32, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def run(sampler, gmm, noise, sigmas, **options):
    return SAMPLERS[sampler](gmm, noise * SIGMA_MAX, torch.as_tensor(sigmas), disable=True, **options)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "uni_pc"])
def test_two_steps_equal_brute_force(sampler, gmm, noise):
    # with one intermediate level the recursion is exhaustive: its choice must be the best of all grid nodes
    size = 9
    grid = log_grid(SIGMA_MIN, SIGMA_MAX, size)
    teacher = run(sampler, gmm, noise, torch.cat([grid, torch.zeros(1)]))  # teacher_substeps=1: the grid itself
    errors = {j: rmse(run(sampler, gmm, noise, torch.stack([grid[0], grid[j], torch.tensor(0.0)])), teacher)
              for j in range(1, size)}
    best = min(errors, key=errors.get)
    fit = fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, sampler, 2, grid_size=size, teacher_substeps=1)
    assert fit.sigmas.tolist() == [grid[0].item(), grid[best].item(), 0.0]
    assert fit.error == pytest.approx(errors[best], rel=1e-9)


@pytest.mark.parametrize("sampler,options", [("dpmpp_2m", {}), ("uni_pc", {}), ("uni_pc_bh2", {"order": 1})])
def test_reported_error_is_the_samplers_own_on_the_fitted_schedule(sampler, options, gmm, noise):
    # the DP replays multistep history and UniPC's lower final orders; the final error it reports must be what the
    # real sampler, with the options fitted for, gives on the returned schedule, against the teacher (the sampler
    # with those options on the grid, substeps 1)
    grid = log_grid(SIGMA_MIN, SIGMA_MAX, 10)
    teacher = run(sampler, gmm, noise, torch.cat([grid, torch.zeros(1)]), **options)
    fit = fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, sampler, 5, grid_size=10, teacher_substeps=1,
                       sampler_options=options)
    assert fit.steps == 5 and len(fit.sigmas) == 6 and fit.sigmas[0] == grid[0] and fit.sigmas[-1] == 0
    assert all(float(s) in grid.tolist() for s in fit.sigmas[:-1])
    assert fit.error == pytest.approx(rmse(run(sampler, gmm, noise, fit.sigmas, **options), teacher), rel=1e-9)
    assert fit.options == options
    if options:  # they matter: without them the same schedule lands elsewhere
        assert rmse(run(sampler, gmm, noise, fit.sigmas), teacher) != pytest.approx(fit.error, rel=1e-3)


def test_sampler_options_are_checked_and_written_as_labels():
    with pytest.raises(ValueError, match="unknown option.*orderr.*for sampler 'uni_pc'.*valid: .*order"):
        fit_schedule(lambda x, sigma: x, torch.zeros(1, 2), SIGMA_MIN, SIGMA_MAX, "uni_pc", 4,
                     sampler_options={"orderr": 1})
    assert sampler_label("uni_pc_bh2", {"order": 1}) == "uni_pc_bh2 order=1"
    assert parse_sampler_label("uni_pc_bh2 order=1") == ("uni_pc_bh2", {"order": 1})
    assert parse_sampler_label("dpmpp_2m") == ("dpmpp_2m", {})
    assert parse_sampler_label("x r=0.5") == ("x", {"r": 0.5})
    with pytest.raises(ValueError, match="option=number after the name"):
        parse_sampler_label("uni_pc_bh2 order")


def test_choose_picks_among_the_best_paths_to_each_last_level(gmm, noise):
    # the final choice sees one finish per possible last level, each the sampler's own result on its schedule; the
    # default keeps the closest to the teacher, a caller's choose may keep another
    size, steps = 8, 3
    grid = log_grid(SIGMA_MIN, SIGMA_MAX, size)
    teacher = run("dpmpp_2m", gmm, noise, torch.cat([grid, torch.zeros(1)]))
    seen = []

    def highest_end(finishes):
        seen.extend(finishes)
        return max(range(len(finishes)), key=lambda i: float(finishes[i].sigmas[-2]))

    options = {"grid_size": size, "teacher_substeps": 1}
    chosen = fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, "dpmpp_2m", steps, choose=highest_end, **options)
    closest = fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, "dpmpp_2m", steps, **options)
    last = [float(f.sigmas[-2]) for f in seen]
    assert sorted(last, reverse=True) == grid[steps - 1:].tolist()  # every reachable last level, once
    for finish in seen:
        assert torch.equal(finish.final, run("dpmpp_2m", gmm, noise, finish.sigmas))
        assert finish.error == pytest.approx(rmse(finish.final, teacher), rel=1e-12)
    assert float(chosen.sigmas[-2]) == max(last) and chosen.error == seen[last.index(max(last))].error
    nearest = min(seen, key=lambda f: f.error)
    assert torch.equal(closest.sigmas, nearest.sigmas) and closest.error == nearest.error
    assert float(chosen.sigmas[-2]) != float(closest.sigmas[-2])  # the choice changed the fit


def recorded_run(sampler, gmm, noise, sigmas):
    """(what the sampler hands the model at each call, its result)."""
    inputs = []

    def model(x, sigma, **extra):
        inputs.append(x)
        return gmm(x, sigma)

    return inputs, SAMPLERS[sampler](model, noise * SIGMA_MAX, torch.as_tensor(sigmas), disable=True)


@pytest.mark.parametrize("sampler,steps", [("dpmpp_2m", 4), ("uni_pc", 4), ("uni_pc", 5)])
def test_dp_equals_the_oss_recursion_on_whole_runs(sampler, steps, gmm, noise):
    # the recursion written with whole K-step runs of the sampler, each path completed by the LAST grid nodes (not
    # the next ones the fit replays with): the state at a node must not depend on how the schedule goes on, only on
    # its length (UniPC lowers its order near the end), so both must choose the same schedule
    size = 8
    grid = log_grid(SIGMA_MIN, SIGMA_MAX, size)
    teacher_states, teacher_final = recorded_run(sampler, gmm, noise, torch.cat([grid, torch.zeros(1)]))
    best = {0: (0,)}
    for level in range(1, steps):
        completion = list(range(size - (steps - 1 - level), size))
        chosen = {}
        for j in range(level, size - steps + level + 1):
            candidates = []
            for k, path in best.items():
                if k < j:
                    states, _ = recorded_run(sampler, gmm, noise,
                                             torch.cat([grid[list(path) + [j] + completion], torch.zeros(1)]))
                    candidates.append((rmse(states[level], teacher_states[j]), path + (j,)))
            chosen[j] = min(candidates)[1]
        best = chosen
    finals = [(rmse(recorded_run(sampler, gmm, noise, torch.cat([grid[list(p)], torch.zeros(1)]))[1], teacher_final), p)
              for p in best.values()]
    error, path = min(finals)
    fit = fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, sampler, steps, grid_size=size, teacher_substeps=1)
    assert fit.sigmas.tolist() == torch.cat([grid[list(path)], torch.zeros(1)]).tolist()
    assert fit.error == pytest.approx(error, rel=1e-9)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "uni_pc"])
def test_fitted_beats_karras_and_exponential_against_the_exact_flow(sampler, gmm, noise):
    exact = reference_solution(gmm, noise * SIGMA_MAX, SIGMA_MAX, 1e-4, steps=1500)
    fits = fit_schedules(gmm, noise, SIGMA_MIN, SIGMA_MAX, sampler, [4, 6], grid_size=20, teacher_substeps=8)
    for fit in fits:
        fitted = rmse(run(sampler, gmm, noise, fit.sigmas), exact)
        for name in ("karras", "exponential"):
            fixed = get_sigmas(name, fit.steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX).double()
            assert fitted < rmse(run(sampler, gmm, noise, fixed), exact), (fit.calls, name)


def test_progress_reaches_total_and_stop_raises(gmm, noise):
    seen = []
    fit_schedules(gmm, noise, SIGMA_MIN, SIGMA_MAX, "dpmpp_2m", [3, 4], grid_size=8, teacher_substeps=2,
                  progress=lambda done, total: seen.append((done, total)))
    total = seen[0][1]
    assert [done for done, _ in seen] == list(range(1, total + 1)) and {t for _, t in seen} == {total}

    class Interrupted(Exception):
        pass

    def stop(done, total):
        if done == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, "dpmpp_2m", 4, grid_size=8, progress=stop)


def test_budget_that_a_sampler_cannot_spend_whole_is_said(gmm, noise):
    fit = fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, "heun", 4, grid_size=6, teacher_substeps=1)
    assert (fit.steps, fit.calls) == (2, 3)  # heun: 2 calls a step, 1 for the last step to 0
    assert "1 of the budget of 4 unused" in fit.note


def test_refusals_name_the_input(gmm, noise):
    with pytest.raises(ValueError, match="sampler: 'euler_ancestral' adds random noise"):
        fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, "euler_ancestral", 4)
    with pytest.raises(ValueError, match="sampler: 'dpm_adaptive' chooses its own steps"):
        fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, "dpm_adaptive", 4)
    with pytest.raises(ValueError, match="grid_size: 5 noise levels cannot hold 8 steps"):
        fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, "euler", 8, grid_size=5)
    with pytest.raises(ValueError, match="sigma_min"):
        fit_schedule(gmm, noise, 2.0, 1.0, "euler", 4)


def test_weights_hash_follows_the_bytes():
    first, second = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    second.load_state_dict(first.state_dict())
    assert weights_hash(first) == weights_hash(second)
    third = torch.nn.Linear(3, 2)
    third.load_state_dict(first.state_dict())
    with torch.no_grad():
        third.bias[0] = torch.nextafter(third.bias[0], torch.tensor(1.0))
    assert weights_hash(third) != weights_hash(first)


def test_records_round_trip_and_damage_is_named(gmm, noise, tmp_path):
    fit = fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, "euler", 3, grid_size=6, teacher_substeps=1)
    with_order = fit_schedule(gmm, noise, SIGMA_MIN, SIGMA_MAX, "lms", 3, grid_size=6, teacher_substeps=1,
                              sampler_options={"order": 1})  # lms at order 1 is euler: the same fit
    path = save(tmp_path / "a" / "fit.json", record("abc", "gmm", {"grid_size": 6}, [fit, with_order]))
    assert torch.equal(sigmas_of(load(path), "euler", 3), fit.sigmas)
    assert torch.equal(sigmas_of(load(path), "lms", 3, {"order": 1}), with_order.sigmas)
    assert torch.equal(with_order.sigmas, fit.sigmas)
    with pytest.raises(ValueError, match="no fit for lms at 3 calls in this record; it has euler at 3 calls, "
                                         "lms order=1 at 3 calls"):
        sigmas_of(load(path), "lms", 3)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="'fit.json' is damaged"):
        load(path)
    data = record("abc", "gmm", {}, [fit])
    data["fits"][0]["sigmas"] = [1.0, 2.0, 0.0]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="fit 0: sigmas must be strictly descending"):
        load(path)
    with pytest.raises(ValueError, match="'gone.json' is gone"):
        load(tmp_path / "gone.json")


def test_shipped_fits_belong_to_the_bundled_model():
    from diffusion_blocks.networks import load_unet
    from diffusion_blocks.networks.prediction import Denoiser

    data = load(SHIPPED)
    unet = load_unet(str(BUNDLED))
    assert data["model_hash"] == weights_hash(unet)
    sigma_max = float(Denoiser(unet).schedule.sigma_max)
    assert {(sampler_label(f["sampler"], f.get("options", {})), f["budget"]) for f in data["fits"]} == {
        (s, c) for s in ("dpmpp_2m", "uni_pc", "lms", "uni_pc_bh2 order=1") for c in (4, 6, 8, 10)}
    for fit in data["fits"]:
        sigmas = sigmas_of(data, fit["sampler"], fit["budget"], fit.get("options"))
        assert len(sigmas) == fit["steps"] + 1 == fit["budget"] + 1
        assert sigmas[0].item() == pytest.approx(sigma_max, rel=1e-6)
    assert "Pei et al. 2025" in data["paper"]
    assert data["captions"] and data["caption_seed"] != 20261126  # not the held-out benchmark's seed
