"""Guess & Check is exact: checked against the enumerated posterior of a tiny network."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, chisquare

from typicalnets import native
from typicalnets.data import Dataset, boolean_cube
from typicalnets.engines import base as engine_base
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import CNN, FCN, Population
from typicalnets.priors import Gaussian, QuantizedUniform, Uniform
from typicalnets.samplers import GuessAndCheck, iter_samples, sample
from typicalnets.stats import clopper_pearson

Q3 = QuantizedUniform.evenly_spaced(3)


def enumerate_population(arch, prior: QuantizedUniform) -> Population:
    """Every parameter setting of ``arch`` over the prior's levels, as one population."""
    shapes = arch.param_shapes()
    total = sum(math.prod(s) for s in shapes.values())
    grid = torch.tensor(list(itertools.product(prior.levels, repeat=total)), dtype=torch.float32)
    params, col = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        params[name] = grid[:, col : col + size].reshape(-1, *shape)
        col += size
    return Population(arch, prior, params)


def function_ids(predictions: torch.Tensor) -> np.ndarray:
    """Encode each row of predictions in {-1, 0, 1} on the cube as one integer (base 3)."""
    digits = (predictions.long() + 1).numpy()
    return (digits * (3 ** np.arange(digits.shape[1]))).sum(axis=1)


@pytest.fixture(scope="module")
def tiny_problem():
    arch = FCN(in_dim=2, hidden=(2,), activation="relu", bias=True)  # 9 parameters: 3^9 settings
    cube = boolean_cube(2)
    train = Dataset(cube[:3], torch.tensor([1, -1, 1], dtype=torch.int8))  # XOR-like on 3 of 4 corners
    everyone = enumerate_population(arch, Q3)
    interpolates = everyone.mistakes(train.x, train.y) == 0
    exact_rate = interpolates.double().mean().item()
    ids = function_ids(everyone[interpolates].predict(cube))
    values, counts = np.unique(ids, return_counts=True)
    posterior = dict(zip(values.tolist(), (counts / counts.sum()).tolist()))
    return arch, cube, train, exact_rate, posterior


ENGINES = ["baseline", "torch", "native"]


@pytest.mark.parametrize("engine", ENGINES)
def test_gc_matches_exact_posterior_over_functions(tiny_problem, engine):
    arch, cube, train, _, posterior = tiny_problem
    result = sample(
        GuessAndCheck(arch, Q3, train, batch_size=4096, engine=engine),
        torch.Generator().manual_seed(1),
        4000,
        progress=False,
    )
    assert result.count == 4000
    assert (result.population.mistakes(train.x, train.y) == 0).all()
    ids = function_ids(result.population.predict(cube))
    observed = {k: 0 for k in posterior}
    for i in ids.tolist():
        assert i in posterior, "G&C returned a function that no interpolating setting computes"
        observed[i] += 1
    keys = sorted(posterior)
    expected = np.array([posterior[k] for k in keys]) * result.count
    obs = np.array([observed[k] for k in keys], dtype=float)
    # Pool functions whose expected count is < 5 so the chi-square approximation holds.
    small = expected < 5
    if small.any():
        expected = np.append(expected[~small], expected[small].sum())
        obs = np.append(obs[~small], obs[small].sum())
    # Tolerance: reject only at the 1% level (fixed seed, so the outcome is deterministic).
    assert len(expected) >= 3
    assert chisquare(obs, expected).pvalue > 0.01


