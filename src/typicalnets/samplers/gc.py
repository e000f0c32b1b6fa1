"""Guess & Check: exact rejection sampling of typical interpolators.

Draw networks i.i.d. from the prior and keep those with zero training error (f = 0 is a mistake).
Each kept network is an exact draw from the prior conditioned on L_S = 0. References: Chiang et
al., "Loss landscapes are all you need: neural network generalization can be explained without
the implicit bias of gradient descent", ICLR 2023; Buzaglo et al., "How uniform random weights
induce non-uniform bias: typical interpolating neural networks generalize with narrow teachers",
ICML 2024.

Engines (``typicalnets.engines``; ``select_engine`` holds the decision table), all exact (the same
accept decision, see ``typicalnets.certificate``):
- ``baseline``: the straightforward method, one full fp32 batched forward of every drawn network on
  every training example (grouped convolutions for conv nets), accepted networks re-checked in float64;
- ``fast`` (default): ``native`` on the CPU where it applies, else ``torch`` (but ``baseline`` for FCNs and
  diagonal nets on a GPU, where it measured faster);
- ``native``: the compiled kernel that draws and checks in one pass with early rejection: on the
  CPU for FCNs and LeNet (``native/gc_kernel.c``), on a GPU for LeNet (``native/gc_cuda.cu``, built
  with nvcc; ``fast`` does not pick it on GPUs yet, as it has run only in its CPU emulation so far),
  with uniform or quantized priors;
- ``torch``: early rejection in PyTorch, on any device and architecture. Every
  accepted (and every borderline) network is re-checked in float64 (``certificate.certified_interpolates``).

The ``native`` and ``torch`` engines draw mirrored pairs where the prior allows (``engines.drawing.can_mirror``;
``mirror=False`` turns them off): network 2i + 1 is network 2i with its head mirrored (two logits
swapped, or a scalar head negated), a draw from the prior too, whose output is exactly -f. One
forward pass decides both on the first example, and at most one of a pair interpolates, so the
accepted networks remain i.i.d. from the posterior at about half the cost per draw; the accepting
pairs are Binomial(pairs, 2 P(L_S = 0)), which ``SampleResult.acceptance_ci`` uses.

The published accept rule can add a bin on the normalized cross-entropy (``loss_bin``).

G&C streams (``samplers.base.StreamingSampler``): its state holds only the networks its last step
accepted and counts the rest, and the driver hands each step's on as they come (to ``iter_samples``'s
caller, to ``sample``'s sink, or into the result's population, joined once at the end). So a step
costs the same whether 10 or 500,000 networks came before it, and a run holds one step's networks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from typicalnets.certificate import DEFAULT_MARGIN, check_float32_range
from typicalnets.data import Dataset
from typicalnets.engines import build_engine, select_engine
from typicalnets.engines.base import held_networks
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import Architecture, Population
from typicalnets.priors import Prior
from typicalnets.resources import check_device, check_memory
from typicalnets.samplers.base import SampleResult

DEFAULT_BATCH = 16_384


class GCState(NamedTuple):
    accepted: Population  # the networks the last step accepted, in draw order (the driver took earlier ones)
    draws: int  # networks drawn from the prior so far
    batch: int | None = None  # draws of the next step (None: the sampler's batch size)
    accepted_total: int = 0  # networks accepted so far, by every step


class GCInfo(NamedTuple):
    draws: int  # drawn in this step
    accepted: int  # accepted in this step
    network_examples: int  # (network, example) forwards evaluated in this step
    rechecked: int  # networks sent to the full-precision certificate


def normalized_cross_entropy(population: Population, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per network of logits divided by prod_l (||W_l||_F / 3) (published accept rule).

    With two logits, softmax cross-entropy is softplus(-y (z_1 - z_0)) = softplus(-y f), so the same
    formula serves scalar and two-logit heads; biases and scales are not in the product.
    """
    norm = torch.ones(len(population), dtype=torch.float64, device=population.device)
    for name, value in population.params.items():
        if name.startswith("w"):
            norm = norm * value.double().flatten(1).norm(dim=1) / 3.0
    f = population.forward(x).double() / norm.unsqueeze(1)
    return F.softplus(-y.to(f.device).double() * f).mean(dim=1)


