"""The interface between Python and the compiled kernels (``gc_kernel.c``, ``gc_cuda.cu``), in one place.

- The C enums (``PriorKind``, ``Activation``, ``Verdict``), in the order of the sources' ``enum``s.
- ``Signature``: a kernel function's arguments as named, typed fields. Calls name every argument
  (``kernel.fcn_check(x=..., y=..., ...)``); a missing or unknown name raises instead of shifting
  the others, and the same table declares ctypes' ``argtypes`` and packs CUDA launch arguments.
- Descriptors of what the kernels take: ``KernelPrior`` (from ``Prior.kernel_prior``), and the network
  shapes ``FCNShape`` and ``LeNetShape`` (from ``Architecture.kernel_shape``), each knowing which
  kernel function checks it, its head layout for ``tn_draw`` and which layers its stream fills
  column by column. Engines hold descriptors and never ask which family or prior they run.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np
import torch


class PriorKind(IntEnum):
    """``enum { PRIOR_UNIFORM = 0, PRIOR_QUANTIZED = 1 }``."""

    UNIFORM = 0
    QUANTIZED = 1


class Activation(IntEnum):
    """``enum { ACT_RELU = 0, ACT_SIGN = 1, ACT_LEAKY = 2, ACT_TANH = 3 }``."""

    RELU = 0
    SIGN = 1
    LEAKY_RELU = 2
    TANH = 3

    @classmethod
    def named(cls, name: str) -> Activation:
        """The code of an activation as ``nets.base.ACTIVATIONS`` names it ("leaky-relu" -> LEAKY_RELU)."""
        return cls[name.upper().replace("-", "_")]


class Verdict(IntEnum):
    """``enum { REJECTED = 0, ACCEPTED = 1, UNCERTAIN = 2 }``: a kernel's word on one network."""

    REJECTED = 0
    ACCEPTED = 1
    UNCERTAIN = 2


POINTER, INT, INT64, UINT64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_uint64
FLOAT, DOUBLE = ctypes.c_float, ctypes.c_double


class Signature(NamedTuple):
    """A kernel function: its C name, return type and (argument name, ctypes type) in C order."""

    name: str
    restype: Any
    fields: tuple[tuple[str, Any], ...]

    def ordered(self, arguments: dict[str, Any]) -> list[Any]:
        """The values of ``arguments`` in C order; every field named once, nothing else."""
        names = [name for name, _ in self.fields]
        missing, unknown = set(names) - set(arguments), set(arguments) - set(names)
        if missing or unknown:
            raise TypeError(f"{self.name}: missing arguments {sorted(missing)}, unknown {sorted(unknown)}")
        return [arguments[name] for name in names]

    def packed(self, arguments: dict[str, Any]) -> list[Any]:
        """``ordered`` values as ctypes objects (what ``cuLaunchKernel`` takes pointers to)."""
        return [kind(value) for (_, kind), value in zip(self.fields, self.ordered(arguments))]

    def bind(self, library: ctypes.CDLL):
        """The library's function, declared with these types, called with keyword arguments only."""
        function = getattr(library, self.name)  # AttributeError names a missing symbol
        function.restype = self.restype
        function.argtypes = [kind for _, kind in self.fields]

        def call(**arguments: Any) -> Any:
            return function(*self.ordered(arguments))

        return call


PRIOR_FIELDS = (("prior_kind", INT), ("prior_a", FLOAT), ("levels", POINTER), ("q", INT))
DATA_FIELDS = (("x", POINTER), ("y", POINTER), ("n", INT))
VERDICT_FIELDS = (("margin", FLOAT), ("mirror", INT), ("status", POINTER))

STREAM_FIELDS = (("key", UINT64), ("first_id", INT64), ("count", INT64))


def check_signature(name: str, shape_fields: tuple[tuple[str, Any], ...]) -> Signature:
    """A CPU check function: the data, the network's shape, the prior, the stream and the verdicts."""
    return Signature(name, INT64, DATA_FIELDS + shape_fields + PRIOR_FIELDS + STREAM_FIELDS + VERDICT_FIELDS)


LENET_CHECK = check_signature(
    "tn_lenet_check", tuple((name, INT) for name in ("c0", "h", "w", "c1", "c2", "f1", "f2", "outputs"))
)
FCN_CHECK = check_signature(
    "tn_fcn_check", (("widths", POINTER), ("depth", INT), ("bias", INT), ("scaled", INT), ("act", INT))
)
DRAW = Signature(
    "tn_draw",
    None,
    (("key", UINT64), ("ids", POINTER), ("count", INT64), ("n_params", INT64))
    + PRIOR_FIELDS
    + (("mirror", INT), ("outputs", INT), ("head_k", INT), ("head_bias", INT), ("out", POINTER)),
)
FCN1_MOVES = Signature(
    "tn_fcn1_moves",
    None,
    (("particles", INT64), ("n_params", INT64))
    + tuple((name, INT) for name in ("d", "h", "bias", "scaled", "act"))
    + (("xt", POINTER), ("ld", INT), ("y", POINTER), ("seen", INT))
    + tuple((name, POINTER) for name in ("flat", "z", "f", "scale", "levels"))
    + (("q", INT), ("proposals", INT64), ("tail_share", DOUBLE), ("key", UINT64), ("first_id", INT64))
    + (("tie", DOUBLE), ("accepted", POINTER)),
)
SET_THREADS = Signature("tn_set_threads", None, (("threads", INT),))

