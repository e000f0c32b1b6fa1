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
certified check below gives exact verdicts in floating point instead.

Exactness: fp32 arithmetic in any order can misjudge the sign of an output within rounding error
of 0, and quantized networks often compute exact ties (two identical hidden units cancelling), where
rounding decides the sign. So the final verdict on every candidate comes from
``certified_interpolates``: an fp32 forward that also computes each output's scale
(sum of |w_i h_i| + |b| over the head) decides every output farther than ``margin`` (1e-4) of its
scale from 0 -- fp32 rounding is ~1e-6 of it -- and the few networks with an output closer than
that are recomputed in float64, where |f| <= 1e-9 x scale counts as f = 0, a mistake (float64
rounding is ~1e-16 x scale, so only exact ties and outputs within 1e-9 of one land there).
The fast engines send every network they accept, and every one with an fp32 output within the
margin, to that check; the baseline engine sends its fp32-accepted networks. So both engines
return the same accepted set for the same draws, unless the straightforward fp32 forward itself
misjudges an output by more than 1e-4 of its scale.

Overflow: ``check_float32_range`` bounds every pre-activation of every network the prior can draw,
|z| <= B, by propagating B_0 = max |x| through the layers as B <- fan_in * w_max * B + w_max
(capped at 1 after tanh and sign, times w_max after a scale; w_max is the prior's largest |level|,
its half-width a, or 10 sigma for a Gaussian). A configuration with B > FLOAT32_MAX * 2^-8 is
refused before any work. Below it, no fp32 sum can overflow in any order: every partial sum of a
layer is at most (1 + 2^-24)^k times the sum of its terms' absolute values (k terms), which is at
most B, and (1 + 2^-24)^k stays far below 2^8 for any k a machine can hold; so every engine
computes finite outputs and the engines' verdicts agree. Gaussian weights beyond 10 sigma
(probability < 2e-23 each) escape that proof, so ``certified_interpolates`` also requires every
fp32 output and scale to be finite: a network whose output is not finite is never accepted, on
any engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.native import cuda
from typicalnets.nets import CNN, FCN, Architecture, DiagonalLinear, LeNet, Population
from typicalnets.nets.base import ACTIVATIONS
from typicalnets.nets.population import split_flat
from typicalnets.priors import Gaussian, Prior, QuantizedUniform, Uniform

DEFAULT_MARGIN = 1e-4
FLOAT32_MAX = float(np.finfo(np.float32).max)
OVERFLOW_HEADROOM = 2.0**-8  # refuse worst cases within 2^8 of fp32's largest value (see above)
GAUSSIAN_TAIL = 10.0  # a Gaussian weight's bound in sigmas for the overflow check
TIE = 1e-9  # |f| <= TIE * scale in float64 counts as f = 0 (an exact tie up to float64 rounding)
# (network, example) activations of the widest layer kept at once; bounds memory per chunk.
ACTIVATION_BUDGET = {"cpu": 1 << 24, "cuda": 1 << 28}


def weight_bound(prior: Prior) -> float:
    """The largest |parameter| the prior draws (for a Gaussian, GAUSSIAN_TAIL sigmas)."""
    if isinstance(prior, QuantizedUniform):
        return max(abs(level) for level in prior.levels)
    if isinstance(prior, Uniform):
        return prior.a
    return GAUSSIAN_TAIL * prior.sigma


def activation_bound(arch: Architecture, prior: Prior, input_bound: float) -> float:
    """An upper bound on |z| over every pre-activation and output of every network the prior can
    draw, for inputs with |x| <= ``input_bound`` (see the module docstring); computed in Python
    floats, so it is inf when it exceeds float64's range."""
    w_max = weight_bound(prior)
    if isinstance(arch, DiagonalLinear):  # beta_i = prod_l w_l,i, then f = sum_i beta_i x_i
        return max(w_max**arch.depth, 1.0) * max(1.0, arch.in_dim * input_bound)
    saturating = getattr(arch, "activation", "relu") in ("tanh", "sign")
    names = list(arch.param_shapes())
    head = max(i for i, name in enumerate(names) if name.startswith("w"))
    h, worst = input_bound, input_bound
    for index, name in enumerate(names):
        kind = name[0]
        if kind == "w":
            z = arch.fan_in(name) * w_max * h
            if index + 1 < len(names) and names[index + 1][0] == "b":
                z += w_max
            worst = max(worst, 2.0 * z if index == head else z)  # two logits: f = z_1 - z_0
            h = min(z, 1.0) if saturating else z
        elif kind == "s":
            h *= w_max
            worst = max(worst, h)
    return worst


