"""Guess & Check: exact rejection sampling of typical interpolators.

Draw networks i.i.d. from the prior and keep those with zero training error (f = 0 is a mistake).
Each kept network is an exact draw from the prior conditioned on L_S = 0. References: Chiang et
al., "Loss landscapes are all you need: neural network generalization can be explained without
the implicit bias of gradient descent", ICLR 2023; Buzaglo et al., "How uniform random weights
induce non-uniform bias: typical interpolating neural networks generalize with narrow teachers",
ICML 2024.

Engines, all exact (the same accept decision, see ``typicalnets.fast``):
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

The ``native`` and ``torch`` engines draw mirrored pairs where the prior allows (``fast.can_mirror``;
``mirror=False`` turns them off): network 2i + 1 is network 2i with its head mirrored (two logits
swapped, or a scalar head negated), a draw from the prior too, whose output is exactly -f. One
forward pass decides both on the first example, and at most one of a pair interpolates, so the
accepted networks remain i.i.d. from the posterior at about half the cost per draw; the accepting
pairs are Binomial(pairs, 2 P(L_S = 0)), which ``SampleResult.acceptance_ci`` uses.

The published accept rule can add a bin on the normalized cross-entropy (``loss_bin``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from typicalnets import native
from typicalnets.certificate import DEFAULT_MARGIN, certified_interpolates, check_float32_range
from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.fast import CudaEngine, FastChecker, NativeEngine, can_mirror, draw_fast
from typicalnets.native import cuda
from typicalnets.nets import FCN, Architecture, DiagonalLinear, Population
from typicalnets.nets.population import DEFAULT_CHUNK
from typicalnets.priors import Prior
from typicalnets.resources import check_device, check_memory

DEFAULT_BATCH = 16_384
# Parameters held per drawn batch, which caps the batch for big nets: 256 MB of fp32 on the CPU
# (host memory stays well under 2 GB), 4 GB on a GPU.
PARAM_BUDGET = {"cpu": 1 << 26, "cuda": 1 << 30}
ENGINES = ("fast", "native", "torch", "baseline")
NATIVE_MAX_BATCH = 1 << 20  # draws per native step at most (a 1 MB verdict array)
# Parameters of the candidates (accepted or borderline draws) one native step materializes at most:
# 1 GiB of fp32, so that a large network accepted often cannot exhaust memory within one step.
NATIVE_CANDIDATE_FLOATS = 1 << 28
# Forward FLOPs per native step at most when its batch grows (~0.5 s on 2 cores; on a GPU, well
# under a second at a few % of its peak), so that time budgets are checked often; counted from the
# forwards evaluated, so the batch sizes, and with them the draws, stay the same on every machine
# of a kind.
NATIVE_STEP_FLOPS = {"cpu": 3e10, "cuda": 3e12}


class GCState(NamedTuple):
    accepted: Population  # accepted networks so far, in draw order
    draws: int  # networks drawn from the prior so far
    batch: int | None = None  # draws of the next step (None: the sampler's batch size)


class GCInfo(NamedTuple):
    draws: int  # drawn in this step
    accepted: int  # accepted in this step
    network_examples: int  # (network, example) forwards evaluated in this step
    rechecked: int  # networks re-checked by the straightforward fp32 forward


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
        if engine not in ENGINES:
            raise TypicalnetsError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
        if batch_size < 1:
            raise TypicalnetsError(f"batch size must be >= 1, got {batch_size}; give e.g. batch_size=16384")
        if loss_bin is not None and not loss_bin[0] < loss_bin[1]:
            raise TypicalnetsError(f"loss bin {list(loss_bin)} is empty; give LOW,HIGH with LOW < HIGH")
        self.arch, self.prior, self.loss_bin = arch, prior, loss_bin
        self.batch_size = int(batch_size)
        self.x = train.x.to(device)
        self.y = train.y.to(device)
        self.native = self.checker = None
        if engine in ("fast", "native"):
            if torch.device(device).type == "cpu":
                kernel = native.load()
                if kernel is not None and NativeEngine.supports(arch, prior):
                    self.native = NativeEngine(kernel, arch, prior, train, margin, mirror)
            elif engine == "native" and CudaEngine.supports(arch, prior):  # opt-in until measured on a GPU
                kernel = cuda.kernel(arch, device)
                if kernel is not None:
                    self.native = CudaEngine(kernel, arch, prior, train, margin, mirror, device)
            if self.native is None and engine == "native":
                raise TypicalnetsError(
                    "the native engine needs a uniform or quantized prior and, on the CPU, a C compiler and an "
                    "fcn/sfcn/lenet student, or on a GPU, nvcc and a lenet student with fc layers of >= 16 units; "
                    "use --engine fast"
                )
        # On GPUs the batched fp32 forward of FCNs measured faster than early rejection (an H200:
        # 2.5M against 1.0M networks/s for FCN 784-32-1), so "fast" keeps the baseline there.
        fcn_on_gpu = isinstance(arch, (FCN, DiagonalLinear)) and torch.device(device).type != "cpu"
        if (engine == "torch" or (engine == "fast" and not fcn_on_gpu)) and self.native is None:
            self.checker = FastChecker(arch, train, margin, device)
        self.engine = "native" if self.native else "torch" if self.checker else "baseline"
        # Draws per independent trial: mirrored pairs are drawn, and budgeted, whole.
        self.mirrored = self.engine != "baseline" and mirror and can_mirror(arch, prior)
        self.draws_per_trial = 2 if self.mirrored else 1
        # Parameters held at once: a batch (torch and baseline) or a chunk of candidates to re-check (native).
        budget = PARAM_BUDGET.get(self.x.device.type, PARAM_BUDGET["cpu"])
        self.held = max(1, budget // arch.num_params())
        if self.native is None:
            self.batch_size = min(self.batch_size, self.held)
        else:  # one verdict byte per draw, and (at least) one example's forward each, within a step's FLOP cap
            most = NATIVE_STEP_FLOPS[self.x.device.type] // arch.flops_per_example()
            self.batch_size = max(2, min(self.batch_size, NATIVE_MAX_BATCH, int(most)))
        check_memory(
            arch.num_params(),
            min(self.batch_size, self.held),
            "a batch of networks",
            copies=2,
            fix="use smaller widths",
        )
        self.chunk = self.batch_size if self.x.device.type == "cuda" else DEFAULT_CHUNK

    def init(self) -> GCState:
        return GCState(Population.empty(self.arch, self.prior, device=self.x.device), 0)

    def step(self, rng: torch.Generator, state: GCState, max_draws: int | None = None) -> tuple[GCState, GCInfo]:
        unit = self.draws_per_trial
        size = state.batch or self.batch_size
        batch = size if max_draws is None else max(1, min(size, max_draws))
        batch = max(unit, batch // unit * unit)
        n = self.x.shape[0]
        if self.native is not None:
            # 1. Guess: network i of this batch is network i of a fresh random stream.
            key = int(torch.randint(0, 2**63 - 1, (1,), generator=rng))
            # 2. Check in the native kernel, each network stopping at its first mistake.
            status, evaluated = self.native.check(key, batch)
            # 3. Re-check the accepted and borderline networks in float64, a bounded chunk at a time.
            candidates = status.nonzero()[0]
            most = max(unit, NATIVE_CANDIDATE_FLOATS // self.arch.num_params())
            if len(candidates) > most:
                # Keep only the draws before the (most + 1)-th candidate: a stopping time, so the
                # accepted networks stay i.i.d. posterior draws, and a step's memory stays bounded.
                batch = int(candidates[most]) // unit * unit
                candidates = candidates[candidates < batch]
            kept = []
            for begin in range(0, len(candidates), self.held):
                chunk = self.native.draw(key, candidates[begin : begin + self.held])
                kept.append(chunk[certified_interpolates(chunk, self.x, self.y)])
            guesses = Population.concat(kept) if kept else Population.empty(self.arch, self.prior, device=self.x.device)
            keep = torch.ones(len(guesses), dtype=torch.bool, device=guesses.device)
            rechecked = len(candidates)
        elif self.checker is not None:
            # 1. Guess from raw random bits (mirrored pairs); 2.-3. early rejection, then the
            # full-precision re-check.
            guesses = draw_fast(self.arch, self.prior, batch, rng, mirror=self.mirrored)
            keep, stats = self.checker.check(guesses, mirrored=self.mirrored)
            evaluated, rechecked = stats.network_examples, stats.rechecked
        else:
            # 1. Guess: draw a batch of networks i.i.d. from the prior.
            guesses = Population.draw(self.arch, self.prior, batch, rng, device=self.x.device)
            # 2. Check: count each network's training mistakes in one batched fp32 forward.
            keep = guesses.mistakes(self.x, self.y, self.chunk) == 0
            # 3. Re-check the accepted networks in float64.
            candidates = keep.nonzero().flatten()
            keep[candidates[~certified_interpolates(guesses[candidates], self.x, self.y)]] = False
            evaluated, rechecked = batch * n, candidates.numel()
        # 4. The published accept rule may also require the normalized cross-entropy to lie in a bin.
        if self.loss_bin is not None and bool(keep.any()):
            loss = normalized_cross_entropy(guesses[keep], self.x, self.y)
            in_bin = (loss >= self.loss_bin[0]) & (loss < self.loss_bin[1])
            keep = keep.clone()
            keep[keep.nonzero().flatten()[~in_bin]] = False
        # 5. Keep the interpolators, in draw order.
        accepted = Population.concat([state.accepted, guesses[keep]])
        info = GCInfo(batch, int(keep.sum()), int(evaluated), int(rechecked))
        # 6. The native engine holds no parameters: after a step that accepts nothing it doubles its
        # batch, so that the per-step overhead (~1 ms) stays small when acceptance is rare.
        grow = (
            self.native is not None
            and info.accepted == 0
            and 2 * info.network_examples * self.arch.flops_per_example() <= NATIVE_STEP_FLOPS[self.x.device.type]
        )
        return GCState(accepted, state.draws + batch, min(NATIVE_MAX_BATCH, 2 * size) if grow else size), info
