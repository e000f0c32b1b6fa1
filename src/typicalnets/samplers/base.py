"""The protocol every sampler follows, and the driver that runs any of them under budgets.

Modelled on BlackJAX: a sampler is an object with ``init(rng) -> State`` and ``step(rng, state,
max_draws, deadline) -> (State, Info)`` (``deadline``: the ``time.perf_counter()`` by which the time
budget runs out, or None; a sampler whose step can be long, SMC's, stops work there and returns
a state that the budget then ends); ``State`` and ``Info`` are NamedTuples, and a state stands for the
same run whatever is done with it later (``step`` returns a new one). Samplers that draw nothing
before their first step (G&C, SMC) take ``init(rng=None)`` too, as BlackJAX's ``init_fn(position,
rng_key=None)`` does. Every State has ``draws`` (prior draws spent, which the draw budget counts).

One driver, ``sample``, runs any sampler until the sampler says its run is over or a draw or time
budget runs out, with one progress bar (its loop is ``SampleStream``'s, which ``iter_samples``
also hands out, to iterate over the samples as they come). It reads no state field but ``draws``
and knows no sampler by name; it asks the sampler:

- ``draws_per_trial``: draws of one independent trial (G&C's mirrored pairs are 2): draw budgets
  are spent in whole trials, never past ``max_draws``;
- ``stopped(state, count)``: why the run is over, or None while it goes on: "count" (G&C holds
  ``count`` samples; SMC has seen every example), "degenerate" (SMC: no particle survived),
  "converged" (SGD: every network interpolates) or "max_steps" (SGD's step budget);
- ``progress(state, count)``: (done, total, note) for the progress bar (SMC counts examples, SGD
  converged networks);
- ``finish(state, count, stop_reason, seconds, history)``: the run's ``SampleResult``, which the
  sampler builds (SMC adds its own estimate of ln P(L_S = 0), SGD its per-network flags).

**Streaming.** A run of 500,000 interpolators must not hold them all, nor copy them at every step. A
``StreamingSampler`` (G&C) has one more method, ``new_samples(state)``: the samples of the step that
made ``state``; its state holds only those, and counts the rest. The driver hands them on as they
come, cut so that the run hands on at most ``count``, in draw order, so a step costs the same however
many samples came before. ``iter_samples`` yields them (a ``SampleStream``); ``sample`` passes them to
a ``sink`` callback or, without one, collects them and joins them once at the end, into the result's
``population``. A sampler that holds its samples to the end (SMC's particles, SGD's networks) is
streamed as one chunk when it finishes. The result of a streamed run counts its samples in
``streamed`` and holds none, which is what lets a command write any number of them to disk in
constant memory (``typicalnets sample``: ``cli.SampleFiles``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, runtime_checkable

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

# What stopped a run short of its goal, as a message names it.
BUDGET_NAMES = {"max_steps": "the step budget", "max_draws": "the draw budget", "time_limit": "the time limit"}


class State(Protocol):
    draws: int


class Sampler(Protocol):
    name: str
    arch: Architecture
    draws_per_trial: int

    def init(self, rng: torch.Generator) -> Any: ...

    def step(
        self, rng: torch.Generator, state: Any, max_draws: int | None = None, deadline: float | None = None
    ) -> tuple[Any, NamedTuple]: ...

    def stopped(self, state: Any, count: int) -> str | None: ...

    def progress(self, state: Any, count: int) -> tuple[int, int, str]: ...

    def finish(
        self, state: Any, count: int, stop_reason: str, seconds: float, history: tuple[NamedTuple, ...]
    ) -> SampleResult: ...


@runtime_checkable
class StreamingSampler(Sampler, Protocol):
    """A sampler whose state holds only its last step's samples (and counts all): the driver hands them
    on as they come. Its ``finish`` builds a result with an empty population; the driver fills in
    ``streamed`` or, in ``sample`` without a sink, the population."""

    def new_samples(self, state: Any) -> Population: ...


@dataclass(frozen=True)
class SampleResult:
    """What a sampling (or training) run produced and spent.

    ``population`` holds the first ``count`` samples (or all, if the budget ran out first), except
    where they were handed on as they came (``iter_samples``, or ``sample`` with a sink): it is then
    empty and ``streamed`` counts them;
    ``accepted_total`` counts every accepted draw, including any beyond ``count`` in the last batch,
    so ``acceptance_rate = accepted_total / draws`` uses every evaluated draw. With
    ``draws_per_trial`` = 2 (G&C's mirrored pairs, at most one of which is accepted) the accepting
    pairs are Binomial(draws / 2, 2 p), and ``acceptance_ci`` is the exact interval of that, halved.

    SGD's population is every network it trained, ``converged`` says which reached zero training
    error (``accepted_total`` counts those) and ``steps`` how many updates each took.
    """

    sampler: str
    population: Population
    requested: int
    accepted_total: int
    draws: int
    seconds: float
    # "count", "max_draws", "time_limit", "degenerate" (SMC: no particle survived), "converged" or
    # "max_steps" (SGD)
    stop_reason: str
    log_prob_estimate: float | None = None  # samplers that estimate ln P(L_S = 0) directly (SMC)
    log_prob_estimate_ci: tuple[float, float] | None = None
    history: tuple = ()  # the Info of every step, in order
    draws_per_trial: int = 1  # draws per independent trial (2: mirrored pairs)
    # SMC stopped by a budget: the training examples its particles classify, and ln P of that
    examples_reached: int | None = None
    log_prob_reached: float | None = None
    converged: torch.Tensor | None = None  # SGD: (M,) bool, reached zero training error
    steps: torch.Tensor | None = None  # SGD: (M,) long, the updates each network took
    streamed: int = 0  # samples handed on as they came, which ``population`` does not hold

    @property
    def count(self) -> int:
        return len(self.population) + self.streamed

    @property
    def converged_count(self) -> int:
        """Networks with zero training error: every sample of G&C and SMC, SGD's converged ones."""
        return self.count if self.converged is None else int(self.converged.sum())

    @property
    def step_count(self) -> int:
        """Steps the run took (SGD: updates of the population)."""
        return len(self.history)

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
        if self.converged is not None:
            converged, count = self.converged_count, self.count
            text = f"{converged}/{count} networks reached zero training error in {self.step_count} steps"
            if self.stop_reason != "converged":
                text += f"; {count - converged} stopped by {BUDGET_NAMES[self.stop_reason]}"
            return text
        if self.log_prob_estimate is not None:
            low, high = self.log_prob_interpolate_ci
            if self.stop_reason == "degenerate":
                return f"{self.sampler}: no particle survived; raise --particles or the number of moves"
            if math.isnan(self.log_prob_estimate):
                reached = self.examples_reached or 0
                return (
                    f"{self.sampler} stopped by {self.stop_reason.replace('_', ' ')} with {reached} training examples "
                    f"in (ln P(those correct) = {self.log_prob_reached or 0.0:.3f}); no samples, as its particles "
                    "classify only those; raise --max-draws/--time-limit"
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


def accepted_result(
    sampler: Sampler, state: Any, count: int, stop_reason: str, seconds: float, history: tuple, **fields: Any
) -> SampleResult:
    """The result of a sampler whose samples are ``state.accepted`` (SMC): the first ``count``
    of them, and every accepted draw counted; ``fields`` adds what that sampler knows besides."""
    return SampleResult(
        sampler=sampler.name,
        population=state.accepted[:count],
        requested=count,
        accepted_total=len(state.accepted),
        draws=state.draws,
        seconds=seconds,
        stop_reason=stop_reason,
        history=history,
        draws_per_trial=sampler.draws_per_trial,
        **fields,
    )


def sample(
    sampler: Sampler,
    rng: torch.Generator,
    count: int,
    max_draws: int | None = None,
    time_limit: float | None = None,
    progress: bool = True,
    description: str | None = None,
    sink: Callable[[Population], None] | None = None,
) -> SampleResult:
    """Run ``sampler`` until it says its run is over (for G&C: it has ``count`` samples), or
    ``max_draws`` / ``time_limit`` (s) run out. Samplers of a fixed size (SMC's particles, SGD's
    networks) are run with ``count`` = that size.

    ``sink``, if given, receives the samples as they come (see ``SampleStream``) and the result holds
    none of a streaming sampler's (``streamed`` counts them); without it the result's population holds
    them all, joined once at the end."""
    stream = SampleStream(sampler, rng, count, max_draws, time_limit, progress, description)
    streaming = isinstance(sampler, StreamingSampler)
    if streaming and sink is None:  # the result will hold them all
        _check_held(sampler, count, max_draws)
    chunks = []
    for chunk in stream:
        if sink is not None:
            sink(chunk)
        elif streaming:
            chunks.append(chunk)
    result = stream.result
    if chunks:
        result = replace(result, population=Population.concat([result.population, *chunks]), streamed=0)
    return result


@dataclass
class SampleStream:
    """The samples of one run of ``sampler`` (budgets as in ``sample``), as they come: iterating the
    stream runs the sampler and yields Populations, at most ``count`` networks in all, in draw order;
    afterwards ``result`` is the run's ``SampleResult`` (None before). A streaming sampler's samples
    come step by step and are held neither by the stream nor by the result; any other sampler's come
    as one chunk when it finishes (and its result holds them too). A stream runs once. Bad budgets
    are refused when it is made, before any work."""

    sampler: Sampler
    rng: torch.Generator
    count: int
    max_draws: int | None = None
    time_limit: float | None = None
    progress: bool = True
    description: str | None = None
    result: SampleResult | None = field(default=None, init=False)
    started: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        count, max_draws, time_limit = self.count, self.max_draws, self.time_limit
        if count < 1:
            raise TypicalnetsError(f"count must be >= 1, got {count}; ask for at least one sample")
        if max_draws is not None and max_draws < 1:
            raise TypicalnetsError(f"max draws must be >= 1, got {max_draws}; give a positive budget or none")
        if time_limit is not None and not time_limit > 0:
            raise TypicalnetsError(f"time limit must be > 0 seconds, got {time_limit}; give a positive budget or none")
        unit = self.sampler.draws_per_trial
        if max_draws is not None and max_draws < unit:
            raise TypicalnetsError(
                f"max_draws = {max_draws} is less than one trial of {self.sampler.name} ({unit} draws: a mirrored "
                f"pair); give max_draws >= {unit}, or mirror=False"
            )
        if not isinstance(self.sampler, StreamingSampler):  # it holds its samples until it finishes
            _check_held(self.sampler, count, max_draws)

    def __iter__(self) -> Iterator[Population]:
        if self.started:
            raise TypicalnetsError("this sample stream has already run; make a new one for another run")
        self.started = True
        return self._run()

    def _run(self) -> Iterator[Population]:
        sampler, count, max_draws, time_limit = self.sampler, self.count, self.max_draws, self.time_limit
        streaming = isinstance(sampler, StreamingSampler)
        unit = sampler.draws_per_trial
        start = time.perf_counter()
        deadline = None if time_limit is None else start + time_limit
        state = sampler.init(self.rng)
        history, delivered = [], 0
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, disable=not self.progress, transient=True) as bar:
            done, total, note = sampler.progress(state, count)
            task = bar.add_task(self.description or sampler.name, total=total, completed=done, note=note)
            while True:
                # 1. The sampler says whether its run is over; else the driver checks the budgets.
                stop_reason = sampler.stopped(state, count) or _budget_spent(
                    state.draws + unit, max_draws, time.perf_counter() - start, time_limit
                )
                if stop_reason is not None:
                    break
                # 2. Step, with the draws the budget leaves.
                remaining = None if max_draws is None else max_draws - state.draws
                state, info = sampler.step(self.rng, state, remaining, deadline)
                history.append(info)
                # 3. Hand on the step's samples (a streaming sampler's), never more than count in all.
                if streaming:
                    chunk = sampler.new_samples(state)[: count - delivered]
                    if len(chunk):
                        delivered += len(chunk)
                        yield chunk
                # 4. Show how far the run is.
                done, total, note = sampler.progress(state, count)
                bar.update(task, completed=done, total=total, note=note)
        # 5. The sampler builds its result; the driver counts what it handed on.
        result = sampler.finish(state, count, stop_reason, time.perf_counter() - start, tuple(history))
        if streaming:
            self.result = replace(result, streamed=delivered)
        else:
            self.result = result
            if len(result.population):
                yield result.population


iter_samples = SampleStream  # the streaming driver's name: ``for chunk in iter_samples(sampler, rng, count): ...``


def _check_held(sampler: Sampler, count: int, max_draws: int | None) -> None:
    """Refuse a run whose ``count`` samples would not fit in memory (the draws cap how many there can be)."""
    held = count if max_draws is None else min(count, max_draws)
    check_memory(sampler.arch.num_params(), held, f"count = {held:,} networks", fix="lower count or the widths")


def _budget_spent(
    draws_after_a_trial: int, max_draws: int | None, elapsed: float, time_limit: float | None
) -> str | None:
    """The budget that one more trial would overrun ("max_draws", "time_limit"), or None."""
    if max_draws is not None and draws_after_a_trial > max_draws:
        return "max_draws"
    if time_limit is not None and elapsed >= time_limit:
        return "time_limit"
    return None
