"""The native CPU engine: draw and check in one pass in the C kernel (``native/gc_kernel.c``)."""

from __future__ import annotations

import numpy as np
import torch

from typicalnets.certificate import DEFAULT_MARGIN
from typicalnets.data import Dataset, class_interleaved_order
from typicalnets.engines.base import KernelEngine
from typicalnets.engines.drawing import can_mirror
from typicalnets.native import KERNEL_ACTIVATIONS
from typicalnets.nets import FCN, Architecture, LeNet, Population
from typicalnets.nets.population import split_flat
from typicalnets.priors import Prior, QuantizedUniform, Uniform


class NativeEngine(KernelEngine):
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
        self.device = torch.device("cpu")
        order = class_interleaved_order(train.y)
        self.x = np.ascontiguousarray(train.x[order].numpy(), dtype=np.float32)
        self.y = np.ascontiguousarray(train.y[order].numpy(), dtype=np.int8)
        self.certify_x, self.certify_y = train.x, train.y
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
            activation = KERNEL_ACTIVATIONS.index(self.arch.activation)
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
