"""The protocol every sampler follows, and the driver that runs any of them under budgets.

Modelled on BlackJAX: a sampler is an object with ``init() -> State`` and
``step(rng, state, max_draws) -> (State, Info)``; ``State`` and ``Info`` are NamedTuples and
``step`` changes nothing in place. Every State has ``accepted`` (a Population of the samples so
far) and ``draws`` (prior draws spent), so one driver, ``sample``, can run any sampler until it
holds ``count`` samples or a draw or time budget runs out. The driver asks the sampler, never the
state's fields: ``draws_per_trial`` (G&C's mirrored pairs are 2: draw budgets are spent in whole
groups, never past ``max_draws``), ``progress(state, count)`` for the progress bar (SMC counts
examples), ``failed(state)`` (SMC: no particle survived) and ``log_prob_estimate(state,
stop_reason)`` (SMC's own estimate of ln P(L_S = 0); None where the acceptance rate gives it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from typicalnets.errors import TypicalnetsError
from typicalnets.nets import Architecture, Population
from typicalnets.resources import check_memory
from typicalnets.stats import clopper_pearson


class State(Protocol):
    accepted: Population
    draws: int


class Sampler(Protocol):
    name: str
    arch: Architecture
    draws_per_trial: int

    def init(self) -> Any: ...

    def step(self, rng: torch.Generator, state: Any, max_draws: int | None = None) -> tuple[Any, NamedTuple]: ...

    def progress(self, state: Any, count: int) -> tuple[int, int]: ...

    def failed(self, state: Any) -> bool: ...

    def log_prob_estimate(self, state: Any, stop_reason: str) -> float | None: ...


@dataclass(frozen=True)
class SampleResult:
    """What a sampling run produced and spent.

    ``population`` holds the first ``count`` samples (or all, if the budget ran out first);
    ``accepted_total`` counts every accepted draw, including any beyond ``count`` in the last batch,
    so ``acceptance_rate = accepted_total / draws`` uses every evaluated draw. With
    ``draws_per_trial`` = 2 (G&C's mirrored pairs, at most one of which is accepted) the accepting
    pairs are Binomial(draws / 2, 2 p), and ``acceptance_ci`` is the exact interval of that, halved.
    """

    sampler: str
    population: Population
    requested: int
    accepted_total: int
    draws: int
    seconds: float
    stop_reason: str  # "count", "max_draws", "time_limit" or "degenerate" (SMC: no particle survived)
    log_prob_estimate: float | None = None  # samplers that estimate ln P(L_S = 0) directly (SMC)
    log_prob_estimate_ci: tuple[float, float] | None = None
    history: tuple = ()  # the Info of every step, in order
    draws_per_trial: int = 1  # draws per independent trial (2: mirrored pairs)

    @property
    def count(self) -> int:
        return len(self.population)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_total / self.draws if self.draws else 0.0

    @property
    def acceptance_ci(self) -> tuple[float, float]:
        per = self.draws_per_trial
        low, high = clopper_pearson(self.accepted_total, self.draws // per)
        return low / per, high / per

    @property
    def log_prob_interpolate(self) -> float:
        """ln P(L_S = 0), the log prior mass of the version space: the sampler's own estimate, else
        ln of the acceptance rate (-inf if none accepted)."""
        if self.log_prob_estimate is not None:
            return self.log_prob_estimate
        return math.log(self.acceptance_rate) if self.accepted_total else -math.inf

    @property
    def log_prob_interpolate_ci(self) -> tuple[float, float]:
        if self.log_prob_estimate is not None:  # one run of an estimating sampler has no interval
            return self.log_prob_estimate_ci or (math.nan, math.nan)
        low, high = self.acceptance_ci
        return (math.log(low) if low > 0 else -math.inf), math.log(high)

    def message(self) -> str:
        """One line on how the run ended."""
        if self.log_prob_estimate is not None:
            low, high = self.log_prob_interpolate_ci
            if self.stop_reason == "degenerate":
                return f"{self.sampler}: no particle survived; raise --particles or the number of moves"
            if math.isnan(self.log_prob_estimate):
                return (
                    f"{self.sampler} stopped by {self.stop_reason.replace('_', ' ')} before the last example; "
                    "no samples or estimate; raise --max-draws/--time-limit"
                )
            return (
                f"{self.count}/{self.requested} samples by {self.sampler} in {self.seconds:.1f}s; "
                f"ln P(L_S = 0) = {self.log_prob_estimate:.3f} "
                + (f"(95% CI {low:.3f} to {high:.3f})" if math.isfinite(low) else "(--repeats >= 2 for an interval)")
            )
        low, high = self.acceptance_ci
        if self.accepted_total == 0:
            return (
                f"no interpolator accepted in {self.draws:,} draws ({self.stop_reason.replace('_', ' ')} reached); "
                f"acceptance rate < {high:.3g} (95% upper bound); raise --max-draws/--time-limit or lower n"
            )
        done = "reached" if self.stop_reason == "count" else f"stopped by {self.stop_reason.replace('_', ' ')}"
        return (
            f"{self.count}/{self.requested} interpolators ({done}) in {self.draws:,} draws, {self.seconds:.1f}s; "
            f"acceptance rate {self.acceptance_rate:.3g} (95% CI {low:.3g}-{high:.3g})"
        )


def sample(
    sampler: Sampler,
    rng: torch.Generator,
    count: int,
    max_draws: int | None = None,
    time_limit: float | None = None,
    progress: bool = True,
    description: str | None = None,
) -> SampleResult:
    """Run ``sampler`` until it holds ``count`` samples, or ``max_draws`` / ``time_limit`` (s) run out."""
    if count < 1:
        raise TypicalnetsError(f"count must be >= 1, got {count}; ask for at least one sample")
    if max_draws is not None and max_draws < 1:
        raise TypicalnetsError(f"max draws must be >= 1, got {max_draws}; give a positive budget or none")
    if time_limit is not None and not time_limit > 0:
        raise TypicalnetsError(f"time limit must be > 0 seconds, got {time_limit}; give a positive budget or none")
    unit = sampler.draws_per_trial
    if max_draws is not None and max_draws < unit:
        raise TypicalnetsError(
            f"max_draws = {max_draws} is less than one trial of {sampler.name} ({unit} draws: a mirrored pair); "
            f"give max_draws >= {unit}, or mirror=False"
        )
    held = count if max_draws is None else min(count, max_draws)  # held until the end; draws cap how many
    check_memory(sampler.arch.num_params(), held, f"count = {held:,} networks", fix="lower count or the widths")
    start = time.perf_counter()
    state = sampler.init()
    stop_reason = "count"
    history = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[draws]} draws"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(description or sampler.name, total=count, draws="0")
        while len(state.accepted) < count:
            if sampler.failed(state):
                stop_reason = "degenerate"
                break
            if max_draws is not None and state.draws + unit > max_draws:
                stop_reason = "max_draws"
                break
            if time_limit is not None and time.perf_counter() - start >= time_limit:
                stop_reason = "time_limit"
                break
            remaining = None if max_draws is None else max_draws - state.draws
            state, info = sampler.step(rng, state, remaining)
            history.append(info)
            done, total = sampler.progress(state, count)
            bar.update(task, completed=done, total=total, draws=f"{state.draws:,}")
    return SampleResult(
        sampler=sampler.name,
        population=state.accepted[:count],
        requested=count,
        accepted_total=len(state.accepted),
        draws=state.draws,
        seconds=time.perf_counter() - start,
        stop_reason=stop_reason,
        log_prob_estimate=sampler.log_prob_estimate(state, stop_reason),
        history=tuple(history),
        draws_per_trial=unit,
    )