@pytest.mark.parametrize("engine", ENGINES)
def test_gc_acceptance_rate_matches_exact_probability(tiny_problem, engine):
    arch, _, train, exact_rate, _ = tiny_problem
    result = sample(
        GuessAndCheck(arch, Q3, train, batch_size=10_000, engine=engine),
        torch.Generator().manual_seed(2),
        10**9,
        max_draws=200_000,
        progress=False,
    )
    assert result.stop_reason == "max_draws" and result.draws == 200_000
    # The fast engines draw mirrored pairs (at most one of a pair is accepted): accepting pairs
    # are Binomial(draws / 2, 2 p). The baseline: accepted draws are Binomial(draws, p).
    per = result.draws_per_trial
    assert per == (1 if engine == "baseline" else 2)
    trials = result.draws // per
    # Tolerance: exact binomial test of the accepted count against the enumerated rate, 1% level.
    assert binomtest(result.accepted_total, trials, per * exact_rate).pvalue > 0.01
    low, high = result.acceptance_ci
    assert (low, high) == tuple(v / per for v in clopper_pearson(result.accepted_total, trials))
    # The same 1% level for the interval: its 99% version covers the exact rate.
    low99, high99 = clopper_pearson(result.accepted_total, trials, 0.99)
    assert low99 / per <= exact_rate <= high99 / per


def test_gc_is_reproducible():
    arch = FCN(3, (4,))
    train = Dataset(
        torch.randn(6, 3, generator=torch.Generator().manual_seed(0)),
        torch.tensor([1, -1, 1, 1, -1, -1], dtype=torch.int8),
    )
    runs = [
        sample(GuessAndCheck(arch, Q3, train, batch_size=1000), torch.Generator().manual_seed(5), 20, progress=False)
        for _ in range(2)
    ]
    assert runs[0].draws == runs[1].draws
    for name in runs[0].population.params:
        assert torch.equal(runs[0].population.params[name], runs[1].population.params[name])


def test_gc_budget_exhaustion_reports_upper_bound():
    arch = FCN(2, (1,), bias=False)
    # Contradictory labels on the same point: no network interpolates.
    train = Dataset(torch.ones(2, 2), torch.tensor([1, -1], dtype=torch.int8))
    result = sample(
        GuessAndCheck(arch, Q3, train, batch_size=500),
        torch.Generator().manual_seed(0),
        5,
        max_draws=1200,
        progress=False,
    )
    assert result.count == 0 and result.draws == 1200 and result.stop_reason == "max_draws"
    low, high = result.acceptance_ci
    per = result.draws_per_trial  # mirrored pairs: no pair of 600 accepted bounds 2 p
    assert low == 0.0 and high == pytest.approx((1 - 0.025 ** (per / 1200)) / per)
    assert "no interpolator" in result.message() and "\n" not in result.message()
    assert result.log_prob_interpolate == -math.inf


def test_gc_time_limit_stops():
    arch = FCN(2, (1,), bias=False)
    train = Dataset(torch.ones(2, 2), torch.tensor([1, -1], dtype=torch.int8))
    result = sample(
        GuessAndCheck(arch, Q3, train, batch_size=100),
        torch.Generator().manual_seed(0),
        5,
        time_limit=0.2,
        progress=False,
    )
    assert result.stop_reason == "time_limit" and result.count == 0 and result.draws > 0


@pytest.mark.parametrize("kwargs", [{"count": 0}, {"count": 1, "max_draws": 0}, {"count": 1, "time_limit": 0}])
def test_zero_budgets_are_refused(kwargs):
    train = Dataset(torch.ones(1, 2), torch.tensor([1], dtype=torch.int8))
    with pytest.raises(TypicalnetsError):
        sample(GuessAndCheck(FCN(2, (1,)), Q3, train), torch.Generator().manual_seed(0), progress=False, **kwargs)


def test_clopper_pearson_known_values():
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(0.187086, abs=1e-5) and high == pytest.approx(0.812914, abs=1e-5)
    assert clopper_pearson(10, 10)[1] == 1.0


