"""Sequential Monte Carlo draws the same posterior as Guess & Check and estimates its volume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.stats import chisquare, ks_2samp
from test_gc import Q3, enumerate_population, function_ids

from typicalnets import native
from typicalnets.certificate import TIE, certified_interpolates
from typicalnets.data import Dataset, boolean_cube
from typicalnets.nets import FCN, DiagonalLinear, Population
from typicalnets.nets.population import split_flat
from typicalnets.priors import Gaussian, Uniform
from typicalnets.samplers import GuessAndCheck, sample
from typicalnets.samplers import smc as smc_module
from typicalnets.samplers.smc import FCNCache, SequentialMonteCarlo, next_temperature, sample_smc
from typicalnets.teachers import make_task, narrow_teacher


@pytest.fixture(scope="module")
def tiny():
    arch = FCN(in_dim=2, hidden=(2,), activation="relu", bias=True)
    cube = boolean_cube(2)
    train = Dataset(cube[:3], torch.tensor([1, -1, 1], dtype=torch.int8))
    everyone = enumerate_population(arch, Q3)
    interpolates = everyone.mistakes(train.x, train.y) == 0
    ids = function_ids(everyone[interpolates].predict(cube))
    values, counts = np.unique(ids, return_counts=True)
    return (
        arch,
        cube,
        train,
        interpolates.double().mean().item(),
        dict(zip(values.tolist(), (counts / counts.sum()).tolist())),
    )


def test_smc_matches_exact_posterior_and_volume(tiny):
    arch, cube, train, exact_rate, posterior = tiny
    result = sample_smc(
        SequentialMonteCarlo(arch, Q3, train, particles=500, min_moves=10, refresh=20, target_unique=0.9),
        torch.Generator().manual_seed(0),
        4000,
        repeats=8,
        progress=False,
    )
    assert result.count == 4000 and result.stop_reason == "count"
    assert (result.population.mistakes(train.x, train.y) == 0).all()
    ids = function_ids(result.population.predict(cube))
    keys = sorted(posterior)
    observed = np.array([(ids == k).sum() for k in keys], dtype=float)
    assert observed.sum() == len(ids), "SMC returned a function that no interpolating setting computes"
    expected = np.array([posterior[k] for k in keys]) * len(ids)
    # Tolerance: chi-square at the 1% level (fixed seed). Particles of one run are correlated, so
    # the moves run until 90% of them are distinct and every parameter was re-drawn 20 times on
    # average (3 was measurably too few here: the survival at the second example came out 0.096
    # against the exact 0.086).
    assert chisquare(observed, expected).pvalue > 0.01
    low, high = result.log_prob_interpolate_ci
    # Tolerance: the t-interval over 8 independent runs must cover the exact ln P(L_S = 0).
    assert low <= math.log(exact_rate) <= high


@pytest.fixture(scope="module")
def teacher_task():
    gen = torch.Generator().manual_seed(3)
    teacher = narrow_teacher(FCN(4, (2,)), Q3, gen)
    return make_task(teacher, 10, 3000, gen)


def test_smc_agrees_with_guess_and_check(teacher_task):
    arch = FCN(4, (8,))
    gen = torch.Generator().manual_seed(1)
    smc = sample_smc(
        SequentialMonteCarlo(arch, Q3, teacher_task.train, particles=400), gen, 400, repeats=4, progress=False
    )
    gc = sample(GuessAndCheck(arch, Q3, teacher_task.train), gen, 400, max_draws=10**8, progress=False)
    assert_same_posterior(smc, gc, teacher_task.test)


def assert_same_posterior(smc, gc, test: Dataset) -> None:
    """SMC against G&C on one task: ln P(L_S = 0) and the samples' test errors."""
    smc_low, smc_high = smc.log_prob_interpolate_ci
    gc_low, gc_high = gc.log_prob_interpolate_ci
    # Tolerance: the two 95% intervals for ln P(L_S = 0) must overlap.
    assert smc_low <= gc_high and gc_low <= smc_high
    smc_err = smc.population.errors(test.x, test.y).numpy()
    gc_err = gc.population.errors(test.x, test.y).numpy()
    # Tolerance: a two-sample KS test of the test errors must not reject at the 1% level.
    assert ks_2samp(smc_err, gc_err).pvalue > 0.01


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    prior=st.sampled_from([Q3, Gaussian(1.0), Uniform(1.0)]),
    n=st.integers(1, 5),
    block=st.integers(1, 3),
    seed=st.integers(0, 10**6),
)
def test_every_smc_sample_has_zero_training_error(prior, n, block, seed):
    gen = torch.Generator().manual_seed(seed)
    arch = FCN(3, (4,))
    x = torch.randn(n, 3, generator=gen)
    y = (2 * torch.randint(0, 2, (n,), generator=gen) - 1).to(torch.int8)
    result = sample(
        SequentialMonteCarlo(arch, prior, Dataset(x, y), particles=64, block=block, max_moves=5),
        gen,
        64,
        progress=False,
    )
    if result.stop_reason == "degenerate":
        assert result.count == 0 and result.log_prob_interpolate == -math.inf
        return
    assert result.count == 64
    # Re-check in float64, one network at a time.
    for i in range(result.count):
        f = result.population[i].to(dtype=torch.float64).forward(x.double())[0]
        assert (torch.sign(f).to(torch.int8) == y).all()
    if isinstance(prior, Uniform):
        values = torch.cat([v.flatten() for v in result.population.params.values()])
        assert values.abs().max() <= 1.0


