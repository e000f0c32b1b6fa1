"""The fast Guess & Check engine: the same accept decision as the straightforward check, much sooner.

The straightforward check runs every drawn network on every training example in one full fp32
forward (grouped convolutions for conv nets). The fast engine decides the same question -- does the
network classify every training example correctly? -- with these ideas, each measured on its own
by ``benchmarks/gc_throughput.py``:

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

Exactness and overflow: every candidate's final verdict comes from
``typicalnets.certificate`` (the certified check, the tie rule and the float32 range check).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from typicalnets.certificate import DEFAULT_MARGIN, certified_interpolates, conv_layers, forward_with_scale
from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.native import cuda
from typicalnets.nets import FCN, Architecture, DiagonalLinear, LeNet, Population
from typicalnets.nets.population import split_flat
from typicalnets.priors import Gaussian, Prior, QuantizedUniform, Uniform

# (network, example) activations of the widest layer kept at once; bounds memory per chunk.
ACTIVATION_BUDGET = {"cpu": 1 << 24, "cuda": 1 << 28}


def draw_fast(
    arch: Architecture,
    prior: Prior,
    size: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    mirror: bool = False,
) -> Population:
    """Draw ``size`` networks i.i.d. from ``prior`` with few, large random-number calls.

    Quantized priors take ceil(log2 Q) raw random bits per weight (codes >= Q are rejected and
    replaced, so each weight is exactly uniform over the levels); uniform and Gaussian priors take
    one flat draw for all parameters (uniform on the odd multiples of 2^-24 a, a grid symmetric
    about 0). The result is a different random stream from ``Population.draw`` but the same
    distribution. With ``mirror`` (``size`` even; see ``can_mirror``), networks 2i and 2i + 1 are a
    mirrored pair: 2i + 1 is 2i with its head mirrored (``mirror_heads``).
    """
    if mirror:
        base = draw_fast(arch, prior, size // 2, generator, dtype)
        twins = mirror_heads(arch, base.params)
        params = {k: torch.stack([v, twins[k]], 1).flatten(0, 1) for k, v in base.params.items()}
        return Population(arch, prior, params)
    shapes = arch.param_shapes()
    counts = [math.prod(s) for s in shapes.values()]
    total = size * sum(counts)
    device = generator.device
    if isinstance(prior, QuantizedUniform):
        flat = prior.level_tensor(dtype, device)[quantized_codes(prior.q, total, generator)]
    elif isinstance(prior, Uniform):
        # 2u - 1 + 2^-24 for u on torch.rand's grid (multiples of 2^-24): exact in float32.
        flat = torch.rand(total, generator=generator, dtype=dtype, device=device).mul_(2.0).sub_(1.0)
        flat = flat.add_(2.0**-24).mul_(prior.a)
    elif isinstance(prior, Gaussian):
        flat = torch.randn(total, generator=generator, dtype=dtype, device=device).mul_(prior.sigma)
    else:
        raise TypicalnetsError(f"the fast engine does not know prior {prior!r}; use --engine baseline")
    params, start = {}, 0
    for (name, shape), count in zip(shapes.items(), counts):
        params[name] = flat[start : start + size * count].view(size, *shape)
        start += size * count
    return Population(arch, prior, params)


def head_names(arch: Architecture) -> tuple[str, ...]:
    """The parameters of the output layer (weights, and bias where the architecture has one)."""
    if isinstance(arch, LeNet):
        return ("w5", "b5")
    return tuple(name for name in (f"w{arch.depth}", f"b{arch.depth}") if name in arch.param_shapes())


def swaps_logits(arch: Architecture) -> bool:
    return isinstance(arch, LeNet) and arch.outputs == 2


def can_mirror(arch: Architecture, prior: Prior) -> bool:
    """Whether mirroring a network's head maps the prior onto itself, so that a draw's mirror is a
    draw too: always for two logits (a swap), and for a scalar head (a negation) when the prior is
    symmetric about 0 -- Gaussian, uniform (the engines' grids are), or symmetric levels."""
    if swaps_logits(arch):
        return True
    if isinstance(prior, QuantizedUniform):
        levels = np.asarray(prior.levels, dtype=np.float32)
        return set(levels.tolist()) == set((-levels).tolist())
    return isinstance(prior, (Uniform, Gaussian))


def mirror_heads(arch: Architecture, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` with each network's head mirrored: the two logits swapped, or a scalar head
    negated. The mirror's output is exactly -f (f = z_1 - z_0 for two logits), since IEEE
    rounding is symmetric, so it gets every training example the other way round."""
    mirrored = dict(params)
    for name in head_names(arch):
        mirrored[name] = params[name].flip(1) if swaps_logits(arch) else -params[name]
    return mirrored


def quantized_codes(q: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` i.i.d. integers uniform on {0, ..., q-1} from raw random bits (rejection of codes >= q)."""
    bits = max(1, (q - 1).bit_length())
    per_word = 62 // bits  # random_() on int64 yields 63 random bits; use whole fields of them
    shifts = torch.arange(per_word, device=generator.device, dtype=torch.int64) * bits
    out = torch.empty(count, dtype=torch.int64, device=generator.device)
    filled = 0
    while filled < count:
        need = count - filled
        words = math.ceil(need * (1 << bits) / q / per_word * 1.05) + 1  # expected acceptance q / 2^bits
        raw = torch.empty(words, dtype=torch.int64, device=generator.device).random_(generator=generator)
        codes = ((raw.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)
        codes = codes[codes < q][:need]
        out[filled : filled + codes.numel()] = codes
        filled += codes.numel()
    return out


def class_interleaved_order(y: torch.Tensor) -> torch.Tensor:
    """Example indices alternating the labels (+1, -1, +1, ...), then the rest of the larger class."""
    positive = torch.nonzero(y > 0).flatten()
    negative = torch.nonzero(y <= 0).flatten()
    pairs = min(len(positive), len(negative))
    head = torch.stack([positive[:pairs], negative[:pairs]], 1).flatten()
    return torch.cat([head, positive[pairs:], negative[pairs:]])


@dataclass(frozen=True)
class CheckStats:
    network_examples: int  # (network, example) forwards actually evaluated by the fast path
    uncertain: int  # networks handed to the full-precision check because |f| fell inside the margin
    rechecked: int  # networks the full-precision check evaluated (accepted + uncertain)
    disagreements: int  # fp32-accepted networks the float64 check rejected (exact ties, or rounding)


class FastChecker:
    """Zero-training-error decisions for stacked populations, with early rejection."""

    def __init__(
        self,
        arch: Architecture,
        train: Dataset,
        margin: float = DEFAULT_MARGIN,
        device: torch.device | str = "cpu",
        early_rejection: bool = True,
        grouped: bool | None = None,
    ):
        arch.check_input(train.x)
        self.arch, self.margin, self.grouped = arch, margin, grouped
        order = class_interleaved_order(train.y)
        self.x = train.x[order].to(device)
        self.y = train.y[order].to(device)
        self.blocks = _blocks(train.n) if early_rejection else [(0, train.n)]
        self.widest = self._widest_activation()

    def check(self, population: Population, mirrored: bool = False) -> tuple[torch.Tensor, CheckStats]:
        """(accepted mask over ``population``, statistics) -- the straightforward verdict, sooner.

        ``mirrored``: the population is mirrored pairs (``draw_fast(..., mirror=True)``); the first
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

    def _widest_activation(self) -> int:
        """Largest intermediate (activations or im2col columns) of one network on one example."""
        arch = self.arch
        if isinstance(arch, FCN):
            return max(arch.hidden)
        if isinstance(arch, DiagonalLinear):
            return arch.in_dim
        convs, _, _ = conv_layers(arch)
        spatial, channels, widest = list(arch.input_shape[1:]), arch.input_shape[0], 1
        for (k, stride, pool, *_), c_out in zip(convs, arch.widths):
            taps = k ** len(spatial)
            out = [(size - k) // stride + 1 for size in spatial]
            widest = max(widest, math.prod(out) * max(c_out, channels * taps))
            spatial, channels = [size // pool for size in out], c_out
        return widest

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


class NativeEngine:
    """Draw and check in one pass in the native CPU kernel (LeNet and FCN, uniform or quantized priors).

    Network ``id`` of stream ``key`` always has the same parameters (``draw`` regenerates them), so
    the kernel never writes parameters out: only verdicts (1 accepted, 0 rejected, 2 uncertain).

    With ``mirror`` (where ``can_mirror`` allows it), networks come in antithetic pairs: network
    2i + 1 is network 2i with its head mirrored -- the two logits swapped, or a scalar head negated
    (which needs a prior symmetric about 0). Both are draws from the prior, one forward pass
    decides both on the first example, and at most one of a pair can interpolate, since the mirror
    gets every example the other way round. So the accepted networks stay i.i.d. from the
    posterior (pairs are independent) at about half the cost per draw, and the number of accepting
    pairs is Binomial(pairs, 2 P(L_S = 0)) (see ``SampleResult.acceptance_ci``).
    """

    def __init__(
        self,
        kernel,
        arch: Architecture,
        prior: Prior,
        train: Dataset,
        margin: float = DEFAULT_MARGIN,
        mirror: bool = True,
    ):
        self.kernel, self.arch, self.prior, self.margin = kernel, arch, prior, margin
        order = class_interleaved_order(train.y)
        self.x = np.ascontiguousarray(train.x[order].numpy(), dtype=np.float32)
        self.y = np.ascontiguousarray(train.y[order].numpy(), dtype=np.int8)
        if isinstance(prior, QuantizedUniform):
            self.prior_args = (1, 0.0, np.asarray(prior.levels, dtype=np.float32), prior.q)
        else:
            self.prior_args = (0, float(prior.a), np.zeros(1, dtype=np.float32), 0)
        self.n_params = arch.num_params()
        self.mirror = mirror and can_mirror(arch, prior)
        if isinstance(arch, LeNet):
            self.head = (arch.outputs, arch.layer_widths[-1], 1)
        else:
            self.head = (1, arch.layer_sizes[-2], int(arch.bias))
        # Hidden dense layers come out of the stream column by column (the kernel reads them transposed).
        self.transposed = {"w3", "w4"} if isinstance(arch, LeNet) else {f"w{layer}" for layer in range(1, arch.depth)}
        kernel.tn_set_threads(torch.get_num_threads())

    @staticmethod
    def supports(arch: Architecture, prior: Prior) -> bool:
        """FCNs and LeNets with uniform or quantized priors. The kernel redraws a whole network when
        one of its quantized codes is biased (probability < Q / 2^32 each), so networks of so many
        parameters that this is likely (Q x parameters > 2^30) are left to the torch engine."""
        if isinstance(prior, QuantizedUniform) and prior.q * arch.num_params() > 2**30:
            return False
        return isinstance(prior, (Uniform, QuantizedUniform)) and isinstance(arch, (FCN, LeNet))

    @property
    def draws_per_trial(self) -> int:
        """Draws per independent trial: 2 with mirrored pairs, else 1."""
        return 2 if self.mirror else 1

    def check(self, key: int, count: int):
        """Verdicts (int8 numpy array) for networks 0 .. count-1 of stream ``key`` (count even with
        mirrored pairs), and the forward passes evaluated."""
        if count % self.draws_per_trial:
            raise ValueError(f"mirrored pairs need an even count, got {count}")
        status = np.empty(count, dtype=np.int8)
        kind, a, levels, q = self.prior_args
        common = (kind, a, levels.ctypes.data, q, key, 0, count, self.margin, int(self.mirror), status.ctypes.data)
        x, y, n = self.x.ctypes.data, self.y.ctypes.data, len(self.y)
        if isinstance(self.arch, LeNet):
            c0, h, w = self.arch.in_shape
            evaluated = self.kernel.tn_lenet_check(
                x, y, n, c0, h, w, *self.arch.layer_widths, self.arch.outputs, *common
            )
        else:
            widths = np.asarray(self.arch.layer_sizes[:-1], dtype=np.int32)
            activation = ("relu", "sign", "leaky-relu", "tanh").index(self.arch.activation)
            evaluated = self.kernel.tn_fcn_check(
                x,
                y,
                n,
                widths.ctypes.data,
                self.arch.depth,
                int(self.arch.bias),
                int(self.arch.scaled),
                activation,
                *common,
            )
        return status, int(evaluated)

    def draw(self, key: int, ids) -> Population:
        """The parameters of networks ``ids`` of stream ``key`` as a population (in the order of ``ids``)."""
        kind, a, levels, q = self.prior_args
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        flat = np.empty((len(ids), self.n_params), dtype=np.float32)
        self.kernel.tn_draw(
            key,
            ids.ctypes.data,
            len(ids),
            self.n_params,
            kind,
            a,
            levels.ctypes.data,
            q,
            int(self.mirror),
            *self.head,
            flat.ctypes.data,
        )
        return stream_population(self.arch, self.prior, torch.from_numpy(flat), self.transposed)


def stream_population(arch: Architecture, prior: Prior, flat: torch.Tensor, transposed) -> Population:
    """Parameters in the kernels' stream order (one row per network) as a population: the layers
    named in ``transposed`` were filled column by column."""
    params = split_flat(arch, flat)
    for name in transposed:
        rows, columns = params[name].shape[1:]
        params[name] = params[name].reshape(len(flat), columns, rows).transpose(1, 2)
    return Population(arch, prior, {k: v.contiguous() for k, v in params.items()})


class CudaEngine:
    """Draw and check LeNets in one pass in the CUDA kernel (``native/gc_cuda.cu``), on a GPU or,
    for tests, in its CPU emulation (``native.cuda.emulator``).

    Network ``id`` of stream ``key`` is the same network as in ``NativeEngine`` (same random
    stream and parameter order, mirrored pairs alike), and the kernel makes the same decisions:
    early rejection, verdicts 1 accepted, 0 rejected, 2 uncertain; ``draw`` regenerates any
    network's parameters on the device for the full-precision re-check.
    """

    def __init__(
        self,
        kernel,
        arch: LeNet,
        prior: Prior,
        train: Dataset,
        margin: float = DEFAULT_MARGIN,
        mirror: bool = True,
        device: torch.device | str = "cpu",
    ):
        self.kernel, self.arch, self.prior, self.margin = kernel, arch, prior, margin
        order = class_interleaved_order(train.y)
        self.x = train.x[order].to(device=device, dtype=torch.float32).contiguous()
        self.y = train.y[order].to(device=device, dtype=torch.int8).contiguous()
        if isinstance(prior, QuantizedUniform):
            levels = torch.tensor(prior.levels, dtype=torch.float32, device=device)
            self.prior_args = (1, 0.0, levels, prior.q)
        else:
            self.prior_args = (0, float(prior.a), torch.zeros(1, device=device), 0)
        self.mirror = mirror and can_mirror(arch, prior)
        self.n_params = arch.num_params()
        if kernel.layout[8] != self.n_params:
            raise TypicalnetsError(
                f"the CUDA kernel was built for {kernel.layout[8]} parameters, not {self.n_params}; "
                "clear the kernel cache (TYPICALNETS_CACHE) and retry"
            )
        self.transposed = {"w3", "w4"}

    @staticmethod
    def supports(arch: Architecture, prior: Prior) -> bool:
        return isinstance(prior, (Uniform, QuantizedUniform)) and cuda.supports(arch)

    @property
    def draws_per_trial(self) -> int:
        return 2 if self.mirror else 1

    def check(self, key: int, count: int):
        """Verdicts (int8 numpy array) for networks 0 .. count-1 of stream ``key``, and the forward
        passes evaluated."""
        if count % self.draws_per_trial:
            raise ValueError(f"mirrored pairs need an even count, got {count}")
        status = torch.empty(count, dtype=torch.int8, device=self.x.device)
        evaluated = self.kernel.check(
            self.x, self.y, self.prior_args, key, count // self.draws_per_trial, self.margin, self.mirror, status
        )
        return status.cpu().numpy(), evaluated

    def draw(self, key: int, ids) -> Population:
        """The parameters of networks ``ids`` of stream ``key``, on the engine's device."""
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1), device=self.x.device)
        flat = torch.empty(len(ids), self.n_params, dtype=torch.float32, device=self.x.device)
        self.kernel.draw(key, ids, self.prior_args, self.mirror, flat)
        return stream_population(self.arch, self.prior, flat, self.transposed)
