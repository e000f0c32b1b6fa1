"""The torch engine: the straightforward method's accept decision, much sooner, on any device and family.

The straightforward method (``engines.baseline``) runs every drawn network on every training
example in one full fp32 forward. This engine decides the same question -- does the network
classify every training example correctly? -- with these ideas, each measured on its own by
``benchmarks/gc_throughput.py``:

1. Early rejection: examples are evaluated in blocks (1, 1, 2, 4, ... examples), alternating the
   two classes so that constant classifiers die at the second example; after each block the
   surviving networks are compacted and the rest are never evaluated again.
2. The input-facing first layer is one large matmul across the population (the input is shared).
3. Quantized weights come from raw random bits (2-8 bits per weight instead of one 32-bit draw),
   uniform weights from one flat draw for all parameters.
4. No grouped convolutions on GPUs: conv layers after the first run as im2col (one strided copy)
   plus one batched matmul there; on the CPU grouped convolutions measured 2-3x faster and stay.
5. Networks are processed in chunks so memory stays bounded.
6. Mirrored pairs: network 2i + 1 is network 2i with its head mirrored (``mirror_heads``), so its
   output is exactly -f and one forward decides both on the first example (``can_mirror`` says
   when the mirror is a prior draw too; ``samplers.gc`` explains why the accepted networks stay
   i.i.d. from the posterior).

Exact integer arithmetic for quantized priors is not used: it is exact only when the inputs are
integers too, and every task here feeds real-valued (standardised) inputs to the first layer; the
certified check gives exact verdicts in floating point instead.

Exactness: every candidate's final verdict comes from ``typicalnets.certificate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from typicalnets.certificate import DEFAULT_MARGIN, certified_interpolates, forward_with_scale
from typicalnets.data import Dataset, class_interleaved_order
from typicalnets.engines.base import EngineStep, held_networks
from typicalnets.engines.drawing import can_mirror, draw_batch
from typicalnets.nets import Architecture, Population
from typicalnets.priors import Prior

# (network, example) activations of the widest layer kept at once; bounds memory per chunk.
ACTIVATION_BUDGET = {"cpu": 1 << 24, "cuda": 1 << 28}


@dataclass(frozen=True)
class CheckStats:
    network_examples: int  # (network, example) forwards actually evaluated by the fast path
    uncertain: int  # networks handed to the full-precision check because |f| fell inside the margin
    rechecked: int  # networks the full-precision check evaluated (accepted + uncertain)
    disagreements: int  # fp32-accepted networks the float64 check rejected (exact ties, or rounding)


class TorchEngine:
    """Zero-training-error decisions for stacked populations, with early rejection, in PyTorch."""

    name = "torch"

    def __init__(
        self,
        arch: Architecture,
        prior: Prior,
        train: Dataset,
        margin: float = DEFAULT_MARGIN,
        mirror: bool = True,
        device: torch.device | str = "cpu",
        early_rejection: bool = True,
        grouped: bool | None = None,
    ):
        arch.check_input(train.x)
        self.arch, self.prior, self.margin, self.grouped = arch, prior, margin, grouped
        self.mirror = mirror and can_mirror(arch, prior)
        order = class_interleaved_order(train.y)
        self.x = train.x[order].to(device)
        self.y = train.y[order].to(device)
        self.blocks = _blocks(train.n) if early_rejection else [(0, train.n)]
        self.widest = arch.widest_activation()
        self.held = held_networks(arch, device)

    @property
    def draws_per_trial(self) -> int:
        return 2 if self.mirror else 1

    def batch_size(self, requested: int) -> int:
        return min(requested, self.held)

    def run(self, rng: torch.Generator, batch: int) -> EngineStep:
        # 1. Guess from raw random bits (mirrored pairs); 2.-3. early rejection, then the
        # full-precision re-check.
        guesses = draw_batch(self.arch, self.prior, batch, rng, mirror=self.mirror)
        keep, stats = self.check(guesses, mirrored=self.mirror)
        return EngineStep(guesses[keep], batch, stats.network_examples, stats.rechecked)

    def next_batch(self, size: int, accepted: int, evaluated: int) -> int:
        return size

    def check(self, population: Population, mirrored: bool = False) -> tuple[torch.Tensor, CheckStats]:
        """(accepted mask over ``population``, statistics) -- the straightforward verdict, sooner.

        ``mirrored``: the population is mirrored pairs (``draw_batch(..., mirror=True)``); the first
        block then runs only the first network of each pair, whose twin's output is exactly -f.
        """
        size = len(population)
        device = population.device
        alive = torch.arange(0, size, 2 if mirrored else 1, device=device)
        uncertain = torch.zeros(size, dtype=torch.bool, device=device)
        evaluated = 0
        for block, (start, stop) in enumerate(self.blocks):
            if alive.numel() == 0:
                break
            x, y = self.x[start:stop], self.y[start:stop]
            budget = ACTIVATION_BUDGET.get(self.x.device.type, ACTIVATION_BUDGET["cpu"])
            chunk = max(1, budget // (self.widest * (stop - start)))
            keep_parts = []
            for begin in range(0, alive.numel(), chunk):
                members = alive[begin : begin + chunk]
                params = {k: v[members] for k, v in population.params.items()}
                f, scale = self._forward(params, x)
                near_zero = ((f.abs() <= self.margin * scale) & (scale > 0)).any(dim=1)  # scale 0: f is exactly 0
                uncertain[members] |= near_zero
                keep_parts.append(members[(torch.sign(f).to(torch.int8) == y).all(dim=1)])
                if mirrored and block == 0:  # the twins: output -f, the same scale
                    uncertain[members + 1] |= near_zero
                    keep_parts.append(members[(torch.sign(-f).to(torch.int8) == y).all(dim=1)] + 1)
            evaluated += alive.numel() * (stop - start)
            alive = torch.cat(keep_parts)
        candidates = uncertain.clone()
        candidates[alive] = True
        accepted = torch.zeros(size, dtype=torch.bool, device=population.device)
        recheck = torch.nonzero(candidates).flatten()
        if recheck.numel():
            accepted[recheck[certified_interpolates(population[recheck], self.x, self.y)]] = True
        disagreements = int((~accepted[alive]).sum())
        stats = CheckStats(evaluated, int(uncertain.sum()), int(recheck.numel()), disagreements)
        return accepted, stats

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_with_scale(self.arch, params, x, self.grouped)


def _blocks(n: int) -> list[tuple[int, int]]:
    """Example blocks 1, 1, 2, 4, 8, ...: small while many networks are alive, larger once few are."""
    blocks, start, size = [], 0, 1
    while start < n:
        blocks.append((start, min(n, start + size)))
        start += size
        if len(blocks) > 1:
            size *= 2
    return blocks
