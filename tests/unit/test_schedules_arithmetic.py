"""Sigma arithmetic: invariants of split / concat / flip / resample, parsing, and errors that name their input."""

import math

import pytest
import torch

from diffusion_blocks.schedules import (
    concat,
    flip,
    get_sigmas,
    insert_intermediate,
    loglinear_interpolate,
    multiply,
    parse_sigmas,
    resample,
    set_first,
    split_at_denoise,
    split_at_step,
)

SIGMAS = get_sigmas("karras", 10, sigma_min=0.0292, sigma_max=14.61)


def test_split_at_step_shares_the_boundary():
    for step in range(len(SIGMAS)):
        high, low = split_at_step(SIGMAS, step)
        assert len(high) == step + 1 and len(low) == len(SIGMAS) - step
        assert high[-1] == low[0] == SIGMAS[step]
        assert concat(high, low).equal(SIGMAS)


def test_split_at_denoise():
    high, low = split_at_denoise(SIGMAS, 0.3)  # round(10 * 0.3) = 3 low-noise steps
    assert low.equal(SIGMAS[-4:]) and high.equal(SIGMAS[:-3])
    high, low = split_at_denoise(SIGMAS, 1.0)
    assert high.equal(SIGMAS[:1]) and low.equal(SIGMAS)
    high, low = split_at_denoise(SIGMAS, 0.0)
    assert high.equal(SIGMAS) and low.equal(SIGMAS[-1:])


def test_concat_without_a_shared_joint_keeps_everything():
    joined = concat(torch.tensor([5.0, 3.0]), torch.tensor([2.0, 0.0]))
    assert joined.tolist() == [5.0, 3.0, 2.0, 0.0]


def test_flip_for_unsampling():
    flipped = flip(SIGMAS)
    assert flipped[0] == pytest.approx(1e-4)  # the final 0 cannot be a starting noise level
    assert flipped[1:].equal(SIGMAS[:-1].flip(0))
    assert flip(torch.tensor([3.0, 1.0])).tolist() == [1.0, 3.0]


def test_set_first_and_multiply():
    changed = set_first(SIGMAS, 20.0)
    assert changed[0] == 20.0 and changed[1:].equal(SIGMAS[1:]) and SIGMAS[0] != 20.0
    torch.testing.assert_close(multiply(SIGMAS, 0.5), SIGMAS * 0.5)


def test_resample_of_a_log_linear_schedule_is_exact():
    """Exponential schedules are linear in log sigma over the index, so resampling one gives another."""
    for steps in (3, 7, 25):
        resampled = resample(get_sigmas("exponential", 10, sigma_min=0.03, sigma_max=14.6), steps)
        expected = get_sigmas("exponential", steps, sigma_min=0.03, sigma_max=14.6)
        torch.testing.assert_close(resampled, expected, rtol=1e-6, atol=0)


def test_resample_invariants():
    same = resample(SIGMAS, 10)
    torch.testing.assert_close(same, SIGMAS, rtol=1e-6, atol=0)
    longer = resample(SIGMAS, 19)  # 10 non-zero levels -> 19: every other one is an original
    torch.testing.assert_close(longer[:-1:2], SIGMAS[:-1], rtol=1e-6, atol=0)
    assert longer[1] == pytest.approx(math.sqrt(SIGMAS[0] * SIGMAS[1]), rel=1e-6)
    no_zero = torch.tensor([8.0, 4.0, 2.0])
    torch.testing.assert_close(resample(no_zero, 4), torch.tensor([8.0, 2**2.5, 4.0, 2**1.5, 2.0]))


def test_loglinear_interpolate_geometric_sequences():
    torch.testing.assert_close(loglinear_interpolate([16.0, 1.0], 5), torch.tensor([16.0, 8.0, 4.0, 2.0, 1.0]))


def test_insert_intermediate():
    result = insert_intermediate(torch.tensor([4.0, 1.0, 0.0]), 1)
    assert result.tolist() == [4.0, 2.0, 1.0, 0.5, 0.0]  # geometric mean, then evenly towards 0
    longer = insert_intermediate(SIGMAS, 3)
    assert len(longer) == (len(SIGMAS) - 1) * 4 + 1
    assert longer[::4].equal(SIGMAS)


def test_parse_sigmas():
    expected = [14.6, 7.0, 3.5, 0.0]
    for text in ("14.6, 7.0, 3.5, 0", "14.6 7 3.5 0", "[14.6,7.0,\n3.5, 0]", " 14.6,7,3.5,0.0 ", "1.46e1, 7, 3.5, 0"):
        parsed = parse_sigmas(text)
        assert parsed.dtype == torch.float32 and parsed.tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    "call, names",
    [
        (lambda: parse_sigmas("14.6, seven, 0"), ["text", "seven"]),
        (lambda: parse_sigmas("1, 2, 0"), ["text", "descending"]),
        (lambda: parse_sigmas("2, 2, 0"), ["text", "descending"]),
        (lambda: parse_sigmas("1"), ["text"]),
        (lambda: parse_sigmas(""), ["text"]),
        (lambda: parse_sigmas("nan, 0"), ["text", "finite"]),
        (lambda: parse_sigmas("1, -1"), ["text", "negative"]),
        (lambda: parse_sigmas(None), ["text"]),
        (lambda: split_at_step(SIGMAS, 11), ["step"]),
        (lambda: split_at_step(SIGMAS, -1), ["step"]),
        (lambda: split_at_step(torch.zeros(2, 2), 0), ["sigmas"]),
        (lambda: split_at_denoise(SIGMAS, 1.2), ["denoise"]),
        (lambda: concat(SIGMAS, torch.tensor([])), ["low"]),
        (lambda: concat([float("inf")], SIGMAS), ["high"]),
        (lambda: flip(torch.tensor([1.0, -1.0])), ["sigmas"]),
        (lambda: set_first(SIGMAS, -2.0), ["value"]),
        (lambda: multiply(SIGMAS, 0.0), ["factor"]),
        (lambda: multiply(SIGMAS, "2"), ["factor"]),
        (lambda: resample(SIGMAS, 0), ["steps"]),
        (lambda: resample(SIGMAS.flip(0), 5), ["sigmas", "descending"]),
        (lambda: resample(torch.tensor([3.0, 0.0]), 5), ["sigmas"]),
        (lambda: insert_intermediate(SIGMAS, 0), ["count"]),
    ],
)
def test_errors_name_their_input(call, names):
    with pytest.raises(ValueError) as error:
        call()
    for name in names:
        assert name in str(error.value), str(error.value)