ARCHS = st.sampled_from(
    [
        FCN(3, (3,)),
        FCN(3, (2, 2), activation="sign"),
        FCN(3, (4,), scaled=True, bias=False),
        FCN(3, (3,), activation="tanh"),
        CNN((1, 3), (2,), kernel_size=2),
    ]
)
PRIORS = st.sampled_from([Q3, QuantizedUniform.evenly_spaced(5), Uniform(1.0), Gaussian(1.0)])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    arch=ARCHS,
    prior=PRIORS,
    n=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    engine=st.sampled_from(["fast", "torch", "baseline"]),
)
def test_every_accepted_network_has_zero_training_error(arch, prior, n, seed, engine):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *arch.input_shape, generator=gen)
    y = (2 * torch.randint(0, 2, (n,), generator=gen) - 1).to(torch.int8)
    result = sample(
        GuessAndCheck(arch, prior, Dataset(x, y), batch_size=2048, engine=engine),
        gen,
        10,
        max_draws=8192,
        progress=False,
    )
    accepted = result.population
    # Re-check one network at a time in float64: no accepted network may make a training mistake.
    for i in range(len(accepted)):
        f = accepted[i].to(dtype=torch.float64).forward(x.double())[0]
        assert (torch.sign(f).to(torch.int8) == y).all()
    assert result.accepted_total >= result.count
    assert 0 <= result.acceptance_rate <= 1


@pytest.mark.skipif(native.load() is None, reason="no C compiler: the native kernel cannot be built")
def test_native_batch_doubles_while_nothing_is_accepted(monkeypatch):
    arch = FCN(2, (1,), bias=False)
    train = Dataset(torch.ones(2, 2), torch.tensor([1, -1], dtype=torch.int8))  # nobody interpolates
    sampler = GuessAndCheck(arch, Q3, train, batch_size=1000, engine="native")
    state, rng, sizes = sampler.init(), torch.Generator().manual_seed(0), []
    for _ in range(12):
        state, info = sampler.step(rng, state)
        sizes.append(info.draws)
    assert sizes[:4] == [1000, 2000, 4000, 8000] and sizes[-1] == engine_base.KERNEL_MAX_BATCH
    # The FLOP cap stops the growth where the doubled step would exceed it (forwards x FLOPs each).
    cap = 2 * 4000 * arch.flops_per_example()
    monkeypatch.setitem(engine_base.KERNEL_STEP_FLOPS, "cpu", cap)
    state, steps = sampler.init(), []
    for _ in range(6):
        state, info = sampler.step(rng, state)
        steps.append((info.draws, 2 * info.network_examples * arch.flops_per_example() <= cap))
    for (draws, under_cap), (next_draws, _) in zip(steps, steps[1:]):
        assert next_draws == (2 * draws if under_cap else draws)
    assert steps[-1][0] == steps[-2][0] < engine_base.KERNEL_MAX_BATCH  # growth stopped at the cap


@pytest.mark.skipif(native.load() is None, reason="no C compiler: the native kernel cannot be built")
def test_a_native_step_with_many_candidates_keeps_a_prefix_of_its_draws(monkeypatch):
    """A step that would materialize too many candidates counts only the draws before the cut, and
    accepts exactly what the uncut step accepts among them (same stream), so nothing is biased."""
    arch = FCN(2, (3,))
    train = Dataset(torch.tensor([[1.0, 0.5]]), torch.tensor([1], dtype=torch.int8))  # one example: easy
    gc = GuessAndCheck(arch, Q3, train, batch_size=1024, engine="native")
    full_state, full = gc.step(torch.Generator().manual_seed(5), gc.init())
    monkeypatch.setattr(engine_base, "KERNEL_CANDIDATE_FLOATS", 10 * arch.num_params())
    cut_state, cut = gc.step(torch.Generator().manual_seed(5), gc.init())
    assert full.draws == 1024 and cut.draws < 1024 and cut.draws % 2 == 0 and cut_state.draws == cut.draws
    assert 0 < cut.accepted <= 10 and cut.rechecked <= 10
    prefix = full_state.accepted[: cut.accepted]
    assert all(torch.equal(prefix.params[k], cut_state.accepted.params[k]) for k in prefix.params)