class GuessAndCheck:
    name = "gc"

    def __init__(
        self,
        arch: Architecture,
        prior: Prior,
        train: Dataset,
        batch_size: int = DEFAULT_BATCH,
        device: torch.device | str = "cpu",
        engine: str = "fast",
        loss_bin: tuple[float, float] | None = None,
        margin: float = DEFAULT_MARGIN,
        mirror: bool = True,
    ):
        arch.check_input(train.x)
        device = check_device(device)
        check_float32_range(arch, prior, train.x)
        if batch_size < 1:
            raise TypicalnetsError(f"batch size must be >= 1, got {batch_size}; give e.g. batch_size=16384")
        if loss_bin is not None and not loss_bin[0] < loss_bin[1]:
            raise TypicalnetsError(f"loss bin {list(loss_bin)} is empty; give LOW,HIGH with LOW < HIGH")
        self.arch, self.prior, self.loss_bin = arch, prior, loss_bin
        self.x = train.x.to(device)
        self.y = train.y.to(device)
        self.engine_impl = build_engine(
            select_engine(arch, prior, device, engine), arch, prior, train, device, margin, mirror
        )
        self.engine = self.engine_impl.name
        # Draws per independent trial: mirrored pairs are drawn, and budgeted, whole.
        self.draws_per_trial = self.engine_impl.draws_per_trial
        self.batch_size = self.engine_impl.batch_size(int(batch_size))
        held = held_networks(arch, device)  # a batch (torch, baseline) or a chunk of candidates (kernels)
        check_memory(
            arch.num_params(), min(self.batch_size, held), "a batch of networks", copies=2, fix="use smaller widths"
        )

    def init(self, rng: torch.Generator | None = None) -> GCState:
        """The empty state; ``rng`` is unused (G&C draws in its steps)."""
        return GCState(Population.empty(self.arch, self.prior, device=self.x.device), 0)

    def stopped(self, state: GCState, count: int) -> str | None:
        return "count" if state.accepted_total >= count else None  # else G&C runs until a budget stops it

    def progress(self, state: GCState, count: int) -> tuple[int, int, str]:
        """(samples, count, draws): what the driver's progress bar shows."""
        return min(state.accepted_total, count), count, f"{state.draws:,} draws"

    def new_samples(self, state: GCState) -> Population:
        """The networks the step that made ``state`` accepted, which the driver hands on."""
        return state.accepted

    def finish(
        self, state: GCState, count: int, stop_reason: str, seconds: float, history: tuple[GCInfo, ...]
    ) -> SampleResult:
        """The run's result without its samples, which the driver handed on; ``accepted_total`` counts every
        accepted draw, also those beyond ``count`` in the last step. ln P(L_S = 0) is ln of the acceptance rate
        (``SampleResult.log_prob_interpolate``)."""
        return SampleResult(
            sampler=self.name,
            population=Population.empty(self.arch, self.prior, device=self.x.device),
            requested=count,
            accepted_total=state.accepted_total,
            draws=state.draws,
            seconds=seconds,
            stop_reason=stop_reason,
            history=history,
            draws_per_trial=self.draws_per_trial,
        )

    def step(
        self, rng: torch.Generator, state: GCState, max_draws: int | None = None, deadline: float | None = None
    ) -> tuple[GCState, GCInfo]:
        unit = self.draws_per_trial
        size = state.batch or self.batch_size
        batch = size if max_draws is None else max(1, min(size, max_draws))
        batch = max(unit, batch // unit * unit)
        # 1.-3. Guess a batch from the prior and check it; the engine re-checks its candidates in float64.
        result = self.engine_impl.run(rng, batch)
        found = result.accepted
        # 4. The published accept rule may also require the normalized cross-entropy to lie in a bin.
        if self.loss_bin is not None and len(found):
            loss = normalized_cross_entropy(found, self.x, self.y)
            found = found[(loss >= self.loss_bin[0]) & (loss < self.loss_bin[1])]
        # 5. The new state holds this step's interpolators, in draw order, for the driver to hand on, and counts
        #    them: nothing of earlier steps is kept or copied, so a step's cost does not grow with the samples.
        info = GCInfo(result.draws, len(found), result.evaluated, result.rechecked)
        # 6. The engine sizes the next batch (the kernel engines grow theirs while nothing is accepted).
        next_batch = self.engine_impl.next_batch(size, info.accepted, info.network_examples)
        return GCState(found, state.draws + result.draws, next_batch, state.accepted_total + len(found)), info
