"""The CUDA engine: draw and check LeNets in one pass in the CUDA kernel (``native/gc_cuda.cu``)."""

from __future__ import annotations

import numpy as np
import torch

from typicalnets.certificate import DEFAULT_MARGIN
from typicalnets.data import Dataset, class_interleaved_order
from typicalnets.engines.base import KernelEngine
from typicalnets.engines.drawing import can_mirror
from typicalnets.engines.native import stream_population
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import Architecture, LeNet, Population
from typicalnets.priors import Prior


class CudaEngine(KernelEngine):
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
        self.device = torch.device(device)
        order = class_interleaved_order(train.y)
        self.x = train.x[order].to(device=device, dtype=torch.float32).contiguous()
        self.y = train.y[order].to(device=device, dtype=torch.int8).contiguous()
        self.certify_x, self.certify_y = train.x.to(device), train.y.to(device)
        self.shape, self.kernel_prior = arch.kernel_shape(), prior.kernel_prior()
        self.levels = self.kernel_prior.levels_tensor(device)
        self.mirror = mirror and can_mirror(arch, prior)
        self.n_params = arch.num_params()
        if kernel.layout.shape != self.shape:
            raise TypicalnetsError(
                f"the CUDA kernel was built for the shape {kernel.layout.shape}, not {self.shape}; "
                "clear the kernel cache (TYPICALNETS_CACHE) and retry"
            )

    @staticmethod
    def supports(arch: Architecture, prior: Prior) -> bool:
        """LeNets whose fc layers the CUDA kernel takes (``LeNetShape.gpu``), uniform or quantized priors."""
        shape = arch.kernel_shape()
        return shape is not None and shape.gpu and prior.kernel_prior() is not None

    def check(self, key: int, count: int):
        """Verdicts (int8 numpy array) for networks 0 .. count-1 of stream ``key``, and the forward
        passes evaluated."""
        if count % self.draws_per_trial:
            raise ValueError(f"mirrored pairs need an even count, got {count}")
        status = torch.empty(count, dtype=torch.int8, device=self.x.device)
        evaluated = self.kernel.check(
            x=self.x.data_ptr(),
            y=self.y.data_ptr(),
            n=len(self.y),
            **self.kernel_prior.arguments(self.levels.data_ptr()),
            key=key,
            first_stream=0,
            streams=count // self.draws_per_trial,
            margin=self.margin,
            mirror=int(self.mirror),
            status=status.data_ptr(),
        )
        return status.cpu().numpy(), evaluated

    def draw(self, key: int, ids) -> Population:
        """The parameters of networks ``ids`` of stream ``key``, on the engine's device."""
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1), device=self.x.device)
        flat = torch.empty(len(ids), self.n_params, dtype=torch.float32, device=self.x.device)
        self.kernel.draw(
            key=key,
            ids=ids.data_ptr(),
            count=len(ids),
            **self.kernel_prior.arguments(self.levels.data_ptr()),
            mirror=int(self.mirror),
            out=flat.data_ptr(),
        )
        return stream_population(self.arch, self.prior, flat, self.shape.transposed)
