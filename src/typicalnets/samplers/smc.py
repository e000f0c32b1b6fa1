"""Sequential Monte Carlo over the training examples: typical interpolators beyond Guess & Check.

The targets are pi_t(theta) ~ prior(theta) * 1{theta classifies examples 1..t correctly}, t = 0..n
(examples enter in blocks). Starting from N prior draws, each step

1. reweights: a particle keeps weight 1 iff it classifies the block's examples (f = 0 is a mistake);
2. records the surviving fraction s_t, so that sum_t ln s_t estimates ln P(L_S = 0), the log prior
   mass of the version space (its exponential is an unbiased estimate of P(L_S = 0));
3. resamples N particles uniformly among the survivors (multinomial);
4. rejuvenates with MCMC moves that leave pi_t invariant, until the particles are diverse enough:
   - quantized priors: re-draw k randomly chosen parameters from the prior; accept iff the
     network still classifies every example seen so far (the Metropolis-Hastings ratio of this
     independent prior proposal under a flat prior times an indicator is the indicator itself).
     k adapts between sweeps (halved below 20% acceptance, doubled above 50%), and sweeps go on
     until the accepted re-draws per particle reach ``refresh`` times the parameter count and
     ``target_unique`` of the particles are distinct (at least ``min_moves``, at most ``max_moves``).
     One-hidden-layer FCN particles keep their activations cached (``FCNCache``) and, on the
     CPU, move in the native kernel: one parameter at a time to a uniformly chosen other level
     (a symmetric proposal, so the acceptance ratio is again the indicator), in rounds of 1/8
     sweep until the accepted moves per particle reach ``refresh`` sweeps;
   - Gaussian priors: elliptical slice sampling (Murray, Adams & MacKay, AISTATS 2010) with the
     indicator as likelihood, so every slice is the constraint set itself;
   - uniform priors U[-a, a]: the same in z-space, theta = a (2 Phi(z) - 1) with z ~ N(0, I),
     which maps the standard normal prior exactly onto the uniform one.

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
from typicalnets.certificate import TIE, certified_interpolates, check_float32_range
from typicalnets.data import Dataset, class_interleaved_order
from typicalnets.errors import TypicalnetsError
from typicalnets.native.abi import Activation
from typicalnets.nets import FCN, Architecture, Population
from typicalnets.nets.base import ACTIVATIONS
from typicalnets.nets.population import split_flat
from typicalnets.priors import Gaussian, Prior, QuantizedUniform, Uniform
from typicalnets.resources import check_device, check_memory
from typicalnets.samplers.base import SampleResult, accepted_result, sample
from typicalnets.stats import mean_t_interval

DEFAULT_PARTICLES = 1000
DEFAULT_MAX_MOVES = 100  # MCMC sweeps per step at most
# The native moves run in rounds of 1/8 sweep (n_params / 8 proposals per particle), so the adaptive
# stop rule is checked often without paying a call per proposal.
NATIVE_ROUNDS_PER_SWEEP = 8


class SMCState(NamedTuple):
    """Where a run stands. ``step`` returns a new state and leaves what this one holds as it was: it
    writes the new block's rows of ``cache`` (rows ``seen`` onwards, which this state never reads) in
    place, then resamples into a fresh copy that the moves update. So an old state may be stepped
    again, with the same result for the same ``rng``."""

    flat: torch.Tensor | None  # (N, P) particle parameters (z-space for uniform priors), None before the first step
    seen: int  # training examples incorporated so far
    log_prob: float  # running estimate of ln P(L_S = 0) over the seen examples
    draws: int  # network evaluations (on all seen examples) spent so far
    accepted: Population  # the final particles once every example is in, else empty
    degenerate: bool  # no particle survived a block: sampling failed
    coordinates: int  # parameters one move re-draws: adapted to the move acceptance as the run goes
    cache: FCNCache | None = None  # cached activations (one-hidden-layer FCNs with quantized priors)


class SMCInfo(NamedTuple):
    seen: int  # examples incorporated after this step
    survival: float  # fraction of particles that classified the new block
    ess: int  # effective sample size after reweighting (0/1 weights: the survivors)
    unique: int  # distinct particles after the moves
    move_acceptance: float  # mean acceptance of this step's MCMC moves
    moves: int  # MCMC sweeps this step


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
        order = class_interleaved_order(train.y)
        self.x, self.y = train.x[order].to(device), train.y[order].to(device)
        self.n_params = arch.num_params()
        self.initial_coordinates = int(coordinates) if coordinates else max(1, self.n_params // 50)
        # One-hidden-layer FCNs with quantized priors cache activations: a move costs O(examples).
        self.cached = isinstance(arch, FCN) and arch.depth == 2 and isinstance(prior, QuantizedUniform)
        self.x64 = self.x.double()
        self.xt64, self.y8 = self.x64.reshape(len(self.x64), -1).T.contiguous(), self.y.to(torch.int8).contiguous()

    # -- parameters: one flat (N, P) tensor, in z-space for uniform priors -------------------------
    def _draw(self, rng: torch.Generator, count: int) -> torch.Tensor:
        if isinstance(self.prior, Uniform):
            return torch.randn(count, self.n_params, generator=rng, device=rng.device).to(self.x.device)
        return self.prior.sample((count, self.n_params), rng, device=self.x.device)

    def _population(self, flat: torch.Tensor) -> Population:
        theta = flat
        if isinstance(self.prior, Uniform):
            theta = self.prior.a * torch.erf(flat / math.sqrt(2.0))  # a (2 Phi(z) - 1)
        return Population(self.arch, self.prior, split_flat(self.arch, theta))

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
        """The final particles (the first ``count``) and the run's estimate of ln P(L_S = 0); the
        estimate is nan for a run stopped by a budget before the last example, which has none for the
        whole training set."""
        estimate = state.log_prob if stop_reason in ("count", "degenerate") else math.nan
        return accepted_result(self, state, count, stop_reason, seconds, history, log_prob_estimate=estimate)

    def step(self, rng: torch.Generator, state: SMCState, max_draws: int | None = None) -> tuple[SMCState, SMCInfo]:
        """Add the next block of examples (the first step draws the particles). A step evaluates every
        particle, so it does not consult ``max_draws`` (the last step may overrun the budget);
        ``state.cache`` gains the block's rows in place (see ``SMCState``)."""
        flat, draws, cache = state.flat, state.draws, state.cache
        if flat is None:
            flat, draws = self._draw(rng, self.particles), self.particles
            cache = FCNCache.empty(self.arch, len(flat), len(self.y), flat.device) if self.cached else None
        seen = min(len(self.y), state.seen + self.block)
        # 1. Reweight: survivors classify the new block (and, by invariance, every earlier example).
        if cache is not None:
            cache.extend(self.arch, flat, self.x64, state.seen, seen)
            alive = cache.correct(self.y, state.seen, seen)
        else:
            alive = certified_interpolates(self._population(flat), self.x[state.seen : seen], self.y[state.seen : seen])
        draws += len(flat)
        survival = float(alive.double().mean())
        if survival == 0.0:
            info = SMCInfo(seen, 0.0, 0, 0, 0.0, 0)
            return state._replace(flat=flat, seen=seen, log_prob=-math.inf, draws=draws, degenerate=True), info
        # 2. The surviving fraction estimates P(block correct | earlier blocks correct).
        log_prob = state.log_prob + math.log(survival)
        # 3. Resample uniformly among the survivors.
        survivors = torch.nonzero(alive).flatten()
        pick = torch.randint(len(survivors), (self.particles,), generator=rng, device=rng.device).to(flat.device)
        flat = flat[survivors[pick]]
        if cache is not None:
            cache = cache.take(survivors[pick])
        # 4. Rejuvenate until diverse enough (or max_moves sweeps).
        flat, acceptance, moves, evaluations, coordinates = self._rejuvenate(rng, flat, seen, state.coordinates, cache)
        draws += evaluations
        done = seen == len(self.y)
        accepted = self._population(flat) if done else state.accepted
        if done and cache is not None and not bool(certified_interpolates(accepted, self.x, self.y).all()):
            raise RuntimeError("SMC's cached activations drifted from the parameters; please report this")
        info = SMCInfo(seen, survival, len(survivors), _unique(flat), acceptance, moves)
        return SMCState(flat, seen, log_prob, draws, accepted, False, coordinates, cache), info

    def _rejuvenate(
        self, rng: torch.Generator, flat: torch.Tensor, seen: int, coordinates: int, cache: FCNCache | None = None
    ):
        """MCMC moves until the particles are diverse enough; returns the moved particles, the mean move
        acceptance, the sweeps, their cost in network evaluations and the adapted ``coordinates``."""
        refreshed = torch.zeros(len(flat), device=flat.device)  # accepted re-drawn parameters per particle
        total, moves, evaluations = 0.0, 0, 0
        quantized = isinstance(self.prior, QuantizedUniform)
        kernel = native.load() if cache is not None and flat.device.type == "cpu" else None
        proposals = max(1, self.n_params // NATIVE_ROUNDS_PER_SWEEP)
        while moves < self.max_moves:
            if (
                moves >= self.min_moves
                and float(refreshed.mean()) >= self.refresh * self.n_params
                and _unique(flat) >= self.target_unique * len(flat)
            ):
                break
            if kernel is not None:
                flat, moved = cache.native_moves(
                    kernel, self.arch, self.prior, rng, flat, self.xt64, self.y8, seen, proposals
                )
                refreshed += moved
                moved = moved / proposals
                cost = len(flat) * proposals // self.n_params  # in whole-network evaluations
            elif cache is not None:
                # Alternate single-parameter moves (any parameter) with moves of k input weights of one
                # hidden unit; k adapts like the uncached block size.
                if moves % 2 == 0:
                    flat, moved = cache.coordinate_move(self.arch, self.prior, rng, flat, self.x64, self.y, seen)
                else:
                    flat, moved = cache.unit_move(self.arch, self.prior, rng, flat, self.x64, self.y, seen, coordinates)
                    rate = float((moved > 0).double().mean())
                    if rate < 0.2:
                        coordinates = max(1, coordinates // 2)
                    elif rate > 0.5:
                        coordinates = min(self.arch.in_dim, coordinates * 2)
                refreshed += moved
                moved = (moved > 0).double()
                cost = len(flat)
            elif quantized:
                flat, moved, cost = self._coordinate_move(rng, flat, seen, coordinates)
                refreshed += moved * coordinates
                rate = float(moved.mean())
                if rate < 0.2:
                    coordinates = max(1, coordinates // 2)
                elif rate > 0.5:
                    coordinates = min(self.n_params, coordinates * 2)
            else:  # an elliptical slice move refreshes every coordinate
                flat, moved, cost = self._elliptical_slice(rng, flat, seen)
                refreshed += moved * self.n_params
            total += float(moved.mean())
            moves += 1
            evaluations += cost
        return flat, (total / moves if moves else 0.0), moves, evaluations, coordinates

    def _coordinate_move(self, rng: torch.Generator, flat: torch.Tensor, seen: int, coordinates: int):
        """Re-draw ``coordinates`` random parameters of every particle from the prior; keep iff valid."""
        count = len(flat)
        index = torch.randint(self.n_params, (count, coordinates), generator=rng, device=rng.device)
        values = self.prior.sample((count, coordinates), rng).to(flat.dtype)
        proposal = flat.clone()
        proposal.scatter_(1, index.to(flat.device), values.to(flat.device))
        ok = self._satisfies(proposal, seen)
        return torch.where(ok.unsqueeze(1), proposal, flat), ok.float(), count

    def _elliptical_slice(self, rng: torch.Generator, flat: torch.Tensor, seen: int, max_shrinks: int = 100):
        """One elliptical slice sampling update per particle (z-space for uniform priors).

        The Gaussian prior is N(0, sigma^2 I) for Gaussian priors and N(0, I) in z-space. A particle
        whose bracket has not closed after ``max_shrinks`` shrinks keeps its state (angles then are
        within 2 pi 2^-100 of 0, i.e. the current point, in exact arithmetic).
        """
        scale = self.prior.sigma if isinstance(self.prior, Gaussian) else 1.0
        nu = scale * torch.randn(flat.shape, generator=rng, device=rng.device).to(flat.device)
        angle = 2 * math.pi * torch.rand(len(flat), generator=rng, device=rng.device).to(flat.device)
        low, high = angle - 2 * math.pi, angle.clone()
        current = flat.clone()
        pending = torch.ones(len(flat), dtype=torch.bool, device=flat.device)
        evaluations = 0
        for _ in range(max_shrinks):
            rows = torch.nonzero(pending).flatten()
            if rows.numel() == 0:
                break
            a = angle[rows].unsqueeze(1)
            proposal = flat[rows] * torch.cos(a) + nu[rows] * torch.sin(a)
            ok = self._satisfies(proposal, seen)
            evaluations += rows.numel()
            current[rows[ok]] = proposal[ok]
            pending[rows[ok]] = False
            shrink = rows[~ok]
            negative = angle[shrink] < 0
            low[shrink] = torch.where(negative, angle[shrink], low[shrink])
            high[shrink] = torch.where(negative, high[shrink], angle[shrink])
            angle[shrink] = low[shrink] + (high[shrink] - low[shrink]) * torch.rand(
                shrink.numel(), generator=rng, device=rng.device
            ).to(flat.device)
        moved = (~pending).float()
        return current, moved, evaluations


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

    def correct(self, y: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        margin = y[start:stop].double() * self.f[:, start:stop]
        return (margin > TIE * self.scale[:, start:stop]).all(dim=1)

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``proposals`` single-parameter moves per particle in the native kernel (CPU): each re-draws
        one parameter to another level, uniformly (half the picks among biases, scales and readout),
        and keeps it iff every seen example stays correct. ``xt`` is the (d, n) float64 transpose of
        the inputs, ``y`` the int8 labels. Returns the new parameters and the accepted moves per particle."""
        flat = flat.contiguous().clone()
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
        return flat, accepted.double()

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
    runs (needs repeats >= 2). Samples are taken evenly from the runs' final particles. The runs
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
    estimates = [r.log_prob_interpolate for r in runs]
    complete = len(runs) == repeats and all(r.stop_reason == "count" for r in runs)
    interval = (math.nan, math.nan)
    if complete and repeats >= 2:
        mean, half = mean_t_interval(estimates)
        interval = (mean - half, mean + half)
    shares = [count // repeats + (1 if i < count % repeats else 0) for i in range(repeats)]
    pooled = [r.population[:share] for r, share in zip(runs, shares) if r.stop_reason == "count"]
    population = Population.concat(pooled) if pooled else runs[0].population
    stop = "count" if complete else runs[-1].stop_reason
    estimate = sum(estimates) / len(estimates) if complete else runs[-1].log_prob_interpolate
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
