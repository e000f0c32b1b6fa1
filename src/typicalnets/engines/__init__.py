"""Guess & Check engines: how a batch of prior draws is checked for zero training error.

(The compiled kernels are imported under other names here: the submodules ``engines.native`` and
``engines.cuda`` take the names ``native`` and ``cuda`` in this package.)

Every engine follows ``engines.base.Engine`` and makes the same accept decision (the certificate
in ``typicalnets.certificate``); they differ in speed. ``select_engine`` picks one.
"""

from __future__ import annotations

import torch

from typicalnets.data import Dataset
from typicalnets.engines.base import Engine, EngineStep
from typicalnets.engines.baseline import BaselineEngine
from typicalnets.engines.cuda import CudaEngine
from typicalnets.engines.native import NativeEngine
from typicalnets.engines.pytorch import TorchEngine
from typicalnets.errors import TypicalnetsError
from typicalnets.native import cuda as cuda_kernels
from typicalnets.native import load as load_native_kernel
from typicalnets.nets import Architecture
from typicalnets.nets.base import Conv
from typicalnets.priors import Prior

ENGINES = ("fast", "native", "torch", "baseline")


def select_engine(arch: Architecture, prior: Prior, device: torch.device | str, requested: str = "fast") -> str:
    """The engine that runs ``requested`` for ``arch`` and ``prior`` on ``device``: "native-cpu",
    "cuda", "torch" or "baseline".

    | requested  | device | architecture and prior                                       | engine     |
    |------------|--------|--------------------------------------------------------------|------------|
    | "baseline" | any    | any                                                          | baseline   |
    | "torch"    | any    | any                                                          | torch      |
    | "native"   | CPU    | FCN or LeNet, uniform or quantized, a working C compiler     | native-cpu |
    | "native"   | GPU    | LeNet with fc layers >= 16 units, uniform or quantized, nvcc | cuda       |
    | "native"   | either | anything else                                                | refused    |
    | "fast"     | CPU    | where "native" applies                                       | native-cpu |
    | "fast"     | CPU    | anything else                                                | torch      |
    | "fast"     | GPU    | no convolutions (FCN, diagonal network)                      | baseline   |
    | "fast"     | GPU    | anything else                                                | torch      |

    On GPUs the batched forward of FCNs measured faster than early rejection (an H200: 2.5M against
    1.0M networks/s for FCN 784-32-1), and "fast" leaves the CUDA kernel opt-in until it is measured
    on a GPU (issue 17). Quantized priors with Q x parameters > 2^30 are not "native" on the CPU
    (``NativeEngine.supports``).
    """
    if requested not in ENGINES:
        raise TypicalnetsError(f"unknown engine {requested!r}; use one of {', '.join(ENGINES)}")
    if requested in ("torch", "baseline"):
        return requested
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu and NativeEngine.supports(arch, prior) and load_native_kernel() is not None:
        return "native-cpu"
    if requested == "native":
        if not on_cpu and CudaEngine.supports(arch, prior) and cuda_kernels.kernel(arch, device) is not None:
            return "cuda"
        raise TypicalnetsError(
            "the native engine needs a uniform or quantized prior and, on the CPU, a C compiler and an "
            "fcn/sfcn/lenet student, or on a GPU, nvcc and a lenet student with fc layers of >= 16 units; "
            "use engine='fast'"
        )
    convolutional = any(isinstance(layer, Conv) for layer in arch.layer_plan())
    return "baseline" if not on_cpu and not convolutional else "torch"


def build_engine(
    kind: str, arch: Architecture, prior: Prior, train: Dataset, device: torch.device | str, margin: float, mirror: bool
) -> Engine:
    """The engine ``kind`` (from ``select_engine``) for this task."""
    if kind == "native-cpu":
        return NativeEngine(load_native_kernel(), arch, prior, train, margin, mirror)
    if kind == "cuda":
        return CudaEngine(cuda_kernels.kernel(arch, device), arch, prior, train, margin, mirror, device)
    if kind == "torch":
        return TorchEngine(arch, prior, train, margin, mirror, device)
    return BaselineEngine(arch, prior, train, device)


__all__ = [
    "ENGINES",
    "BaselineEngine",
    "CudaEngine",
    "Engine",
    "EngineStep",
    "NativeEngine",
    "TorchEngine",
    "build_engine",
    "select_engine",
]
