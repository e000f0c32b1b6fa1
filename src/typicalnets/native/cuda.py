"""The CUDA LeNet kernel (``gc_cuda.cu``): built with nvcc on first use, or emulated on the CPU.

``kernel(arch, device)`` compiles the source for the GPU's architecture with the shape of ``arch``
fixed at compile time (``nvcc -cubin``, cached and verified like the CPU kernel, by
``native.load_cached``) and loads it through the CUDA driver API (``libcuda``, the library every
CUDA install has) into the context PyTorch uses, so kernels run on PyTorch's stream over PyTorch
tensors. Where nvcc or the driver is missing, or the cache cannot be trusted, it returns None and
Guess & Check falls back to the PyTorch engine; ``TYPICALNETS_NATIVE=0`` forces that.

``emulator(arch)`` compiles the same source as C++ for the CPU (``TN_EMULATE``: a half-warp's 16
threads run one after another between barriers), which computes what the GPU computes; the tests
check it against the CPU kernel and the straightforward method where no GPU is.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from functools import cache, lru_cache
from pathlib import Path

import torch

from typicalnets.native import load_cached, open_library
from typicalnets.native.abi import CUDA_LENET_DRAW, EMULATED_LENET_CHECK, GPU_LENET_CHECK, LeNetLayout
from typicalnets.nets import Architecture, LeNet

SOURCE = Path(__file__).with_name("gc_cuda.cu")
THREADS = 128  # threads per block: 8 half-warps, one network each (the kernel's __launch_bounds__)
NETWORKS_PER_BLOCK = THREADS // 16
# Exact arithmetic as written: no contraction of a * b + c beyond the source's own fmaf calls.
NVCC_FLAGS = ["-cubin", "-O3", "--fmad=false", "-std=c++17"]
EMULATOR_FLAGS = [
    "-x",
    "c++",
    "-O2",
    "-ffp-contract=off",
    "-fno-strict-aliasing",
    "-Wno-unknown-pragmas",
    "-shared",
    "-fPIC",
]


def supports(arch: Architecture) -> bool:
    """Networks whose kernel shape the CUDA kernel takes (``LeNetShape.gpu``)."""
    shape = arch.kernel_shape()
    return shape is not None and shape.gpu


def shape_defines(arch: LeNet) -> list[str]:
    """The compile-time shape of ``arch``'s build."""
    return arch.kernel_shape().defines()


class EmulatedKernel:
    """The kernel's code compiled for the CPU: the same verdicts and parameters, slowly."""

    def __init__(self, library: ctypes.CDLL):
        self.library = library
        self.layout = LeNetLayout.read((ctypes.c_int * LeNetLayout.FIELDS).in_dll(library, "tn_lenet_layout"))
        self.check = EMULATED_LENET_CHECK.bind(library)  # returns the forwards evaluated
        self.draw = CUDA_LENET_DRAW.bind(library)


