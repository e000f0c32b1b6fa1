"""Sequential Monte Carlo over the training examples: typical interpolators beyond Guess & Check.

The targets are pi_t(theta) ~ prior(theta) * 1{theta classifies examples 1..t correctly}, t = 0..n
(examples enter in blocks). Starting from N prior draws, each step

1. scores the block being added: each particle's mistakes on it (f = 0 is a mistake);
2. tempers where the block is hard to survive: if fewer than ``target_ess`` of the particles
   classify it, the target becomes prior x 1{earlier examples correct} x exp(-beta x mistakes on
   the block), with beta raised step by step so that the incremental weights exp(-(beta' - beta) x
   mistakes) keep an effective sample size of ``target_ess`` x N, until the block can be made hard
   (adaptive tempered SMC within data tempering). A block that kills most particles then costs more
   steps, not the run; one still unsurvivable at beta = BETA_HARD ends the run as "degenerate";
3. adds ln of the mean incremental weight to the estimate of ln P(L_S = 0), the log prior mass of
   the version space (the product of the mean weights is an unbiased estimate of P(L_S = 0));
4. resamples N particles in proportion to the weights (uniformly among the survivors of a hard block);
5. rejuvenates with MCMC moves that leave the current target invariant, until the particles have
   mixed (``_rejuvenate``): at least ``min_moves`` sweeps, and the correlation across particles of
   a statistic of the function (the mean normalized output f / scale on a few fixed training inputs)
   before and after the moves at most ``decorrelation`` -- the rule for when the moves are enough,
   since acceptance alone says nothing about how far particles travel (a chain started at one
   solution of a narrow version space can look settled long before it has mixed); for quantized
   priors also ``refresh`` accepted re-draws per parameter and ``target_unique`` distinct particles;
   at most ``max_moves`` sweeps. ``SMCInfo`` records the acceptance, the distinct particles and that
   correlation for every step.
   - quantized priors: re-draw k randomly chosen parameters from the prior, a Metropolis-Hastings
     move whose ratio (an independent prior proposal under a flat prior) is the likelihood ratio:
     the indicator for a hard block, exp(-beta x change in mistakes) times it while tempering. k
     adapts between sweeps (halved below 20% acceptance, doubled above 50%). One-hidden-layer FCN
     particles keep their activations cached (``FCNCache``) on hard blocks and, on the CPU, move in
     the native kernel: one parameter at a time to a uniformly chosen other level (a symmetric
     proposal, so the acceptance ratio is again the indicator), in rounds of 1/8 sweep;
   - Gaussian and uniform priors: slice moves of one group of parameters at a time (a hidden
     layer's weight and bias, a scale, the head, a diagonal factor; ``slice_moves``), alternating
     ellipses fitted to the particle cloud (the particles split in halves by ancestry, each half
     moving along Gaussians fitted to the other as the step's moves begin, so that no kernel
     depends on the particle it moves or a copy of it) with the prior's own: elliptical slice
     sampling, for uniform priors in z-space (theta = a (2 Phi(z) - 1), z ~ N(0, I)). The layers
     below the group are computed once per move; under a Gaussian prior a hidden layer's
     pre-activations are linear in its weights, so their images are too and a shrink costs only
     the layers above, and a head's or a factor's feasible arc is found exactly. The particles are
     float64, and so are the samples these priors return.

A run stopped by a budget returns what it has: no samples (its particles classify only the
examples in so far), how many examples are in, and the estimate of ln P for those.

References: Del Moral, Doucet & Jasra, "Sequential Monte Carlo samplers", JRSS B 2006; Chopin,
"A sequential particle filter method for static models", Biometrika 2002 (data tempering).
The final particles (after all n examples) are approximate draws from the posterior; the tests
check them against the enumerated posterior of a tiny network and against Guess & Check.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import NamedTuple

import torch

from typicalnets import native
from typicalnets.certificate import TIE, certified_interpolates, check_float32_range, forward_with_scale
from typicalnets.data import Dataset, class_interleaved_order
from typicalnets.errors import TypicalnetsError
from typicalnets.native.abi import Activation
from typicalnets.nets import FCN, Architecture, Population
from typicalnets.nets.base import ACTIVATIONS
from typicalnets.nets.population import split_flat
from typicalnets.priors import Gaussian, Prior, QuantizedUniform, Uniform
from typicalnets.resources import check_device, check_memory
from typicalnets.samplers.base import SampleResult, accepted_result, sample
from typicalnets.samplers.slice_moves import CloudGaussian, Clouds, Target, group_move, move_groups, to_weights
from typicalnets.stats import mean_t_interval

DEFAULT_PARTICLES = 1000
DEFAULT_MAX_MOVES = 100  # MCMC sweeps per step at most
# The native moves run in rounds of 1/8 sweep (n_params / 8 proposals per particle), so the adaptive
# stop rule is checked often without paying a call per proposal.
NATIVE_ROUNDS_PER_SWEEP = 8
DEFAULT_TARGET_ESS = 0.25  # a block that leaves fewer survivors than this fraction of N is tempered
DEFAULT_DECORRELATION = 0.5  # moves go on until the mixing statistic's correlation with its start is this low
# A block still tempered at this beta (a mistake then weighs e^-30 ~ 1e-13) is made hard at once: the
# particles that classify it survive, and if none does the run is degenerate, so every block ends.
BETA_HARD = 30.0
MISTAKE_CHUNK = 256  # particles per float64 forward (mistakes, the mixing statistic)
PROBE_EXAMPLES = 8  # inputs the mixing statistic evaluates each particle on


class SMCState(NamedTuple):
    """Where a run stands. ``step`` returns a new state and leaves what this one holds as it was: it
    writes the new block's rows of ``cache`` (rows ``seen`` onwards, which this state never reads) in
    place, then resamples into a fresh copy that the moves update. So an old state may be stepped
    again, with the same result for the same ``rng``."""

    flat: torch.Tensor | None  # (N, P) particle parameters (float64 for continuous priors), None before the first step
    seen: int  # training examples incorporated so far
    log_prob: float  # running estimate of ln P(L_S = 0) over the seen examples
    draws: int  # network evaluations (on all seen examples) spent so far
    accepted: Population  # the final particles once every example is in, else empty
    degenerate: bool  # no particle survived a block: sampling failed
    coordinates: int  # parameters one move re-draws: adapted to the move acceptance as the run goes
    cache: FCNCache | None = None  # cached activations (one-hidden-layer FCNs with quantized priors)
    beta: float = 0.0  # tempering of the block being added (0: none yet, between blocks)
    log_prob_seen: float = 0.0  # the estimate of ln P(examples 0..seen-1 correct), without the block's tempering


class SMCInfo(NamedTuple):
    seen: int  # examples incorporated after this step (a tempered step adds none until its block is hard)
    survival: float  # fraction of particles that classified the new block
    ess: int  # effective sample size after reweighting (0/1 weights: the survivors)
    unique: int  # distinct particles after the moves
    move_acceptance: float  # mean acceptance of this step's MCMC moves
    moves: int  # MCMC sweeps this step
    beta: float = math.inf  # the block's tempering after this step (inf: the hard constraint)
    correlation: float = math.nan  # of the mixing statistic before and after the moves (see _rejuvenate)


class SequentialMonteCarlo:
    """Data-tempered SMC for the prior conditioned on zero training error."""

    name = "smc"
    draws_per_trial = 1

    def __init__(
        self,
        arch: Architecture,
        prior: Prior,
        train: Dataset,
        particles: int = DEFAULT_PARTICLES,
        block: int = 1,
        coordinates: int | None = None,
        min_moves: int = 2,
        max_moves: int = DEFAULT_MAX_MOVES,
        target_unique: float = 0.5,
        refresh: float = 1.0,
        target_ess: float = DEFAULT_TARGET_ESS,
        decorrelation: float = DEFAULT_DECORRELATION,
        device: torch.device | str = "cpu",
    ):
        arch.check_input(train.x)
        if (
            particles < 2
            or block < 1
            or (coordinates is not None and coordinates < 1)
            or not 0 <= min_moves <= max_moves
        ):
            raise TypicalnetsError(
                "SMC needs particles >= 2, block >= 1, coordinates >= 1 and 0 <= min moves <= max moves; raise the "
                "one that is too small"
            )
        if not (0 < target_ess < 1 and 0 < decorrelation <= 1):
            raise TypicalnetsError(
                f"SMC needs 0 < target_ess < 1 and 0 < decorrelation <= 1, got {target_ess} and {decorrelation}; "
                f"use e.g. {DEFAULT_TARGET_ESS} and {DEFAULT_DECORRELATION}"
            )
        if not isinstance(prior, (QuantizedUniform, Gaussian, Uniform)):
            raise TypicalnetsError(f"SMC has no move for prior {prior!r}; use quantized, uniform or gaussian")
        device = check_device(device)
        check_float32_range(arch, prior, train.x)
        # The particles, their proposals and (one-hidden-layer FCNs) cached float64 activations.
        check_memory(
            arch.num_params(),
            int(particles),
            f"particles = {int(particles):,}",
            copies=4,
            fix="lower particles or the widths",
        )
        self.arch, self.prior, self.particles, self.block = arch, prior, int(particles), int(block)
        self.min_moves, self.max_moves = int(min_moves), int(max_moves)
        self.target_unique, self.refresh = target_unique, refresh
        self.target_ess, self.decorrelation = float(target_ess), float(decorrelation)
        order = class_interleaved_order(train.y)
        self.x, self.y = train.x[order].to(device), train.y[order].to(device)
        self.n_params = arch.num_params()
        self.initial_coordinates = int(coordinates) if coordinates else max(1, self.n_params // 50)
        # One-hidden-layer FCNs with quantized priors cache activations: a move costs O(examples).
        self.cached = isinstance(arch, FCN) and arch.depth == 2 and isinstance(prior, QuantizedUniform)
        self.x64 = self.x.double()
        # The native moves read the inputs as (d, n) float32 rows (exact: a Dataset's inputs are float32) and
        # the labels as float64 (converting int8 labels in the check measured half its time).
        self.xt32, self.y64 = self.x.reshape(len(self.x), -1).T.contiguous(), self.y.double().contiguous()
        # The mixing statistic looks at functions, not weights (a rescaled network computes the same
        # signs): each particle's mean normalized output f / scale on the last examples of the order.
        self.probe = self.x64[-PROBE_EXAMPLES:]
        self.groups = move_groups(arch)

    # -- parameters: one flat (N, P) tensor -----------------------------------------------------------
    def _draw(self, rng: torch.Generator, count: int) -> torch.Tensor:
        # Continuous priors' particles are float64, so the slice moves decide on exactly what they
        # store; a uniform prior's are z ~ N(0, I) (slice_moves.to_weights).
        if isinstance(self.prior, QuantizedUniform):
            return self.prior.sample((count, self.n_params), rng, device=self.x.device)
        if isinstance(self.prior, Uniform):
            return torch.randn(count, self.n_params, generator=rng, device=rng.device, dtype=torch.float64).to(
                self.x.device
            )
        return self.prior.sample((count, self.n_params), rng, dtype=torch.float64, device=self.x.device)

    def _population(self, flat: torch.Tensor) -> Population:
        weights = flat if isinstance(self.prior, QuantizedUniform) else to_weights(self.prior, flat)
        return Population(self.arch, self.prior, split_flat(self.arch, weights))

    def _satisfies(self, flat: torch.Tensor, seen: int) -> torch.Tensor:
        """Does each particle classify examples 0..seen-1 correctly? (certified, f = 0 a mistake)."""
        if seen == 0:
            return torch.ones(len(flat), dtype=torch.bool, device=flat.device)
        return certified_interpolates(self._population(flat), self.x[:seen], self.y[:seen])

    def init(self, rng: torch.Generator | None = None) -> SMCState:
        """The state before any example; ``rng`` is unused (the first step draws the particles)."""
        empty = Population.empty(self.arch, self.prior, device=self.x.device)
        return SMCState(None, 0, 0.0, 0, empty, False, self.initial_coordinates)

    def stopped(self, state: SMCState, count: int) -> str | None:
        """Why the run is over: "degenerate" once no particle survived a block, "count" once every
        example is in."""
        if state.degenerate:
            return "degenerate"
        return "count" if state.seen == len(self.y) else None

    def progress(self, state: SMCState, count: int) -> tuple[int, int, str]:
        """(examples incorporated, training examples, draws): what the driver's progress bar shows."""
        return state.seen, len(self.y), f"{state.draws:,} draws"

    def finish(
        self, state: SMCState, count: int, stop_reason: str, seconds: float, history: tuple[SMCInfo, ...]
    ) -> SampleResult:
        """The final particles (the first ``count``) and the run's estimate of ln P(L_S = 0). A run
        stopped by a budget before the last example has no samples (its particles classify only the
        examples in so far) and no estimate for the whole training set: it reports how many examples
        are in and the estimate of ln P for those."""
        if stop_reason in ("count", "degenerate"):
            how_far = {"log_prob_estimate": state.log_prob}
        else:
            how_far = {"log_prob_estimate": math.nan, "examples_reached": state.seen}
            how_far["log_prob_reached"] = state.log_prob_seen
        return accepted_result(self, state, count, stop_reason, seconds, history, **how_far)

    def step(
        self, rng: torch.Generator, state: SMCState, max_draws: int | None = None, deadline: float | None = None
    ) -> tuple[SMCState, SMCInfo]:
        """Add the next block of examples (the first step draws the particles), or, where the hard
        constraint would leave fewer than ``target_ess`` of the particles, temper it: the target
        becomes prior x 1{earlier examples correct} x exp(-beta x mistakes on the block), with beta
        raised by the ESS criterion until the block can be made hard. A step evaluates every
        particle, so it does not consult ``max_draws`` (the last step may overrun the budget); one
        whose moves pass ``deadline`` (a ``time.perf_counter()``) stops them and returns the state
        it was given, with the draws spent added, so a run ends on time without samples that have
        not mixed. ``state.cache`` gains the block's rows in place (see ``SMCState``)."""
        flat, draws, cache = state.flat, state.draws, state.cache
        if flat is None:
            flat, draws = self._draw(rng, self.particles), self.particles
            cache = FCNCache.empty(self.arch, len(flat), len(self.y), flat.device) if self.cached else None
        target = min(len(self.y), state.seen + self.block)
        # 1. Score the block: each particle's mistakes on the examples being added.
        if cache is not None and state.beta == 0.0:
            cache.extend(self.arch, flat, self.x64, state.seen, target)
        mistakes = self._mistakes(flat, state.seen, target, cache)
        draws += len(flat)
        survival = float((mistakes == 0).double().mean())
        # 2. Temper: the hard constraint where it keeps target_ess of the particles, else the beta whose
        #    incremental weights exp(-(beta' - beta) mistakes) have that effective sample size.
        beta, log_weights = next_temperature(mistakes, state.beta, self.target_ess)
        shift = float(log_weights.max())
        if shift == -math.inf:
            info = SMCInfo(state.seen, 0.0, 0, 0, 0.0, 0, beta)
            return state._replace(flat=flat, log_prob=-math.inf, draws=draws, degenerate=True, cache=cache), info
        weights = torch.exp(log_weights - shift)  # shifted so that the largest is 1: no underflow
        # 3. The mean incremental weight estimates the ratio of consecutive normalizing constants.
        log_prob = state.log_prob + shift + math.log(float(weights.mean()))
        # 4. Resample: uniformly among the survivors of a hard block, else in proportion to the weights.
        if math.isinf(beta):
            survivors = torch.nonzero(weights).flatten()
            picked = torch.randint(len(survivors), (self.particles,), generator=rng, device=rng.device)
            pick = survivors[picked.to(flat.device)]
        else:
            pick = torch.multinomial(weights.to(rng.device), self.particles, replacement=True, generator=rng)
            pick = pick.to(flat.device)
        flat, mistakes = flat[pick], mistakes[pick]
        if cache is not None:
            cache = cache.take(pick)
        ess = int(round(float(weights.sum()) ** 2 / float((weights**2).sum())))
        # 5. Rejuvenate under the new target until the particles have mixed (or max_moves sweeps).
        moved = self._rejuvenate(
            rng, flat, state.seen, target, beta, mistakes, state.coordinates, cache, deadline, ancestors=pick
        )
        flat, acceptance, moves, evaluations, coordinates, correlation = moved
        draws += evaluations
        if flat is None:  # the deadline passed during the moves
            info = SMCInfo(state.seen, survival, ess, 0, acceptance, moves, state.beta or math.inf, correlation)
            return state._replace(draws=draws), info
        seen, beta = (target, 0.0) if math.isinf(beta) else (state.seen, beta)
        done = seen == len(self.y)
        accepted = self._population(flat) if done else state.accepted
        # Cached activations (quantized FCNs) and slice moves (continuous priors) decide in float64 by
        # the certificate's tie rule; the certificate itself has the last word on every final particle.
        if done and not bool(certified_interpolates(accepted, self.x, self.y).all()):
            raise RuntimeError("SMC's float64 decisions disagree with the certificate; please report this")
        reached = math.inf if beta == 0.0 else beta
        info = SMCInfo(seen, survival, ess, _unique(flat), acceptance, moves, reached, correlation)
        log_prob_seen = log_prob if beta == 0.0 else state.log_prob_seen
        return SMCState(flat, seen, log_prob, draws, accepted, False, coordinates, cache, beta, log_prob_seen), info

    def _scaled_outputs(self, flat: torch.Tensor, x: torch.Tensor, dtype: torch.dtype = torch.float64):
        """Each particle's outputs f and scales on ``x`` in ``dtype``, as (f, scale) per chunk of particles."""
        x = x.to(dtype)
        for begin in range(0, len(flat), MISTAKE_CHUNK):
            population = self._population(flat[begin : begin + MISTAKE_CHUNK])
            yield forward_with_scale(self.arch, {k: v.to(dtype) for k, v in population.params.items()}, x)

    def _mistakes(self, flat: torch.Tensor, start: int, stop: int, cache: FCNCache | None = None) -> torch.Tensor:
        """Each particle's mistakes on examples start..stop-1 (float64 with the tie rule: y f <= TIE x
        scale is a mistake, as in ``certified_interpolates``)."""
        if cache is not None:
            return cache.mistakes(self.y, start, stop)
        y = self.y[start:stop].double()
        return torch.cat(
            [(y * f <= TIE * scale).sum(dim=1) for f, scale in self._scaled_outputs(flat, self.x64[start:stop])]
        )

    def _statistic(self, flat: torch.Tensor) -> torch.Tensor:
        """Each particle's mean normalized output f / scale (in [-1, 1]) over the probe inputs, (N, 1),
        in the particles' own precision: a diagnostic decides no example, and converting quantized
        particles to float64 at every round measured 14% of the reach task's time."""
        tiny = torch.finfo(flat.dtype).tiny
        chunks = self._scaled_outputs(flat, self.probe, flat.dtype)
        return torch.cat([(f / scale.clamp_min(tiny)).mean(dim=1, keepdim=True) for f, scale in chunks])

    def _rejuvenate(
        self,
        rng: torch.Generator,
        flat: torch.Tensor,
        seen: int,
        target: int,
        beta: float,
        mistakes: torch.Tensor,
        coordinates: int,
        cache: FCNCache | None = None,
        deadline: float | None = None,
        ancestors: torch.Tensor | None = None,
    ):
        """MCMC moves that leave prior x 1{examples 0..seen-1 correct} x exp(-beta x mistakes on
        seen..target-1) invariant (beta = inf: every example up to target correct), until the
        particles have mixed: at least ``min_moves`` sweeps, ``refresh`` accepted re-draws per
        parameter and ``target_unique`` distinct particles (quantized priors), and the correlation,
        across particles, of the mixing statistic (``_statistic``) before and after the moves at most
        ``decorrelation``; at most ``max_moves`` sweeps. Returns the moved
        particles, the mean move acceptance, the sweeps, their cost in network evaluations, the
        adapted ``coordinates`` and that final correlation; the particles are None where the moves
        passed ``deadline``. ``flat`` is the step's own resampled copy: the native moves change it
        in place."""
        hard = math.isinf(beta)
        refreshed = torch.zeros(len(flat), device=flat.device)  # accepted re-drawn parameters per particle
        total, moves, evaluations = 0.0, 0, 0
        quantized = isinstance(self.prior, QuantizedUniform)
        # The cached moves keep every example up to target correct: hard blocks only.
        cached = cache is not None and hard
        kernel = native.load() if cached and flat.device.type == "cpu" else None
        proposals = max(1, self.n_params // NATIVE_ROUNDS_PER_SWEEP)
        start = self._statistic(flat)
        correlation = 1.0
        constraint = Constraint(self, seen, target, beta)
        if not quantized:
            halves = self._halves(rng, ancestors, len(flat), flat.device)
            clouds = self._fit_clouds(flat, halves)
        while moves < self.max_moves:
            if (
                moves >= self.min_moves
                and float(refreshed.mean()) >= self.refresh * self.n_params
                and correlation <= self.decorrelation
                and (not quantized or _unique(flat) >= self.target_unique * len(flat))
            ):
                break
            if kernel is not None:
                moved = cache.native_moves(
                    kernel, self.arch, self.prior, rng, flat, self.xt32, self.y64, target, proposals
                )
                refreshed += moved
                moved = moved / proposals
                cost = len(flat) * proposals // self.n_params  # in whole-network evaluations
            elif cached:
                # Alternate single-parameter moves (any parameter) with moves of k input weights of one
                # hidden unit; k adapts like the uncached block size.
                if moves % 2 == 0:
                    flat, moved = cache.coordinate_move(self.arch, self.prior, rng, flat, self.x64, self.y, target)
                else:
                    flat, moved = cache.unit_move(
                        self.arch, self.prior, rng, flat, self.x64, self.y, target, coordinates
                    )
                    coordinates = _adapt(coordinates, float((moved > 0).double().mean()), self.arch.in_dim)
                refreshed += moved
                moved = (moved > 0).double()
                cost = len(flat)
            elif quantized:
                flat, mistakes, moved, cost = self._coordinate_move(rng, flat, mistakes, constraint, coordinates)
                refreshed += moved * coordinates
                coordinates = _adapt(coordinates, float(moved.mean()), self.n_params)
            else:  # slice moves, one group of parameters at a time, alternating fitted and prior curves
                fitted = clouds if moves % 2 == 0 else None
                flat, mistakes, moved, cost = self._slice_sweep(rng, flat, mistakes, constraint, halves, fitted)
                refreshed += moved
                moved = moved / self.n_params
            total += float(moved.mean())
            moves += 1
            evaluations += cost
            if deadline is not None and time.perf_counter() > deadline:
                return None, total / moves, moves, evaluations, coordinates, correlation
            correlation = _correlation(start, self._statistic(flat))
        if cache is not None and not cached:  # moved without the cache: recompute its rows
            cache.extend(self.arch, flat, self.x64, 0, target)
        return flat, (total / moves if moves else 0.0), moves, evaluations, coordinates, correlation

    def _halves(self, rng: torch.Generator, ancestors: torch.Tensor | None, count: int, device):
        """The particles in two halves by ancestry: every copy of a resampled particle falls in the
        same half, so neither half holds a copy of a particle of the other."""
        if ancestors is None:
            ancestors = torch.arange(count, device=device)
        side = torch.randint(2, (self.particles,), generator=rng, device=rng.device).to(device)[ancestors]
        return torch.nonzero(side == 0).flatten(), torch.nonzero(side == 1).flatten()

    def _fit_clouds(self, flat: torch.Tensor, halves) -> list[tuple[CloudGaussian | None, CloudGaussian | None]]:
        """Per group, the Gaussians each half's fitted ellipses follow: fitted to the other half as
        the moves start, and kept for every sweep of the step."""
        clouds = []
        for group in self.groups:
            columns = group.columns.to(flat.device)
            fits = [CloudGaussian.fit(flat[other][:, columns]) if len(other) > 1 else None for other in halves[::-1]]
            clouds.append(tuple(fits))
        return clouds

    def _slice_sweep(self, rng: torch.Generator, flat, mistakes, constraint: Constraint, halves, clouds):
        """One slice move of every group (``slice_moves``), along ellipses fitted to the other half
        of the particles (``clouds``, from ``_fit_clouds``) or the prior's own (None). A half's
        Gaussian comes from the other half as the step's moves began, and the halves split the
        particles by ancestry, so no particle's kernel depends on its own position or a copy of it
        and each move leaves the target invariant. (A fit to all particles, or to the other half
        anew at every sweep, measurably biased the posterior: after a tempered step the fraction
        of particles classifying its example fell from the target's 0.64 to 0.28-0.47 on LeNet.)
        Returns the particles, block mistakes, re-drawn parameters per particle and the
        evaluations spent."""
        target = Target(self.x64[: constraint.target], self.y[: constraint.target], constraint.seen, constraint.beta)
        refreshed, cost = torch.zeros(len(flat), device=flat.device), 0
        for index, group in enumerate(self.groups):
            for moving, fits in self._batches(halves, None if clouds is None else clouds[index]):
                step = group_move(rng, self.arch, self.prior, flat[moving], mistakes[moving], target, group, fits)
                flat[moving], mistakes[moving] = step[0], step[1]
                refreshed[moving] += step[2] * len(group.columns)
                cost += step[3]
        return flat, mistakes, refreshed, cost

    @staticmethod
    def _batches(halves, fits):
        """(particles, their Clouds or None) to move in one call each: every particle on the prior's
        ellipses, both halves at once where each has its fit, else each half apart (a half whose
        other half has no spread moves on the prior's ellipses)."""
        if fits is None:
            return [(torch.cat(halves), None)]
        if all(fit is not None for fit in fits):
            which = torch.cat([torch.full((len(half),), side, device=half.device) for side, half in enumerate(halves)])
            return [(torch.cat(halves), Clouds(tuple(fits), which))]
        return [(half, None if fit is None else Clouds.one(fit, len(half))) for half, fit in zip(halves, fits)]

    def _coordinate_move(
        self, rng: torch.Generator, flat: torch.Tensor, mistakes: torch.Tensor, constraint: Constraint, coordinates: int
    ):
        """Re-draw ``coordinates`` random parameters of every particle from the prior, a Metropolis-Hastings
        move whose ratio (prior proposal, flat prior) is the constraint's likelihood ratio."""
        count = len(flat)
        index = torch.randint(self.n_params, (count, coordinates), generator=rng, device=rng.device)
        values = self.prior.sample((count, coordinates), rng).to(flat.dtype)
        proposal = flat.clone()
        proposal.scatter_(1, index.to(flat.device), values.to(flat.device))
        ok, proposed = constraint.evaluate(proposal)
        if not constraint.hard:
            log_u = torch.rand(count, generator=rng, device=rng.device, dtype=torch.float64).log().to(flat.device)
            ok &= log_u < -constraint.beta * (proposed - mistakes).double()
        keep = ok.unsqueeze(1)
        return torch.where(keep, proposal, flat), torch.where(ok, proposed, mistakes), ok.float(), count


class Constraint(NamedTuple):
    """What a move must respect: examples 0..seen-1 classified correctly, and the block
    seen..target-1 weighed by exp(-beta x mistakes) (beta = inf: classified correctly too)."""

    sampler: SequentialMonteCarlo
    seen: int
    target: int
    beta: float

    @property
    def hard(self) -> bool:
        return math.isinf(self.beta)

    def evaluate(self, proposal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(whether each proposal respects the hard part, its mistakes on the tempered block)."""
        if self.hard:
            return self.sampler._satisfies(proposal, self.target), torch.zeros(
                len(proposal), dtype=torch.int64, device=proposal.device
            )
        return self.sampler._satisfies(proposal, self.seen), self.sampler._mistakes(proposal, self.seen, self.target)


def next_temperature(mistakes: torch.Tensor, beta: float, target_ess: float) -> tuple[float, torch.Tensor]:
    """The block's next beta and the log incremental weights -(beta' - beta) x mistakes to it.

    beta' = inf (weights 1{no mistake}) where that keeps an effective sample size (sum w)^2 / sum w^2
    of at least ``target_ess`` x N, or once beta reaches BETA_HARD; else the beta' whose weights have
    exactly that ESS, found by bisection (the ESS falls as beta' rises), as adaptive tempered SMC
    chooses its next temperature (Jasra, Stephens, Doucet & Tsagaris, Scand. J. Stat. 2011). Where
    the particles' mistakes hardly differ, no beta' below BETA_HARD lowers the ESS that far: beta then
    becomes 1 so that the moves at it can create the differences, and if they do not, the block is
    made hard at the next step (a block no particle can learn, such as a copy of an example with the
    other label, then ends the run in two steps instead of a climb to BETA_HARD)."""
    count = mistakes.double()
    hard = count == 0
    if float(hard.double().mean()) >= target_ess or beta >= BETA_HARD:
        return math.inf, torch.where(hard, 0.0, -math.inf)

    def ess(delta: float) -> float:
        weights = torch.exp(-delta * (count - count.min()))  # shifted: the same ESS, no underflow
        return float(weights.sum()) ** 2 / float((weights**2).sum()) / len(count)

    top = BETA_HARD - beta
    if ess(top) > target_ess:
        delta = 1.0 if beta == 0.0 else top
    else:
        low, delta = 0.0, top
        for _ in range(60):  # to ~1e-17 of BETA_HARD: the ESS is then target_ess up to rounding
            middle = (low + delta) / 2
            low, delta = (middle, delta) if ess(middle) > target_ess else (low, middle)
    return beta + delta, -delta * count


def _adapt(coordinates: int, rate: float, most: int) -> int:
    """Parameters per move: halved below 20% acceptance, doubled above 50%."""
    if rate < 0.2:
        return max(1, coordinates // 2)
    return min(most, coordinates * 2) if rate > 0.5 else coordinates


def _correlation(before: torch.Tensor, after: torch.Tensor) -> float:
    """The largest Pearson correlation across particles of a statistic's columns (N, k) before and
    after the moves; a column without spread on either side counts as 1 (the particles have not
    mixed, or all started from one point)."""
    before, after = before - before.mean(0), after - after.mean(0)
    spread = before.norm(dim=0) * after.norm(dim=0)
    correlation = torch.where(spread > 0, (before * after).sum(0) / spread.clamp_min(1e-300), 1.0)
    return float(correlation.max())


class FCNCache:
    """Hidden pre-activations Z (N, h, n), outputs F (N, n) and output scales S (N, n) = sum_j
    |w2_j s_j h_j| + |b2| of one-hidden-layer FCN particles, in float64.

    Rows for new examples are computed from the parameters; a one-parameter move then updates
    one column of Z and F in O(examples). Decisions use the certified rule: correct iff
    y f > TIE * scale (so exact ties are mistakes).
    """

    def __init__(self, z: torch.Tensor, f: torch.Tensor, scale: torch.Tensor):
        self.z, self.f, self.scale = z, f, scale

    @classmethod
    def empty(cls, arch: FCN, particles: int, examples: int, device) -> FCNCache:
        z = torch.zeros(particles, arch.hidden[0], examples, dtype=torch.float64, device=device)
        return cls(z, torch.zeros(particles, examples, dtype=torch.float64, device=device), torch.zeros_like(z[:, 0]))

    @staticmethod
    def layout(arch: FCN) -> dict[str, int]:
        """Offsets of w1, b1, s1, w2, b2 in the flat parameter vector (-1 where absent)."""
        offsets, start = {}, 0
        for name, shape in arch.param_shapes().items():
            offsets[name] = start
            start += math.prod(shape)
        return {k: offsets.get(k, -1) for k in ("w1", "b1", "s1", "w2", "b2")}

    def extend(self, arch: FCN, flat: torch.Tensor, x: torch.Tensor, start: int, stop: int) -> None:
        """Compute the rows of examples start..stop-1 from the parameters."""
        params = {k: v.double() for k, v in split_flat(arch, flat).items()}
        z = torch.matmul(x[start:stop], params["w1"].transpose(1, 2))
        if arch.bias:
            z = z + params["b1"].unsqueeze(1)
        self.z[:, :, start:stop] = z.transpose(1, 2)
        terms = self._terms(arch, params, z)
        b2 = params["b2"][:, :1] if arch.bias else torch.zeros_like(terms[..., 0])
        self.f[:, start:stop] = terms.sum(-1) + b2
        self.scale[:, start:stop] = terms.abs().sum(-1) + b2.abs()

    @staticmethod
    def _terms(arch: FCN, params, z):
        h = ACTIVATIONS[arch.activation](z)
        if arch.scaled:
            h = h * params["s1"].unsqueeze(1)
        return h * params["w2"][:, 0].unsqueeze(1)

    def mistakes(self, y: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        margin = y[start:stop].double() * self.f[:, start:stop]
        return (margin <= TIE * self.scale[:, start:stop]).sum(dim=1)

    def take(self, index: torch.Tensor) -> FCNCache:
        return FCNCache(self.z[index], self.f[index], self.scale[index])

    def coordinate_move(
        self,
        arch: FCN,
        prior: QuantizedUniform,
        rng: torch.Generator,
        flat: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        seen: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-draw one random parameter of each particle from the prior; keep it iff every seen example
        stays correct (a Metropolis-Hastings move whose ratio is the indicator). Costs O(N * seen).
        Returns the new parameters and 1.0 where a move was kept."""
        count, width, dim = len(flat), arch.hidden[0], arch.in_dim
        at = self.layout(arch)
        rows = torch.arange(count, device=flat.device)
        # Half the moves pick among the parameters after w1 (biases, scales, readout), which change the
        # function most; the choice does not depend on the state, so each move stays valid.
        first_tail = width * dim
        anywhere = torch.randint(flat.shape[1], (count,), generator=rng, device=rng.device)
        tail = first_tail + torch.randint(flat.shape[1] - first_tail, (count,), generator=rng, device=rng.device)
        pick_tail = torch.rand(count, generator=rng, device=rng.device) < 0.5
        c = torch.where(pick_tail, tail, anywhere).to(flat.device)
        new = prior.sample((count,), rng).to(flat.device).double()
        delta = new - flat[rows, c].double()
        in_w1 = c < at["b1"] if arch.bias else c < at["w2"] - (width if arch.scaled else 0)
        in_b1 = (c >= at["b1"]) & (c < at["b1"] + width) if arch.bias else torch.zeros_like(in_w1)
        in_s1 = (c >= at["s1"]) & (c < at["s1"] + width) if arch.scaled else torch.zeros_like(in_w1)
        in_w2 = (c >= at["w2"]) & (c < at["w2"] + width)
        in_b2 = (c == at["b2"]) if arch.bias else torch.zeros_like(in_w1)
        unit = torch.where(
            in_w1,
            c // dim,
            torch.where(
                in_b1,
                c - at["b1"],
                torch.where(in_s1, c - at["s1"], torch.where(in_w2, c - at["w2"], torch.zeros_like(c))),
            ),
        )
        feature = torch.where(in_w1, c % dim, torch.zeros_like(c))
        z_old = self.z[rows, unit, :seen]  # (N, seen)
        step = torch.where(in_w1.unsqueeze(1), x[:seen, feature].T, torch.ones_like(z_old))
        z_new = z_old + (delta * (in_w1 | in_b1)).unsqueeze(1) * step
        scale_j = flat[rows, at["s1"] + unit].double() if arch.scaled else torch.ones_like(delta)
        w2_j = flat[rows, at["w2"] + unit].double()
        act = ACTIVATIONS[arch.activation]
        old_term = (w2_j * scale_j).unsqueeze(1) * act(z_old)
        new_term = (torch.where(in_w2, new, w2_j) * torch.where(in_s1, new, scale_j)).unsqueeze(1) * act(z_new)
        b2 = flat[:, at["b2"]].double() if arch.bias else torch.zeros_like(delta)
        b2_new = torch.where(in_b2, new, b2)
        f_new = self.f[:, :seen] + new_term - old_term + (b2_new - b2).unsqueeze(1)
        scale_new = self.scale[:, :seen] + new_term.abs() - old_term.abs() + (b2_new.abs() - b2.abs()).unsqueeze(1)
        keep = (y[:seen].double() * f_new > TIE * scale_new).all(dim=1)
        kept = rows[keep]
        flat = flat.clone()
        flat[kept, c[keep]] = new[keep].to(flat.dtype)
        self.z[kept, unit[keep], :seen] = z_new[keep]
        self.f[kept, :seen] = f_new[keep]
        self.scale[kept, :seen] = scale_new[keep]
        return flat, keep.double()

    def native_moves(
        self,
        kernel,
        arch: FCN,
        prior: QuantizedUniform,
        rng: torch.Generator,
        flat: torch.Tensor,
        xt: torch.Tensor,
        y: torch.Tensor,
        seen: int,
        proposals: int,
        tail_share: float = 0.5,
    ) -> torch.Tensor:
        """``proposals`` single-parameter moves per particle in the native kernel (CPU), of ``flat``
        (contiguous float32) in place: each re-draws one parameter to another level, uniformly (half
        the picks among biases, scales and readout), and keeps it iff every seen example stays
        correct. ``xt`` is the (d, n) float32 transpose of the inputs, ``y`` the float64 labels. Returns
        the accepted moves per particle."""
        kinds = (flat.dtype, xt.dtype, y.dtype) == (torch.float32, torch.float32, torch.float64)
        if not (kinds and flat.is_contiguous() and xt.is_contiguous() and y.is_contiguous()):
            raise ValueError("native_moves takes contiguous float32 particles and inputs, and float64 labels")
        levels = prior.level_tensor(torch.float32)
        accepted = torch.zeros(len(flat), dtype=torch.int64)
        key = int(torch.randint(1 << 62, (1,), generator=rng))
        kernel.fcn1_moves(
            particles=len(flat),
            n_params=flat.shape[1],
            d=arch.in_dim,
            h=arch.hidden[0],
            bias=int(arch.bias),
            scaled=int(arch.scaled),
            act=int(Activation.named(arch.activation)),
            xt=xt.data_ptr(),
            ld=xt.shape[1],
            y=y.data_ptr(),
            seen=seen,
            flat=flat.data_ptr(),
            z=self.z.data_ptr(),
            f=self.f.data_ptr(),
            scale=self.scale.data_ptr(),
            levels=levels.data_ptr(),
            q=len(levels),
            proposals=proposals,
            tail_share=tail_share,
            key=key,
            first_id=0,
            tie=TIE,
            accepted=accepted.data_ptr(),
        )
        return accepted.double()

    def unit_move(
        self,
        arch: FCN,
        prior: QuantizedUniform,
        rng: torch.Generator,
        flat: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        seen: int,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-draw ``k`` distinct input weights of one random hidden unit of each particle from the prior;
        keep them iff every seen example stays correct. Costs O(N * seen * k)."""
        count, width, dim = len(flat), arch.hidden[0], arch.in_dim
        k = min(k, dim)
        at = self.layout(arch)
        rows = torch.arange(count, device=flat.device)
        unit = torch.randint(width, (count,), generator=rng, device=rng.device).to(flat.device)
        inputs = torch.rand(count, dim, generator=rng, device=rng.device).argsort(dim=1)[:, :k].to(flat.device)
        cols = at["w1"] + unit.unsqueeze(1) * dim + inputs  # (N, k)
        new = prior.sample((count, k), rng).to(flat.device).double()
        delta = new - flat.gather(1, cols).double()
        z_old = self.z[rows, unit, :seen]
        z_new = z_old + torch.einsum("nk,tnk->nt", delta, x[:seen][:, inputs])
        scale_j = (
            flat[rows, at["s1"] + unit].double()
            if arch.scaled
            else torch.ones(count, dtype=torch.float64, device=flat.device)
        )
        weight = (flat[rows, at["w2"] + unit].double() * scale_j).unsqueeze(1)
        act = ACTIVATIONS[arch.activation]
        old_term, new_term = weight * act(z_old), weight * act(z_new)
        f_new = self.f[:, :seen] + new_term - old_term
        scale_new = self.scale[:, :seen] + new_term.abs() - old_term.abs()
        keep = (y[:seen].double() * f_new > TIE * scale_new).all(dim=1)
        kept = rows[keep]
        flat = flat.clone()
        flat[kept.unsqueeze(1), cols[keep]] = new[keep].to(flat.dtype)
        self.z[kept, unit[keep], :seen] = z_new[keep]
        self.f[kept, :seen] = f_new[keep]
        self.scale[kept, :seen] = scale_new[keep]
        return flat, keep.double() * k


def _unique(flat: torch.Tensor) -> int:
    return int(torch.unique(flat, dim=0).shape[0])


def sample_smc(
    sampler: SequentialMonteCarlo,
    rng: torch.Generator,
    count: int,
    repeats: int = 1,
    max_draws: int | None = None,
    time_limit: float | None = None,
    progress: bool = True,
) -> SampleResult:
    """Run ``repeats`` independent SMC runs; pool ``count`` samples and estimate ln P(L_S = 0).

    The estimate is the mean of the runs' ln-estimates; its 95% interval is Student's t over the
    runs (needs repeats >= 2). Where a budget stops a run, the runs finished by then give the samples
    and the estimate, and the stopped run says how far it got (``examples_reached``). Samples are
    taken evenly from the runs' final particles. The runs
    share ``sampler``: its adaptive settings live in each run's state, so every run starts alike.
    """
    if repeats < 1:
        raise TypicalnetsError(f"repeats must be >= 1, got {repeats}; give e.g. repeats=4")
    start = time.perf_counter()
    runs: list[SampleResult] = []
    if count > sampler.particles * repeats:
        raise TypicalnetsError(
            f"asked for {count} samples but {repeats} run(s) of {sampler.particles} particles hold fewer; "
            "raise particles or repeats"
        )
    for index in range(repeats):
        left = None if time_limit is None else max(1e-3, time_limit - (time.perf_counter() - start))
        budget = None if max_draws is None else max(1, max_draws - sum(r.draws for r in runs))
        run = sample(sampler, rng, sampler.particles, budget, left, progress, f"smc run {index + 1}/{repeats}")
        runs.append(run)
        if run.stop_reason != "count":
            break
    finished = [r for r in runs if r.stop_reason == "count"]
    estimates = [r.log_prob_interpolate for r in finished]
    complete = len(finished) == repeats
    interval = (math.nan, math.nan)
    if len(finished) >= 2:
        mean, half = mean_t_interval(estimates)
        interval = (mean - half, mean + half)
    # Samples come evenly from the runs asked for; a budget that stops a run keeps the finished runs' shares.
    shares = [count // repeats + (1 if i < count % repeats else 0) for i in range(repeats)]
    pooled = [r.population[:share] for r, share in zip(finished, shares)]
    population = Population.concat(pooled) if pooled else runs[0].population
    stop = "count" if complete else runs[-1].stop_reason
    estimate = sum(estimates) / len(estimates) if finished else runs[-1].log_prob_interpolate
    history = tuple(info._asdict() | {"run": index} for index, r in enumerate(runs) for info in r.history)
    return replace(
        runs[-1],
        population=population,
        requested=count,
        accepted_total=len(population),
        draws=sum(r.draws for r in runs),
        seconds=time.perf_counter() - start,
        stop_reason=stop,
        log_prob_estimate=estimate,
        log_prob_estimate_ci=interval,
        history=history,
    )