# gc_cuda.cu: the shape is compiled in, so the functions take the data, the prior and the streams.
CUDA_CHECK_FIELDS = (
    DATA_FIELDS + PRIOR_FIELDS + (("key", UINT64), ("first_stream", INT64), ("streams", INT64)) + VERDICT_FIELDS
)
EMULATED_LENET_CHECK = Signature("tn_lenet_check", INT64, CUDA_CHECK_FIELDS)
GPU_LENET_CHECK = Signature("tn_lenet_check", None, CUDA_CHECK_FIELDS + (("counters", POINTER),))
CUDA_LENET_DRAW = Signature(
    "tn_lenet_draw",
    None,
    (("key", UINT64), ("ids", POINTER), ("count", INT64)) + PRIOR_FIELDS + (("mirror", INT), ("out", POINTER)),
)


class CPUKernel:
    """The CPU kernel (``gc_kernel.c``) with its functions bound by name."""

    def __init__(self, library: ctypes.CDLL):
        self.library = library
        self.lenet_check = LENET_CHECK.bind(library)
        self.fcn_check = FCN_CHECK.bind(library)
        self.draw = DRAW.bind(library)
        self.fcn1_moves = FCN1_MOVES.bind(library)
        self.set_threads = SET_THREADS.bind(library)


@dataclass(frozen=True)
class KernelPrior:
    """A prior as the kernels draw it: uniform on [-half_width, half_width], or uniform over levels."""

    kind: PriorKind
    half_width: float = 0.0
    levels: tuple[float, ...] = ()

    def levels_array(self) -> np.ndarray:
        """The levels as float32 (one placeholder for a uniform prior: the kernels want a pointer)."""
        return np.asarray(self.levels or (0.0,), dtype=np.float32)

    def arguments(self, levels_pointer: int) -> dict[str, Any]:
        """The ``PRIOR_FIELDS`` of a call, with the levels at ``levels_pointer`` (kept alive by the caller)."""
        kind, q = int(self.kind), len(self.levels)
        return {"prior_kind": kind, "prior_a": self.half_width, "levels": levels_pointer, "q": q}

    def levels_tensor(self, device: torch.device | str) -> torch.Tensor:
        """``levels_array()`` on ``device`` (the CUDA kernel reads its levels there)."""
        return torch.from_numpy(self.levels_array()).to(device)


@dataclass(frozen=True)
class HeadShape:
    """The output layer in the stream, for ``tn_draw``'s mirroring: outputs x inputs (+ outputs biases)."""

    outputs: int
    inputs: int
    bias: bool

    def arguments(self) -> dict[str, int]:
        return {"outputs": self.outputs, "head_k": self.inputs, "head_bias": int(self.bias)}


@dataclass(frozen=True)
class FCNShape:
    """A fully connected network for ``tn_fcn_check``: layer sizes from the input to the last hidden layer."""

    sizes: tuple[int, ...]
    bias: bool
    scaled: bool
    activation: Activation

    @property
    def gpu(self) -> bool:
        """The CUDA kernel is LeNet's alone."""
        return False

    @property
    def depth(self) -> int:
        return len(self.sizes)

    @property
    def head(self) -> HeadShape:
        return HeadShape(1, self.sizes[-1], self.bias)

    @property
    def transposed(self) -> frozenset[str]:
        """The hidden weights come out of the stream column by column (the kernel reads them transposed)."""
        return frozenset(f"w{layer}" for layer in range(1, self.depth))

    def check(self, kernel: CPUKernel, **arguments: Any) -> int:
        """``tn_fcn_check`` on this shape; ``arguments`` are the data, prior, stream and verdict fields."""
        sizes = np.asarray(self.sizes, dtype=np.int32)
        return kernel.fcn_check(
            widths=sizes.ctypes.data,
            depth=self.depth,
            bias=int(self.bias),
            scaled=int(self.scaled),
            act=int(self.activation),
            **arguments,
        )


@dataclass(frozen=True)
class LeNetShape:
    """A LeNet for ``tn_lenet_check`` (CPU) and the CUDA kernel: input (c0, h, w), conv channels c1, c2,
    fc units f1, f2 and the head's outputs (2 logits or 1 scalar)."""

    c0: int
    h: int
    w: int
    c1: int
    c2: int
    f1: int
    f2: int
    outputs: int

    @property
    def gpu(self) -> bool:
        """The CUDA kernel needs fc layers of at least 16 units (a stream step's 16 weights then feed
        16 different units)."""
        return min(self.f1, self.f2) >= 16

    @property
    def head(self) -> HeadShape:
        return HeadShape(self.outputs, self.f2, True)

    @property
    def transposed(self) -> frozenset[str]:
        return frozenset({"w3", "w4"})

    def fields(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in ("c0", "h", "w", "c1", "c2", "f1", "f2", "outputs")}

    def check(self, kernel: CPUKernel, **arguments: Any) -> int:
        """``tn_lenet_check`` on this shape; ``arguments`` are the data, prior, stream and verdict fields."""
        return kernel.lenet_check(**self.fields(), **arguments)

    def defines(self) -> list[str]:
        """The compile-time shape of a CUDA build (``-DC0=1 ...``)."""
        names = {"c0": "C0", "h": "H", "w": "W", "c1": "C1", "c2": "C2", "f1": "F1", "f2": "F2", "outputs": "OUT"}
        return [f"-D{names[field]}={value}" for field, value in self.fields().items()]


class LeNetLayout(NamedTuple):
    """``tn_lenet_layout``: the shape a CUDA build was compiled for, and its per-network scratch."""

    shape: LeNetShape
    parameters: int
    shared_floats: int  # floats of shared memory per network

    FIELDS = 10  # the array's length: the shape's 8 fields, then the two counts

    @classmethod
    def read(cls, values) -> LeNetLayout:
        """The layout from the kernel's ``int[FIELDS]`` array."""
        values = [int(value) for value in values]
        return cls(LeNetShape(*values[:8]), values[8], values[9])


KernelShape = FCNShape | LeNetShape
