"""The Python side of the kernels' interface (``native/abi.py``) against the C and CUDA sources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from typicalnets.native import abi
from typicalnets.native import cuda as cuda_kernel
from typicalnets.nets import ACTIVATIONS, CNN, FCN, DiagonalLinear, LeNet
from typicalnets.priors import Gaussian, QuantizedUniform, Uniform

SOURCES = Path(abi.__file__).parent
C_TYPES = {"int": abi.INT, "int64_t": abi.INT64, "uint64_t": abi.UINT64, "float": abi.FLOAT, "double": abi.DOUBLE}


def c_parameters(source: str, name: str, kernel: bool = False) -> list[tuple[str, object]]:
    """(name, ctypes type) of each parameter of the definition of ``name`` in ``source`` (a CUDA
    ``__global__`` kernel's when ``kernel``, else the host function's)."""
    text = (SOURCES / source).read_text()
    marker = r"__global__ void __launch_bounds__\(\d+\) " if kernel else r"(?:^|\n)(?:extern \"C\" )?(?:int64_t|void) "
    match = re.search(marker + name + r"\(([^)]*)\)\s*\{", text)
    assert match, f"{name} not defined in {source}"
    parameters = []
    for declaration in match.group(1).split(","):
        words = declaration.replace("*", " * ").split()
        kind = abi.POINTER if "*" in words else C_TYPES[words[-2]]
        parameters.append((words[-1], kind))
    return parameters


@pytest.mark.parametrize(
    ("signature", "source", "kernel"),
    [
        (abi.LENET_CHECK, "gc_kernel.c", False),
        (abi.FCN_CHECK, "gc_kernel.c", False),
        (abi.DRAW, "gc_kernel.c", False),
        (abi.FCN1_MOVES, "gc_kernel.c", False),
        (abi.SET_THREADS, "gc_kernel.c", False),
        (abi.EMULATED_LENET_CHECK, "gc_cuda.cu", False),
        (abi.CUDA_LENET_DRAW, "gc_cuda.cu", False),
        (abi.GPU_LENET_CHECK, "gc_cuda.cu", True),
    ],
    ids=["lenet_check", "fcn_check", "draw", "fcn1_moves", "set_threads", "emulated_check", "cuda_draw", "gpu_check"],
)
def test_every_signature_names_and_types_the_sources_parameters_in_order(signature, source, kernel):
    assert list(signature.fields) == c_parameters(source, signature.name, kernel)


@pytest.mark.parametrize(("enum", "prefix"), [(abi.PriorKind, "PRIOR_"), (abi.Activation, "ACT_"), (abi.Verdict, "")])
def test_enums_match_the_c_enums(enum, prefix):
    text = (SOURCES / "gc_kernel.c").read_text()
    first = f"{prefix}{next(iter(enum)).name.split('_')[0]}"
    body = re.search(r"enum \{ (" + first + r"[^}]*)\}", text).group(1)
    values = {name.strip(): int(value) for name, value in (item.split("=") for item in body.split(","))}
    assert [(member.value) for member in enum] == sorted(values.values())
    short = {"LEAKY_RELU": "LEAKY"}  # the C enum's shorter name
    assert {prefix + short.get(member.name, member.name): member.value for member in enum} == values


def test_every_activation_has_a_kernel_code():
    assert [abi.Activation.named(name).name for name in ACTIVATIONS] == ["RELU", "SIGN", "LEAKY_RELU", "TANH"]


def test_a_call_must_name_every_argument_and_nothing_else():
    with pytest.raises(TypeError, match=r"missing arguments \['threads'\], unknown \['thread'\]"):
        abi.SET_THREADS.ordered({"thread": 2})
    assert abi.SET_THREADS.ordered({"threads": 2}) == [2]
    assert [type(value) for value in abi.SET_THREADS.packed({"threads": 2})] == [abi.INT]


def test_families_and_priors_describe_themselves_to_the_kernels():
    fcn = FCN(5, (4, 3), activation="tanh", bias=False, scaled=True).kernel_shape()
    assert fcn == abi.FCNShape((5, 4, 3), False, True, abi.Activation.TANH)
    assert fcn.head == abi.HeadShape(1, 3, False) and fcn.transposed == {"w1", "w2"} and not fcn.gpu
    lenet = LeNet.with_width_factor(0.5, (1, 20, 18), "scalar").kernel_shape()
    assert lenet == abi.LeNetShape(1, 20, 18, 3, 8, 60, 42, 1) and lenet.gpu
    assert lenet.head == abi.HeadShape(1, 42, True) and lenet.transposed == {"w3", "w4"}
    assert lenet.defines() == ["-DC0=1", "-DH=20", "-DW=18", "-DC1=3", "-DC2=8", "-DF1=60", "-DF2=42", "-DOUT=1"]
    assert not LeNet.with_width_factor(0.1).kernel_shape().gpu  # fc layers of 12 and 8 units
    assert CNN((1, 8), (2,)).kernel_shape() is None and DiagonalLinear(4).kernel_shape() is None
    assert QuantizedUniform.evenly_spaced(3).kernel_prior() == abi.KernelPrior(abi.PriorKind.QUANTIZED, 0.0, (-1, 0, 1))
    uniform = Uniform(0.5).kernel_prior()
    assert uniform.arguments(7) == {"prior_kind": 0, "prior_a": 0.5, "levels": 7, "q": 0}
    assert uniform.levels_array().tolist() == [0.0]  # a placeholder the kernel never reads
    assert Gaussian(1.0).kernel_prior() is None


def test_cuda_support_follows_the_kernel_shape():
    assert cuda_kernel.supports(LeNet.with_width_factor(0.5))
    assert not cuda_kernel.supports(LeNet.with_width_factor(0.1)) and not cuda_kernel.supports(FCN(4, (16,)))