@cache
def emulator(arch: LeNet) -> EmulatedKernel | None:
    """The kernel for ``arch`` compiled as C++ for this CPU, or None without a C++ compiler."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None or not supports(arch):
        return None
    return load_cached(
        SOURCE,
        compiler,
        [EMULATOR_FLAGS + shape_defines(arch)],
        ".so",
        lambda entry: open_library(entry, EmulatedKernel),
    )


class DriverError(OSError):
    """A CUDA driver call failed; an OSError, so that a cubin the driver refuses is a bad cache entry."""


class GPUKernel:
    """The cubin loaded into PyTorch's context on one device, launched on PyTorch's current stream."""

    def __init__(self, driver: ctypes.CDLL, cubin: Path, device: torch.device):
        self.driver, self.device = driver, device
        with torch.cuda.device(device):
            torch.cuda.current_stream(device).synchronize()  # makes PyTorch's context current on this thread
            self.module = ctypes.c_void_p()
            self._call("cuModuleLoadData", ctypes.byref(self.module), cubin.read_bytes())
            self.check_fn, self.draw_fn = ctypes.c_void_p(), ctypes.c_void_p()
            self._call("cuModuleGetFunction", ctypes.byref(self.check_fn), self.module, b"tn_lenet_check")
            self._call("cuModuleGetFunction", ctypes.byref(self.draw_fn), self.module, b"tn_lenet_draw")
            pointer, size = ctypes.c_uint64(), ctypes.c_size_t()
            self._call(
                "cuModuleGetGlobal_v2", ctypes.byref(pointer), ctypes.byref(size), self.module, b"tn_lenet_layout"
            )
            layout = (ctypes.c_int * LeNetLayout.FIELDS)()
            self._call("cuMemcpyDtoH_v2", layout, pointer, ctypes.c_size_t(ctypes.sizeof(layout)))
            self.layout = LeNetLayout.read(layout)
            self.shared_bytes = NETWORKS_PER_BLOCK * self.layout.shared_floats * 4
            max_dynamic_shared = 8  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            self._call("cuFuncSetAttribute", self.check_fn, max_dynamic_shared, ctypes.c_int(self.shared_bytes))
            blocks = ctypes.c_int()
            self._call(
                "cuOccupancyMaxActiveBlocksPerMultiprocessor",
                ctypes.byref(blocks),
                self.check_fn,
                ctypes.c_int(THREADS),
                ctypes.c_size_t(self.shared_bytes),
            )
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            self.resident_blocks = max(1, blocks.value) * sms
        self.counters = torch.zeros(2, dtype=torch.int64, device=device)

    def _call(self, name: str, *args) -> None:
        result = getattr(self.driver, name)(*args)
        if result != 0:
            message = ctypes.c_char_p()
            self.driver.cuGetErrorString(result, ctypes.byref(message))
            raise DriverError(f"{name} failed: {(message.value or b'?').decode()} (CUresult {result})")

    def _launch(self, function, blocks: int, shared: int, args: list) -> None:
        holders = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
        stream = ctypes.c_void_p(torch.cuda.current_stream(self.device).cuda_stream)
        self._call("cuLaunchKernel", function, blocks, 1, 1, THREADS, 1, 1, shared, stream, holders, None)

    def check(self, **arguments) -> int:
        """``tn_lenet_check`` on the GPU (the fields of ``abi.EMULATED_LENET_CHECK``): the forwards evaluated."""
        self.counters.zero_()
        blocks = min(self.resident_blocks, -(-arguments["streams"] // NETWORKS_PER_BLOCK))
        packed = GPU_LENET_CHECK.packed({**arguments, "counters": self.counters.data_ptr()})
        with torch.cuda.device(self.device):
            self._launch(self.check_fn, blocks, self.shared_bytes, packed)
        return int(self.counters[1])

    def draw(self, **arguments) -> None:
        """``tn_lenet_draw`` on the GPU (the fields of ``abi.CUDA_LENET_DRAW``)."""
        if arguments["count"] == 0:
            return
        with torch.cuda.device(self.device):
            blocks = -(-arguments["count"] // NETWORKS_PER_BLOCK)
            self._launch(self.draw_fn, blocks, 0, CUDA_LENET_DRAW.packed(arguments))


@lru_cache(maxsize=1)
def _driver() -> ctypes.CDLL | None:
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    for name in (
        "cuModuleLoadData",
        "cuModuleGetFunction",
        "cuModuleGetGlobal_v2",
        "cuMemcpyDtoH_v2",
        "cuFuncSetAttribute",
        "cuOccupancyMaxActiveBlocksPerMultiprocessor",
        "cuLaunchKernel",
        "cuGetErrorString",
    ):
        getattr(driver, name).restype = ctypes.c_int
    driver.cuModuleGetFunction.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p]
    driver.cuModuleGetGlobal_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p]
    driver.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
    driver.cuLaunchKernel.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    return driver


@cache
def _gpu_kernel(arch: LeNet, device: torch.device) -> GPUKernel | None:
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    driver = _driver()
    if nvcc is None or driver is None:
        return None
    major, minor = torch.cuda.get_device_capability(device)
    flags = [*NVCC_FLAGS, f"-arch=sm_{major}{minor}", *shape_defines(arch)]
    return load_cached(SOURCE, nvcc, [flags], ".cubin", lambda cubin: GPUKernel(driver, cubin, device))


def kernel(arch, device: torch.device | str) -> GPUKernel | None:
    """The compiled kernel for ``arch`` on CUDA ``device``, or None where it cannot be built or
    loaded (no CUDA device, no nvcc, an unsupported shape, or ``TYPICALNETS_NATIVE=0``)."""
    device = torch.device(device)
    if (
        device.type != "cuda"
        or not torch.cuda.is_available()
        or not supports(arch)
        or os.environ.get("TYPICALNETS_NATIVE", "1") == "0"
    ):
        return None
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _gpu_kernel(arch, device)
