"""The native CPU engine: draw and check in one pass in the C kernel (``native/gc_kernel.c``)."""

from __future__ import annotations

import numpy as np
import torch

from typicalnets.certificate import DEFAULT_MARGIN
from typicalnets.data import Dataset, class_interleaved_order
from typicalnets.engines.base import KernelEngine
from typicalnets.engines.drawing import can_mirror
from typicalnets.native.abi import CPUKernel
from typicalnets.nets import Architecture, Population
from typicalnets.nets.population import split_flat
from typicalnets.priors import Prior


class NativeEngine(KernelEngine):
    """Draw and check in one pass in the native CPU kernel (the families and priors of ``supports``).

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
        kernel: CPUKernel,
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
        self.shape, self.kernel_prior = arch.kernel_shape(), prior.kernel_prior()
        self.levels = self.kernel_prior.levels_array()  # kept alive: the kernel reads it by pointer
        self.n_params = arch.num_params()
        self.mirror = mirror and can_mirror(arch, prior)
        kernel.set_threads(threads=torch.get_num_threads())

    @staticmethod
    def supports(arch: Architecture, prior: Prior) -> bool:
        """Families and priors the kernel takes (``kernel_shape``, ``kernel_prior``: FCNs and LeNets,
        uniform or quantized priors). The kernel redraws a whole network when one of its quantized
        codes is biased (probability < Q / 2^32 each), so networks of so many parameters that this
        is likely (Q x parameters > 2^30) are left to the torch engine."""
        kernel_prior = prior.kernel_prior()
        return (
            arch.kernel_shape() is not None
            and kernel_prior is not None
            and len(kernel_prior.levels) * arch.num_params() <= 2**30
        )

    def check(self, key: int, count: int):
        """Verdicts (int8 numpy array) for networks 0 .. count-1 of stream ``key`` (count even with
        mirrored pairs), and the forward passes evaluated."""
        if count % self.draws_per_trial:
            raise ValueError(f"mirrored pairs need an even count, got {count}")
        status = np.empty(count, dtype=np.int8)
        evaluated = self.shape.check(
            self.kernel,
            x=self.x.ctypes.data,
            y=self.y.ctypes.data,
            n=len(self.y),
            **self.kernel_prior.arguments(self.levels.ctypes.data),
            key=key,
            first_id=0,
            count=count,
            margin=self.margin,
            mirror=int(self.mirror),
            status=status.ctypes.data,
        )
        return status, int(evaluated)

    def draw(self, key: int, ids) -> Population:
        """The parameters of networks ``ids`` of stream ``key`` as a population (in the order of ``ids``)."""
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        flat = np.empty((len(ids), self.n_params), dtype=np.float32)
        self.kernel.draw(
            key=key,
            ids=ids.ctypes.data,
            count=len(ids),
            n_params=self.n_params,
            **self.kernel_prior.arguments(self.levels.ctypes.data),
            mirror=int(self.mirror),
            **self.shape.head.arguments(),
            out=flat.ctypes.data,
        )
        return stream_population(self.arch, self.prior, torch.from_numpy(flat), self.shape.transposed)


def stream_population(arch: Architecture, prior: Prior, flat: torch.Tensor, transposed) -> Population:
    """Parameters in the kernels' stream order (one row per network) as a population: the layers
    named in ``transposed`` were filled column by column."""
    params = split_flat(arch, flat)
    for name in transposed:
        rows, columns = params[name].shape[1:]
        params[name] = params[name].reshape(len(flat), columns, rows).transpose(1, 2)
    return Population(arch, prior, {k: v.contiguous() for k, v in params.items()})