def check_float32_range(arch: Architecture, prior: Prior, x: torch.Tensor) -> None:
    """Refuse inputs and priors for which some network the prior can draw could overflow fp32."""
    input_bound = float(x.abs().max()) if x.numel() else 0.0
    bound = activation_bound(arch, prior, input_bound)
    if bound > FLOAT32_MAX * OVERFLOW_HEADROOM:
        raise TypicalnetsError(
            f"with inputs up to |x| = {input_bound:.3g} and weights up to {weight_bound(prior):.3g} "
            f"({prior.spec()}), a {arch.describe()} network can compute values up to {bound:.3g}, beyond "
            f"float32's range ({FLOAT32_MAX:.3g}); rescale the inputs or the prior's levels, or use fewer or "
            "narrower layers"
        )


def draw_fast(arch: Architecture, prior: Prior, size: int, generator: torch.Generator,
              dtype: torch.dtype = torch.float32, mirror: bool = False) -> Population:
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

    def __init__(self, arch: Architecture, train: Dataset, margin: float = DEFAULT_MARGIN,
                 device: torch.device | str = "cpu", early_rejection: bool = True, grouped: bool | None = None):
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
        convs, _, _ = _conv_layers(arch)
        spatial, channels, widest = list(arch.input_shape[1:]), arch.input_shape[0], 1
        for (k, stride, pool, *_), c_out in zip(convs, arch.widths):
            taps = k ** len(spatial)
            out = [(size - k) // stride + 1 for size in spatial]
            widest = max(widest, math.prod(out) * max(c_out, channels * taps))
            spatial, channels = [size // pool for size in out], c_out
        return widest

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_with_scale(self.arch, params, x, self.grouped)


def forward_with_scale(arch: Architecture, params: dict[str, torch.Tensor], x: torch.Tensor,
                       grouped: bool | None = None):
    """Outputs f (A, n) and their scales sum |w_i h_i| + |b| over the head.

    Conv layers after the first run as grouped convolutions (one group per network) on the CPU,
    where that measured 2-3x faster than im2col + one batched matmul, and as the latter on GPUs,
    where it measured 10% faster on an H200 (``benchmarks/gc_throughput.py --ablations``);
    ``grouped`` overrides.
    """
    if isinstance(arch, FCN):
        return _fcn_forward(arch, params, x)
    if isinstance(arch, DiagonalLinear):
        beta = arch.effective_weights(params)
        xs = x.to(beta.dtype)
        return beta @ xs.T, beta.abs() @ xs.abs().T
    return _conv_forward(arch, params, x, x.device.type == "cpu" if grouped is None else grouped)


def certified_interpolates(population: Population, x: torch.Tensor, y: torch.Tensor, margin: float = DEFAULT_MARGIN,
                           chunk: int = 256) -> torch.Tensor:
    """Zero training error, certified: the fp32 forward decides every output farther than ``margin``
    times its scale from 0; networks with an output closer than that are recomputed in float64,
    where |f| <= TIE * scale counts as f = 0 (a mistake). A network with a non-finite fp32 output
    or scale on any example is rejected (see the module docstring on overflow)."""
    x, y = x.to(population.device), y.to(population.device)
    verdicts = []
    for start in range(0, len(population), chunk):
        params = {k: v[start : start + chunk] for k, v in population.params.items()}
        f, scale = forward_with_scale(population.arch, {k: v.float() for k, v in params.items()}, x.float())
        correct = y * f > 0
        sure = f.abs() > margin * scale
        # No sure mistake, and finite in fp32: an output that overflowed is never accepted.
        verdict = (correct | ~sure).all(dim=1) & (torch.isfinite(f) & torch.isfinite(scale)).all(dim=1)
        doubtful = torch.nonzero(verdict & ~sure.all(dim=1)).flatten()
        if doubtful.numel():
            f64, scale64 = forward_with_scale(population.arch, {k: v[doubtful].double() for k, v in params.items()},
                                              x.double())
            verdict[doubtful] = (y.double() * f64 > TIE * scale64).all(dim=1)
        verdicts.append(verdict)
    return torch.cat(verdicts) if verdicts else torch.zeros(0, dtype=torch.bool, device=population.device)


def _blocks(n: int) -> list[tuple[int, int]]:
    """Example blocks 1, 1, 2, 4, 8, ...: small while many networks are alive, larger once few are."""
    blocks, start, size = [], 0, 1
    while start < n:
        blocks.append((start, min(n, start + size)))
        start += size
        if len(blocks) > 1:
            size *= 2
    return blocks


def _head(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scalar output f (two logits: z_1 - z_0) and its scale sum |w||h| + |b| for h (A, n, k), w (A, o, k)."""
    z = torch.matmul(h, w.transpose(1, 2))
    scale = torch.matmul(h.abs(), w.abs().sum(1, keepdim=True).transpose(1, 2))[..., 0]
    if b is not None:
        z = z + b.unsqueeze(1)
        scale = scale + b.abs().sum(1, keepdim=True)
    f = z[..., 1] - z[..., 0] if z.shape[-1] == 2 else z[..., 0]
    return f, scale


def _fcn_forward(arch: FCN, params, x):
    act = ACTIVATIONS[arch.activation]
    count = params["w1"].shape[0]
    h = x.to(params["w1"].dtype)
    for layer in range(1, arch.depth):
        w = params[f"w{layer}"]
        if layer == 1:  # one GEMM for the whole population: (n, d) @ (d, A * k)
            z = (h @ w.reshape(-1, w.shape[-1]).T).view(h.shape[0], count, -1).transpose(0, 1)
        else:
            z = torch.bmm(h, w.transpose(1, 2))
        if arch.bias:
            z = z + params[f"b{layer}"].unsqueeze(1)
        h = act(z)
        if arch.scaled:
            h = h * params[f"s{layer}"].unsqueeze(1)
    return _head(h, params[f"w{arch.depth}"], params.get(f"b{arch.depth}"))


def _conv_layers(arch: CNN | LeNet):
    """(kernel, stride, pool, activation, weight, bias, scale names) per conv layer, then the fc layers."""
    if isinstance(arch, LeNet):
        convs = [(5, 1, 2, "relu", "w1", "b1", None), (5, 1, 2, "relu", "w2", "b2", None)]
        return convs, [("w3", "b3"), ("w4", "b4")], ("w5", "b5")
    convs = [
        (k, s, p, arch.activation, f"w{i}", f"b{i}" if arch.bias else None, f"s{i}" if arch.scaled else None)
        for i, (k, s, p) in enumerate(zip(arch.kernel_size, arch.stride, arch.pool), start=1)
    ]
    return convs, [], (f"w{arch.depth}", f"b{arch.depth}" if arch.bias else None)


def _max_pool(h: torch.Tensor, pools: tuple[int, int]) -> torch.Tensor:
    """Max-pool with kernel = stride (floor) as elementwise maxima of strided views: the same values
    as F.max_pool2d, which measured several times slower on the CPU for many small maps."""
    ph, pw = h.shape[2] // pools[0], h.shape[3] // pools[1]
    views = [h[:, :, dy : dy + ph * pools[0] : pools[0], dx : dx + pw * pools[1] : pools[1]]
             for dy in range(pools[0]) for dx in range(pools[1])]
    out = views[0]
    for view in views[1:]:
        out = torch.maximum(out, view)
    return out


def _im2col(h: torch.Tensor, kernel: tuple[int, int], strides: tuple[int, int]) -> torch.Tensor:
    """(rows, c, H, W) -> (rows, c * kh * kw, positions) by one strided copy (F.unfold launches a
    kernel per image on CUDA, which measured 30x slower for large populations)."""
    windows = h.unfold(2, kernel[0], strides[0]).unfold(3, kernel[1], strides[1])  # (rows, c, Ho, Wo, kh, kw)
    rows, channels, out_h, out_w = windows.shape[:4]
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(rows, channels * kernel[0] * kernel[1], out_h * out_w)


def _conv_forward(arch: CNN | LeNet, params, x, grouped: bool = False):
    convs, fcs, head = _conv_layers(arch)
    count = params["w1"].shape[0]
    n = x.shape[0]
    h = x.to(params["w1"].dtype)
    if h.ndim == 3:  # 1-D convs run as 2-D convs of height 1
        h = h.unsqueeze(2)
    two_d = isinstance(arch, LeNet) or arch.dims == 2
    for index, (k, stride, pool, activation, w_name, b_name, s_name) in enumerate(convs):
        w = params[w_name]
        c_out = w.shape[1]
        kernel, strides, pools = ((k, k), (stride, stride), (pool, pool)) if two_d else ((1, k), (1, stride), (1, pool))
        height = (h.shape[2] - kernel[0]) // strides[0] + 1
        width = (h.shape[3] - kernel[1]) // strides[1] + 1
        w_flat = w.reshape(count, c_out, -1)
        patches = _im2col(h, kernel, strides) if index == 0 or not grouped else None  # (rows, c_in * taps, positions)
        if index == 0:  # the input is shared: one GEMM (A * c_out, c_in * taps) @ (c_in * taps, n * positions)
            z = w_flat.reshape(count * c_out, -1) @ patches.transpose(0, 1).reshape(patches.shape[1], -1)
        elif grouped:
            z = F.conv2d(h.view(count, n, -1, *h.shape[2:]).transpose(0, 1).reshape(n, -1, *h.shape[2:]),
                         w.reshape(count * c_out, -1, *kernel), stride=strides, groups=count)
            z = z.view(n, count, c_out, -1).permute(1, 2, 0, 3)
        else:  # one batched matmul over networks, no grouped convolution
            taps = patches.shape[1]
            cols = patches.view(count, n, taps, -1).transpose(1, 2).reshape(count, taps, -1)
            z = torch.bmm(w_flat, cols)
        z = z.view(count, c_out, n, -1)
        if b_name is not None:
            z = z + params[b_name].view(count, c_out, 1, 1)
        h = ACTIVATIONS[activation](z).transpose(1, 2).reshape(count * n, c_out, height, width)
        if pool > 1:
            h = _max_pool(h, pools)
        if s_name is not None:
            h = h * params[s_name].repeat_interleave(n, 0).view(count * n, c_out, 1, 1)
    h = h.reshape(count, n, -1)  # channel-major features per (network, example)
    for w_name, b_name in fcs:
        h = torch.relu(torch.baddbmm(params[b_name].unsqueeze(1), h, params[w_name].transpose(1, 2)))
    return _head(h, params[head[0]], params.get(head[1]) if head[1] else None)


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

    def __init__(self, kernel, arch: Architecture, prior: Prior, train: Dataset, margin: float = DEFAULT_MARGIN,
                 mirror: bool = True):
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
        self.transposed = {"w3", "w4"} if isinstance(arch, LeNet) else {f"w{l}" for l in range(1, arch.depth)}
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
            evaluated = self.kernel.tn_lenet_check(x, y, n, c0, h, w, *self.arch.layer_widths, self.arch.outputs,
                                                   *common)
        else:
            widths = np.asarray(self.arch.layer_sizes[:-1], dtype=np.int32)
            activation = ("relu", "sign", "leaky-relu", "tanh").index(self.arch.activation)
            evaluated = self.kernel.tn_fcn_check(x, y, n, widths.ctypes.data, self.arch.depth, int(self.arch.bias),
                                                 int(self.arch.scaled), activation, *common)
        return status, int(evaluated)

    def draw(self, key: int, ids) -> Population:
        """The parameters of networks ``ids`` of stream ``key`` as a population (in the order of ``ids``)."""
        kind, a, levels, q = self.prior_args
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        flat = np.empty((len(ids), self.n_params), dtype=np.float32)
        self.kernel.tn_draw(key, ids.ctypes.data, len(ids), self.n_params, kind, a, levels.ctypes.data, q,
                            int(self.mirror), *self.head, flat.ctypes.data)
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

    def __init__(self, kernel, arch: LeNet, prior: Prior, train: Dataset, margin: float = DEFAULT_MARGIN,
                 mirror: bool = True, device: torch.device | str = "cpu"):
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
            raise TypicalnetsError(f"the CUDA kernel was built for {kernel.layout[8]} parameters, not {self.n_params}; "
                                   "clear the kernel cache (TYPICALNETS_CACHE) and retry")
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
        evaluated = self.kernel.check(self.x, self.y, self.prior_args, key, count // self.draws_per_trial,
                                      self.margin, self.mirror, status)
        return status.cpu().numpy(), evaluated

    def draw(self, key: int, ids) -> Population:
        """The parameters of networks ``ids`` of stream ``key``, on the engine's device."""
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1), device=self.x.device)
        flat = torch.empty(len(ids), self.n_params, dtype=torch.float32, device=self.x.device)
        self.kernel.draw(key, ids, self.prior_args, self.mirror, flat)
        return stream_population(self.arch, self.prior, flat, self.transposed)