def streaming_problem():
    """An FCN task that G&C accepts often (about 1 in 40 draws), so that a run takes many steps."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(4, 3, generator=gen)
    return FCN(3, (4,)), Dataset(x, torch.tensor([1, -1, 1, 1], dtype=torch.int8))


@pytest.mark.parametrize("engine", ENGINES)
def test_streamed_samples_are_the_in_memory_samples(engine):
    """iter_samples and a sink hand on exactly the networks, in the same order, that the in-memory run holds for
    the same seed, at most count of them, and the results agree on everything else."""
    if engine == "native" and native.load() is None:
        pytest.skip("no C compiler: the native kernel cannot be built")
    arch, train = streaming_problem()

    def run():
        return GuessAndCheck(arch, Q3, train, batch_size=256, engine=engine), torch.Generator().manual_seed(4)

    held = sample(*run(), 300, progress=False)
    stream = iter_samples(*run(), 300, progress=False)
    chunks = list(stream)
    sunk = []
    sinked = sample(*run(), 300, progress=False, sink=sunk.append)
    assert held.step_count > 5 and len(chunks) > 5 and held.count == 300 and held.streamed == 0
    for handed_on, result in ((chunks, stream.result), (sunk, sinked)):
        assert sum(len(chunk) for chunk in handed_on) == result.count == result.streamed == 300
        assert len(result.population) == 0
        joined = Population.concat(handed_on)
        assert all(torch.equal(joined.params[k], held.population.params[k]) for k in held.population.params)
        assert (result.draws, result.accepted_total, result.stop_reason) == (
            held.draws,
            held.accepted_total,
            held.stop_reason,
        )
        assert result.history == held.history
        assert result.message().replace(f"{result.seconds:.1f}s", "") == held.message().replace(
            f"{held.seconds:.1f}s", ""
        )
    assert held.accepted_total >= 300


def test_a_gc_state_holds_only_its_last_steps_networks():
    """The state does not grow with the samples: it holds the networks its step accepted, and counts the rest."""
    arch, train = streaming_problem()
    gc = GuessAndCheck(arch, Q3, train, batch_size=256, engine="torch")
    rng, state = torch.Generator().manual_seed(2), gc.init()
    total = 0
    for _ in range(30):
        before = state
        state, info = gc.step(rng, state)
        total += info.accepted
        assert len(state.accepted) == len(gc.new_samples(state)) == info.accepted <= info.draws == 256
        assert state.accepted_total == total and before.accepted_total == total - info.accepted
        assert (state.accepted.mistakes(train.x, train.y) == 0).all()
    assert total > 100


def test_a_stream_runs_once():
    arch, train = streaming_problem()
    stream = iter_samples(GuessAndCheck(arch, Q3, train), torch.Generator().manual_seed(0), 3, progress=False)
    assert stream.result is None and sum(len(chunk) for chunk in stream) == 3 and stream.result.count == 3
    with pytest.raises(TypicalnetsError, match="already run"):
        list(stream)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    count=st.integers(1, 80),
    batch=st.integers(16, 300),
    max_draws=st.one_of(st.none(), st.integers(2, 3000)),
    seed=st.integers(0, 2**31 - 1),
)
def test_a_stream_hands_on_the_first_count_networks_under_any_budget(count, batch, max_draws, seed):
    arch, train = streaming_problem()

    def run():
        return GuessAndCheck(arch, Q3, train, batch_size=batch, engine="torch"), torch.Generator().manual_seed(seed)

    held = sample(*run(), count, max_draws=max_draws, progress=False)
    stream = iter_samples(*run(), count, max_draws=max_draws, progress=False)
    chunks = list(stream)
    assert all(len(chunk) for chunk in chunks) and stream.result.count == min(count, held.accepted_total)
    joined = Population.concat([stream.result.population, *chunks])
    assert all(torch.equal(joined.params[k], held.population.params[k]) for k in held.population.params)
    assert (stream.result.draws, stream.result.stop_reason) == (held.draws, held.stop_reason)


def test_the_in_memory_run_copies_each_network_once(monkeypatch):
    """Without a sink the driver joins the steps' networks once, at the end: no copying that grows with the count."""
    arch, train = streaming_problem()
    copied, concat = [], Population.concat

    def counting_concat(parts):
        joined = concat(parts)
        copied.append(len(joined))
        return joined

    monkeypatch.setattr(Population, "concat", staticmethod(counting_concat))
    result = sample(
        GuessAndCheck(arch, Q3, train, batch_size=128, engine="torch"), torch.Generator(), 400, progress=False
    )
    assert result.count == 400 and result.step_count > 10 and copied == [400]