def test_smc_degenerate_is_reported():
    train = Dataset(torch.ones(2, 2), torch.tensor([1, -1], dtype=torch.int8))
    result = sample(
        SequentialMonteCarlo(FCN(2, (2,)), Q3, train, particles=50),
        torch.Generator().manual_seed(0),
        10,
        progress=False,
    )
    assert result.stop_reason == "degenerate" and result.count == 0
    assert "no particle survived" in result.message() and "\n" not in result.message()


def test_single_smc_run_has_an_estimate_but_no_interval(teacher_task):
    result = sample(
        SequentialMonteCarlo(FCN(4, (6,)), Q3, teacher_task.train, particles=100),
        torch.Generator().manual_seed(2),
        50,
        progress=False,
    )
    assert result.count == 50 and math.isfinite(result.log_prob_interpolate)
    assert all(math.isnan(v) for v in result.log_prob_interpolate_ci)
    assert "--repeats >= 2" in result.message()


def test_smc_time_budget_reports_how_far_it_got_and_no_samples():
    """A run stopped by its budget returns what it has: the examples its particles classify and
    ln P of those, but no samples (they would interpolate only those examples) and no estimate for
    the whole training set."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, generator=gen)
    train = Dataset(x, torch.where(x[:, 0] > 0, 1, -1).to(torch.int8))
    result = sample(
        SequentialMonteCarlo(FCN(3, (4,)), Q3, train, particles=200), gen, 10, time_limit=0.01, progress=False
    )
    assert result.stop_reason == "time_limit" and result.count == 0 and math.isnan(result.log_prob_interpolate)
    assert 0 <= result.examples_reached < 30 and result.log_prob_reached <= 0.0
    assert f"with {result.examples_reached} training examples in" in result.message()
    longer = sample(
        SequentialMonteCarlo(FCN(3, (4,)), Q3, train, particles=200), gen, 10, max_draws=3000, progress=False
    )
    assert longer.stop_reason == "max_draws" and 0 < longer.examples_reached < 30 and longer.log_prob_reached < 0


@pytest.mark.skipif(native.load() is None, reason="no C compiler: the native moves are not built")
@pytest.mark.parametrize(
    "activation, bias, scaled",
    [("relu", True, False), ("tanh", True, True), ("leaky-relu", False, True), ("sign", False, False)],
)
def test_native_moves_keep_the_cache_exact_and_every_particle_valid(activation, bias, scaled):
    """After many native moves, the cached z, f and scale equal a fresh float64 computation from the
    parameters (to rounding), and every particle still classifies every seen example (re-checked)."""
    gen = torch.Generator().manual_seed(3)
    arch = FCN(6, (5,), activation, bias, scaled)
    x = torch.randn(40, 6, generator=gen).double()
    smc_particles, seen = 24, 30
    flat = Q3.sample((smc_particles * 50, arch.num_params()), gen)
    probe = FCNCache.empty(arch, len(flat), len(x), "cpu")
    probe.extend(arch, flat, x, 0, len(x))
    decided = (probe.f.abs() > TIE * probe.scale).all(dim=1)
    y = torch.where(probe.f[decided][0] > 0, 1, -1).to(torch.int8)  # labels that one particle fits
    valid = (y[:seen].double() * probe.f[:, :seen] > TIE * probe.scale[:, :seen]).all(dim=1)
    flat = flat[valid][:smc_particles]
    cache = FCNCache.empty(arch, len(flat), len(x), "cpu")
    cache.extend(arch, flat, x, 0, seen)
    moved = flat.clone()
    accepted = cache.native_moves(native.load(), arch, Q3, gen, moved, x.float().T.contiguous(), y.double(), seen, 3000)
    assert 0 < float(accepted.mean()) < 3000 and not torch.equal(moved, flat)
    assert set(moved.unique().tolist()) <= set(Q3.levels)
    fresh = FCNCache.empty(arch, len(moved), len(x), "cpu")
    fresh.extend(arch, moved, x, 0, seen)
    for cached, recomputed in ((cache.z, fresh.z), (cache.f, fresh.f), (cache.scale, fresh.scale)):
        torch.testing.assert_close(cached[..., :seen], recomputed[..., :seen], rtol=1e-9, atol=1e-9)
    population = Population(arch, Q3, split_flat(arch, moved))
    assert certified_interpolates(population, x[:seen].float(), y[:seen]).all()


def test_a_stepped_smc_state_keeps_what_it_holds_and_steps_again_alike(teacher_task):
    """``step`` writes the new block's cache rows in place (SMCState): the rows the old state holds
    stay as they were, and stepping the old state again with the same seed gives the same state."""
    smc = SequentialMonteCarlo(FCN(4, (6,)), Q3, teacher_task.train, particles=64, block=3)
    assert smc.cached
    rng = torch.Generator().manual_seed(4)
    state = smc.init(rng)
    while state.seen < 6:  # mid-run: six examples in (blocks of three may take tempered steps), their rows cached
        state, _ = smc.step(rng, state)
    held = [tensor[..., : state.seen].clone() for tensor in (state.cache.z, state.cache.f, state.cache.scale)]
    flat = state.flat.clone()
    first, _ = smc.step(torch.Generator().manual_seed(9), state)
    again, _ = smc.step(torch.Generator().manual_seed(9), state)
    assert first.seen == again.seen and first.beta == again.beta and not first.degenerate
    assert torch.equal(state.flat, flat)
    for before, now in zip(held, (state.cache.z, state.cache.f, state.cache.scale)):
        assert torch.equal(now[..., : state.seen], before)
    assert torch.equal(first.flat, again.flat) and first.log_prob == again.log_prob
    assert first.coordinates == again.coordinates and torch.equal(first.cache.f, again.cache.f)


@pytest.mark.parametrize("prior", [Gaussian(1.0), Uniform(1.0)], ids=["gaussian", "uniform"])
def test_smc_agrees_with_guess_and_check_on_continuous_priors(teacher_task, prior):
    """The cloud-fitted and the prior's elliptical slices, with tempering, against exact G&C."""
    arch = FCN(4, (8,))
    train = teacher_task.train.head(8)
    gen = torch.Generator().manual_seed(5)
    smc = sample_smc(SequentialMonteCarlo(arch, prior, train, particles=300), gen, 600, repeats=4, progress=False)
    gc = sample(GuessAndCheck(arch, prior, train), gen, 600, max_draws=10**8, progress=False)
    assert_same_posterior(smc, gc, teacher_task.test)


