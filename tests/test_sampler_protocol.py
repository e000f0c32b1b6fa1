"""The one driver runs any sampler that follows the protocol, and every method's result is a SampleResult."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from typicalnets.data import Dataset
from typicalnets.methods import MethodSpec, run_method
from typicalnets.nets import FCN, Population
from typicalnets.priors import QuantizedUniform
from typicalnets.samplers import SampleResult, sample
from typicalnets.teachers import make_task, narrow_teacher

Q3 = QuantizedUniform.evenly_spaced(3)


class CounterState(NamedTuple):
    kept: int
    draws: int


class CounterInfo(NamedTuple):
    max_draws: int | None  # the draw budget the driver passed to this step


class Counter:
    """The least sampler: a step is one trial of three draws that keeps one sample. Its state has no
    ``accepted``, so the driver can only learn how the run stands by asking."""

    name, draws_per_trial, arch = "counter", 3, FCN(2, (1,))

    def init(self, rng: torch.Generator | None = None) -> CounterState:
        return CounterState(0, 0)

    def step(self, rng: torch.Generator, state: CounterState, max_draws: int | None = None, deadline=None):
        return CounterState(state.kept + 1, state.draws + 3), CounterInfo(max_draws)

    def stopped(self, state: CounterState, count: int) -> str | None:
        return "count" if state.kept >= count else None

    def progress(self, state: CounterState, count: int) -> tuple[int, int, str]:
        return state.kept, count, f"{state.draws} draws"

    def finish(self, state: CounterState, count: int, stop_reason: str, seconds: float, history) -> SampleResult:
        empty = Population.empty(self.arch, Q3)
        return SampleResult(self.name, empty, count, state.kept, state.draws, seconds, stop_reason, history=history)


def test_the_driver_asks_the_sampler_and_spends_draw_budgets_in_whole_trials():
    done = sample(Counter(), torch.Generator(), 5, progress=True)
    assert (done.stop_reason, done.accepted_total, done.draws, done.step_count) == ("count", 5, 15, 5)
    assert [info.max_draws for info in done.history] == [None] * 5
    cut = sample(Counter(), torch.Generator(), 5, max_draws=10, progress=False)
    assert (cut.stop_reason, cut.accepted_total, cut.draws) == ("max_draws", 3, 9)  # a fourth trial would overrun
    assert [info.max_draws for info in cut.history] == [10, 7, 4]


@pytest.fixture(scope="module")
def task():
    gen = torch.Generator().manual_seed(3)
    return make_task(narrow_teacher(FCN(4, (2,)), Q3, gen), 8, 100, gen)


@pytest.mark.parametrize("sampler", ["gc", "smc", "sgd"])
def test_every_method_returns_a_sample_result(task, sampler):
    ran = run_method(MethodSpec(sampler=sampler), FCN(4, (6,)), Q3, task.train, torch.Generator().manual_seed(0), 4)
    assert isinstance(ran.raw, SampleResult) and ran.raw.sampler == ran.sampler == sampler
    assert ran.summary["count"] == len(ran.population) == len(ran.converged) == len(ran.steps) == 4
    assert ran.message() == ran.summary["message"] == ran.raw.message()
    assert ran.converged.sum() == ran.raw.converged_count


def test_run_method_gives_sgd_the_time_limit():
    contradictory = Dataset(torch.ones(2, 4), torch.tensor([1, -1], dtype=torch.int8))  # nothing interpolates
    spec = MethodSpec(sampler="sgd", sgd_max_steps=10**9)
    ran = run_method(spec, FCN(4, (6,)), Q3, contradictory, torch.Generator().manual_seed(0), 3, time_limit=0.2)
    assert ran.summary["stop_reason"] == "time_limit" and ran.summary["steps"] == ran.raw.step_count > 0
    assert ran.summary["converged"] == 0 and (ran.steps == ran.raw.step_count).all()
    assert ran.message().endswith("; 3 stopped by the time limit")
