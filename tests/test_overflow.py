"""Overflow: no engine accepts a network whose fp32 output is not finite, configurations that
could overflow fp32 are refused, and the refusal's bound really bounds every value computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from typicalnets.certificate import FLOAT32_MAX, activation_bound, certified_interpolates, forward_with_scale
from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import CNN, FCN, DiagonalLinear, LeNet, Population
from typicalnets.priors import QuantizedUniform, Uniform
from typicalnets.samplers import GuessAndCheck, SequentialMonteCarlo, sample

X = torch.from_numpy(np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32))
Y = torch.where(X[:, 0] > 0, 1, -1).to(torch.int8)
TRAIN = Dataset(X, Y)


def test_a_network_whose_fp32_output_overflows_is_rejected_though_float64_is_right():
    arch = FCN(4, (1,), bias=False)
    prior = QuantizedUniform((-1e30, 0.0, 1e30))
    # f = w2 relu(w1 x): with w1 = (1e30, 0, 0, 0) and w2 = 1e30, f = 1e60 x_0 for x_0 > 0, inf in fp32.
    population = Population(
        arch, prior, {"w1": torch.tensor([[[1e30, 0.0, 0.0, 0.0]]]), "w2": torch.tensor([[[1e30]]])}
    )
    positive = X[:, 0] > 0
    x, y = X[positive], Y[positive]
    f64, _ = forward_with_scale(arch, {k: v.double() for k, v in population.params.items()}, x.double())
    assert bool((f64 > 0).all()) and torch.isfinite(f64).all()  # in float64 it classifies them all correctly
    f32, _ = forward_with_scale(arch, population.params, x)
    assert not torch.isfinite(f32).all()
    assert not certified_interpolates(population, x, y).any()


@pytest.mark.parametrize("engine", ["fast", "torch", "baseline"])
@pytest.mark.parametrize("prior", [QuantizedUniform((-1e38, 0.0, 1e38)), Uniform(1e37)])
def test_every_engine_refuses_a_prior_that_can_overflow(engine, prior):
    with pytest.raises(TypicalnetsError, match="float32's range"):
        GuessAndCheck(FCN(4, (8,)), prior, TRAIN, engine=engine)


def test_smc_refuses_inputs_that_can_overflow():
    with pytest.raises(TypicalnetsError, match="float32's range"):
        SequentialMonteCarlo(FCN(4, (8,)), Uniform(1e9), Dataset(X * 1e30, Y))


@pytest.mark.parametrize("engine", ["native", "torch", "baseline"])
def test_large_but_safe_levels_give_only_interpolators(engine):
    """Levels of 1e15 keep every value below 1e33: allowed, and whatever is accepted interpolates."""
    prior = QuantizedUniform((-1e15, 0.0, 1e15))
    arch = FCN(4, (8,))
    assert activation_bound(arch, prior, float(X.abs().max())) < FLOAT32_MAX * 2**-8
    gc = GuessAndCheck(arch, prior, Dataset(X[:8], Y[:8]), engine=engine)
    result = sample(gc, torch.Generator().manual_seed(0), 5, max_draws=400_000, progress=False)
    assert result.count > 0
    assert (result.population.errors(X[:8], Y[:8]) == 0).all()
    f, scale = forward_with_scale(arch, result.population.params, X[:8])
    assert torch.isfinite(f).all() and torch.isfinite(scale).all()


ARCHS = [
    FCN(3, (5,)),
    FCN(3, (4, 3), activation="tanh"),
    FCN(3, (4,), scaled=True),
    FCN(3, (6,), bias=False),
    CNN((2, 7), (3,), kernel_size=3),
    CNN((1, 8, 8), (2, 2), kernel_size=3, pool=(2, 1), scaled=True),
    DiagonalLinear(3, 3),
    LeNet.with_width_factor(0.25, (1, 16, 16)),
]


@given(
    arch=st.sampled_from(ARCHS),
    top=st.sampled_from([0.5, 1.0, 3.0]),
    scale=st.sampled_from([0.1, 1.0, 10.0]),
    seed=st.integers(0, 2**16),
)
def test_the_bound_bounds_every_output_and_scale(arch, top, scale, seed):
    """The invariant behind the refusal: |f| and sum |w h| + |b| never exceed ``activation_bound``,
    also for the extreme network with every parameter at the largest level."""
    prior = QuantizedUniform((-top, 0.0, top))
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(6, *arch.input_shape, generator=generator) * 2 - 1) * scale
    population = Population.draw(arch, prior, 16, generator)
    extreme = Population(arch, prior, {k: torch.full_like(v[:1], top) for k, v in population.params.items()})
    bound = activation_bound(arch, prior, float(x.abs().max()))
    for members in (population, extreme):
        params = {k: v.double() for k, v in members.params.items()}
        f, output_scale = forward_with_scale(arch, params, x.double())
        assert float(f.abs().max()) <= bound * (1 + 1e-12)
        assert float(output_scale.max()) <= bound * (1 + 1e-12)