def test_smc_volume_of_the_linear_perceptron_matches_the_exact_mean():
    """For f = <w, x> with w ~ N(0, I_d) and Gaussian inputs labelled by a random teacher, averaged
    over data sets E[P(L_S = 0)] = int_0^pi (1 - t/pi)^n sin^(d-2) t dt / int_0^pi sin^(d-2) t dt.
    SMC's estimate of P (not of ln P) is unbiased, so its mean over data sets must match."""
    d, n, sets = 3, 8, 40
    exact = quad(lambda t: (1 - t / math.pi) ** n * math.sin(t) ** (d - 2), 0, math.pi)[0] / 2.0  # int sin = 2
    gen = torch.Generator().manual_seed(11)
    estimates, tempered = [], False
    for _ in range(sets):
        teacher, x = torch.randn(d, generator=gen), torch.randn(n, d, generator=gen)
        train = Dataset(x, torch.where(x @ teacher > 0, 1, -1).to(torch.int8))
        result = sample(
            SequentialMonteCarlo(DiagonalLinear(d, 1), Gaussian(1.0), train, particles=100), gen, 1, progress=False
        )
        estimates.append(math.exp(result.log_prob_interpolate))
        tempered |= any(math.isfinite(info.beta) for info in result.history)
    mean, error = np.mean(estimates), np.std(estimates, ddof=1) / math.sqrt(sets)
    # Tolerance: 4 standard errors of the mean over data sets (the spread holds both the data sets'
    # variation and SMC's); a bias of the estimator would show as a shift of many standard errors.
    assert abs(mean - exact) <= 4 * error, (mean, exact, error)
    assert tempered  # some block killed more than half the particles and was tempered


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    mistakes=st.lists(st.integers(0, 4), min_size=2, max_size=60),
    beta=st.sampled_from([0.0, 0.5, 3.0, 29.0]),
    target=st.sampled_from([0.3, 0.5, 0.8]),
)
def test_next_temperature_keeps_the_effective_sample_size(mistakes, beta, target):
    counts = torch.tensor(mistakes)
    after, log_weights = next_temperature(counts, beta, target)
    weights = torch.exp(log_weights - log_weights.max())
    ess = float(weights.sum()) ** 2 / float((weights**2).sum()) / len(counts)
    if math.isinf(after):  # hard: the survivors' fraction is the ESS, kept unless beta ran out
        assert torch.equal(weights > 0, counts == 0)
        assert ess >= target or beta + 1e-9 >= smc_module.BETA_HARD or (counts == 0).sum() == 0
    else:
        assert beta < after <= smc_module.BETA_HARD
        spread = int(counts.max() - counts.min())
        # Bisection lands at the target ESS up to rounding, unless the mistakes hardly differ (then
        # beta becomes 1, or BETA_HARD, and the ESS stays above the target).
        assert ess >= target - 1e-6 if spread == 0 else abs(ess - target) < 1e-6 or ess > target


@pytest.mark.parametrize("prior", [Q3, Gaussian(1.0)], ids=["quantized", "gaussian"])
def test_a_step_whose_moves_pass_the_deadline_returns_the_state_it_was_given(teacher_task, prior):
    """So a time limit ends a run on time, without particles that have not mixed."""
    sampler = SequentialMonteCarlo(FCN(4, (8,)), prior, teacher_task.train.head(6), particles=50)
    gen = torch.Generator().manual_seed(0)
    first, _ = sampler.step(gen, sampler.init())
    late, info = sampler.step(gen, first, deadline=0.0)  # perf_counter() is past 0 already
    assert late.seen == first.seen and torch.equal(late.flat, first.flat) and late.draws > first.draws
    assert info.moves == 1
