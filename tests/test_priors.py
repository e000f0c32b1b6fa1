"""Priors: reproducible draws, correct distributions, parsing and serialisation round trips."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare

from typicalnets.errors import TypicalnetsError
from typicalnets.priors import (
    Gaussian,
    QuantizedUniform,
    Uniform,
    parse_prior,
    prior_from_dict,
)

# Z-score bound for moment checks. Every check is run with a fixed seed, so the outcome is
# deterministic; the bound only matters for what a *correct* implementation could produce with
# another seed or RNG engine: |Z| > 5 has probability ~6e-7, so a failure means a real bias.
Z = 5.0

PRIORS = [
    QuantizedUniform.evenly_spaced(3),
    QuantizedUniform.evenly_spaced(5),
    QuantizedUniform((-2.0, 0.5, 3.0, 7.25)),
    Uniform(1.0),
    Uniform(0.3),
    Gaussian(1.0),
    Gaussian(2.5),
]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("prior", PRIORS, ids=lambda p: p.spec())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_seed_bit_identical(prior, dtype):
    a = prior.sample((7, 3, 5), gen(123), dtype=dtype)
    b = prior.sample((7, 3, 5), gen(123), dtype=dtype)
    assert a.shape == (7, 3, 5) and a.dtype == dtype
    assert torch.equal(a, b)
    c = prior.sample((7, 3, 5), gen(124), dtype=dtype)
    assert not torch.equal(a, c)  # 105 draws: a collision of all of them is (practically) impossible


@pytest.mark.parametrize("prior", PRIORS, ids=lambda p: p.spec())
def test_successive_draws_continue_the_stream(prior):
    """Two draws from one generator equal one draw of the combined size split in two."""
    g = gen(5)
    first, second = prior.sample((40,), g), prior.sample((40,), g)
    assert not torch.equal(first, second)
    again = gen(5)
    assert torch.equal(prior.sample((40,), again), first)
    assert torch.equal(prior.sample((40,), again), second)


# --------------------------------------------------------------------------- quantized


@pytest.mark.parametrize(
    "prior",
    [QuantizedUniform.evenly_spaced(3), QuantizedUniform.evenly_spaced(5), QuantizedUniform((-3.0, -1.0, 0.25, 2.0))],
    ids=lambda p: p.spec(),
)
def test_quantized_draws_lie_on_levels_with_uniform_frequencies(prior):
    n = 120_000
    x = prior.sample((n,), gen(2024), dtype=torch.float64)
    levels = prior.level_tensor(torch.float64)
    assert torch.isin(x, levels).all()
    counts = torch.stack([(x == level).sum() for level in levels]).double()
    assert int(counts.sum()) == n
    # Chi-square goodness of fit against 1/Q per level. With the fixed seed the statistic is
    # deterministic; the threshold p > 1e-4 is what an unbiased sampler fails with probability
    # 1e-4, while a level off by even 1% of its mass (1200 draws of 120k) gives p ~ 1e-20.
    _, p_value = chisquare(counts.numpy())
    assert p_value > 1e-4
    # And each level separately: binomial(n, 1/Q) within Z standard deviations.
    q = prior.q
    sd = math.sqrt(n * (1 / q) * (1 - 1 / q))
    assert (counts - n / q).abs().max().item() < Z * sd


def test_quantized_float32_levels_are_exact():
    prior = QuantizedUniform((-1.0, 0.0, 0.1, 1.0))
    x = prior.sample((1000,), gen(0), dtype=torch.float32)
    assert x.dtype == torch.float32
    assert torch.isin(x, torch.tensor([-1.0, 0.0, 0.1, 1.0], dtype=torch.float32)).all()


@pytest.mark.parametrize("q", [3, 5, 7, 9, 11, 101])
def test_evenly_spaced_includes_zero_and_is_symmetric(q):
    prior = QuantizedUniform.evenly_spaced(q)
    assert prior.q == q
    assert prior.levels[0] == -1.0 and prior.levels[-1] == 1.0
    assert list(prior.levels) == sorted(prior.levels)
    assert 0.0 in prior.levels
    assert prior.zero_prob == pytest.approx(1 / q)
    assert prior.levels == tuple(-v for v in reversed(prior.levels))
    # evenly spaced: consecutive gaps equal 2/(q-1)
    gaps = [b - a for a, b in zip(prior.levels, prior.levels[1:])]
    assert gaps == pytest.approx([2 / (q - 1)] * (q - 1), abs=1e-12)


def test_evenly_spaced_gaps_hold_for_many_q():
    """Gaps, endpoints and an exact zero level hold for every odd Q."""
    for q in range(3, 60, 2):
        levels = QuantizedUniform.evenly_spaced(q).levels
        assert len(levels) == q and levels[0] == -1.0 and levels[-1] == 1.0
        assert [b - a for a, b in zip(levels, levels[1:])] == pytest.approx([2 / (q - 1)] * (q - 1), abs=1e-12)
        assert levels[q // 2] == 0.0


@pytest.mark.parametrize("q", [2, 4, 6, 100, 1, 0, -3])
def test_evenly_spaced_needs_odd_q_at_least_3(q):
    with pytest.raises(TypicalnetsError):
        QuantizedUniform.evenly_spaced(q)


def test_quantized_explicit_levels():
    prior = QuantizedUniform((1.0, -1.0, 0.5))
    assert prior.levels == (-1.0, 0.5, 1.0)  # sorted
    assert prior.zero_prob == 0.0
    assert QuantizedUniform((0, 2)).zero_prob == 0.5
    for bad in [(1.0,), (), (1.0, 1.0), (0.0, float("nan")), (0.0, float("inf")), (-0.0, 0.0)]:
        with pytest.raises(TypicalnetsError):
            QuantizedUniform(bad)


# --------------------------------------------------------------------------- continuous


@pytest.mark.parametrize("a", [1.0, 0.25, 3.0])
def test_uniform_range_and_moments(a):
    n = 200_000
    x = Uniform(a).sample((n,), gen(7), dtype=torch.float64)
    assert x.min().item() >= -a and x.max().item() <= a
    assert x.min().item() < -0.99 * a and x.max().item() > 0.99 * a  # the range is actually used
    # mean: sd of the sample mean is sqrt(a^2/3 / n); variance: Var(X^2) = a^4/5 - a^4/9 = 4a^4/45,
    # so the sd of the (mean-0) sample second moment is sqrt(4 a^4 / 45 / n). Z = 5 sd each.
    assert abs(x.mean().item()) < Z * math.sqrt(a * a / 3 / n)
    assert abs(x.pow(2).mean().item() - a * a / 3) < Z * math.sqrt(4 * a**4 / 45 / n)
    # and no mass piles up anywhere: a 10-bin histogram is flat (chi-square, p > 1e-4 as above)
    hist = torch.histc(x, bins=10, min=-a, max=a)
    assert chisquare(hist.numpy()).pvalue > 1e-4


def test_uniform_float32_stays_in_range():
    x = Uniform(2.0).sample((100_000,), gen(3))
    assert x.dtype == torch.float32
    assert x.abs().max().item() <= 2.0


@pytest.mark.parametrize("sigma", [1.0, 0.1, 4.0])
def test_gaussian_moments(sigma):
    n = 200_000
    x = Gaussian(sigma).sample((n,), gen(11), dtype=torch.float64)
    # sd of the sample mean is sigma/sqrt(n); of the sample std about sigma/sqrt(2n). Z = 5 sd.
    assert abs(x.mean().item()) < Z * sigma / math.sqrt(n)
    assert abs(x.std().item() - sigma) < Z * sigma / math.sqrt(2 * n)
    # symmetric: the fraction of positive draws is 1/2 within 5 binomial sd
    assert abs((x > 0).double().mean().item() - 0.5) < Z * 0.5 / math.sqrt(n)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_continuous_priors_reject_bad_scale(bad):
    with pytest.raises(TypicalnetsError):
        Uniform(bad)
    with pytest.raises(TypicalnetsError):
        Gaussian(bad)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("quantized:3", QuantizedUniform((-1.0, 0.0, 1.0))),
        ("quantized:5", QuantizedUniform((-1.0, -0.5, 0.0, 0.5, 1.0))),
        ("quantized:3.0", QuantizedUniform((-1.0, 0.0, 1.0))),
        ("  Quantized:3 ", QuantizedUniform((-1.0, 0.0, 1.0))),
        ("quantized:-1,0,1", QuantizedUniform((-1.0, 0.0, 1.0))),
        ("quantized:1,-2", QuantizedUniform((-2.0, 1.0))),
        ("quantized:-0.5,0.25,2e1", QuantizedUniform((-0.5, 0.25, 20.0))),
        ("uniform:1.0", Uniform(1.0)),
        ("uniform:0.5", Uniform(0.5)),
        ("uniform", Uniform(1.0)),
        ("uniform:", Uniform(1.0)),
        ("gaussian:2", Gaussian(2.0)),
        ("GAUSSIAN:1e-3", Gaussian(1e-3)),
        ("gaussian", Gaussian(1.0)),
    ],
)
def test_parse_prior_good(text, expected):
    prior = parse_prior(text)
    assert prior == expected
    assert type(prior) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "laplace:1",
        "quantised:3",
        "normal:1",
        "quantized",
        "quantized:",
        "quantized:4",
        "quantized:2",
        "quantized:1",
        "quantized:0",
        "quantized:-3",
        "quantized:3.5",
        "quantized:abc",
        "quantized:3,",
        "quantized:1,1",
        "quantized:0,nan",
        "quantized:0,inf",
        "quantized:inf",
        "quantized:nan",
        "uniform:abc",
        "uniform:0",
        "uniform:-1",
        "uniform:nan",
        "uniform:inf",
        "uniform:1,2",
        "gaussian:x",
        "gaussian:0",
        "gaussian:-2",
        "gaussian:1,2",
        "gaussian:1:2",
    ],
)
def test_parse_prior_bad(text):
    with pytest.raises(TypicalnetsError):
        parse_prior(text)


# --------------------------------------------------------------------------- round trips

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
priors = st.one_of(
    st.integers(1, 20).map(lambda k: QuantizedUniform.evenly_spaced(2 * k + 1)),
    st.lists(finite, min_size=2, max_size=8, unique=True).map(lambda v: QuantizedUniform(tuple(v))),
    positive.map(Uniform),
    positive.map(Gaussian),
)


@given(priors)
def test_dict_and_spec_round_trip(prior):
    data = prior.to_dict()
    assert data["kind"] == prior.kind
    assert prior_from_dict(data) == prior
    assert prior_from_dict(json.loads(json.dumps(data))) == prior  # JSON-able, exactly
    assert parse_prior(prior.spec()) == prior
    assert parse_prior(prior.spec()).spec() == prior.spec()


def test_spec_strings():
    assert QuantizedUniform.evenly_spaced(3).spec() == "quantized:3"
    assert QuantizedUniform((-1, 0, 1)).spec() == "quantized:3"
    assert QuantizedUniform((-1, 1)).spec() == "quantized:-1.0,1.0"
    assert Uniform(0.5).spec() == "uniform:0.5"
    assert Gaussian(2.0).spec() == "gaussian:2.0"


@pytest.mark.parametrize("data", [{"kind": "laplace", "b": 1.0}, {}, {"kind": None}, {"levels": [0, 1]}])
def test_prior_from_dict_unknown_kind(data):
    with pytest.raises(TypicalnetsError):
        prior_from_dict(data)


def test_prior_from_dict_validates_values():
    for data in [{"kind": "uniform", "a": -1}, {"kind": "gaussian", "sigma": 0}, {"kind": "quantized", "levels": [1]}]:
        with pytest.raises(TypicalnetsError):
            prior_from_dict(data)


def test_priors_are_hashable_and_frozen():
    prior = QuantizedUniform.evenly_spaced(3)
    assert hash(prior) == hash(QuantizedUniform((-1, 0, 1)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        prior.levels = (0.0, 1.0)  # type: ignore[misc]
