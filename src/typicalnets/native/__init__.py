"""The native CPU kernel (fast Guess & Check, and SMC moves), compiled on first use.

``gc_kernel.c`` is compiled with the system C compiler (``cc -O3 -march=native -fopenmp``) into
a per-user cache directory the first time it is needed, keyed by a hash of the source, the
compiler and the machine, and loaded with ctypes. Where no compiler works, ``load()`` returns
None and the engine falls back to its PyTorch path; ``TYPICALNETS_NATIVE=0`` forces that.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

SOURCE = Path(__file__).with_name("gc_kernel.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=fast", "-fno-tree-loop-distribute-patterns", "-shared", "-fPIC", "-std=gnu11"]
# GCC's register-pressure-aware scheduling before register allocation: the convolution tiles then
# load each input vector once per tap instead of folding a load into most FMAs, which made them
# load-bound (LeNet G&C measured about 15% faster); tried first, dropped for compilers that refuse them.
SCHEDULING = ["-fschedule-insns", "-fsched-pressure", "-fsched-spec-load"]


def cache_dir() -> Path:
    root = os.environ.get("TYPICALNETS_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "typicalnets"


def compile_cached(source: Path, compiler: str, flag_sets: list[list[str]], suffix: str, key: bytes = b"",
                   libraries: tuple[str, ...] = ()) -> Path | None:
    """``source`` compiled into the per-user cache once per (source, compiler, flags, ``key``): with
    the first of ``flag_sets`` that builds; None when none does."""
    tag = hashlib.sha256(source.read_bytes() + compiler.encode() + key
                         + " | ".join(" ".join(flags) for flags in flag_sets).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{tag}{suffix}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            for flags in flag_sets:
                command = [compiler, *flags, str(source), "-o", str(built), *libraries]
                if subprocess.run(command, capture_output=True).returncode == 0:
                    break
            else:
                return None
            os.replace(built, target)  # atomic: concurrent builders never see a half-written file
    return target


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The compiled kernel, or None when native code is disabled or cannot be built."""
    if os.environ.get("TYPICALNETS_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    library = compile_cached(SOURCE, compiler, [FLAGS + SCHEDULING, FLAGS], ".so", platform.machine().encode(),
                             ("-lm",))
    if library is None:
        return None
    try:
        kernel = ctypes.CDLL(str(library))
    except OSError:
        return None
    _declare(kernel)
    return kernel


def _declare(kernel: ctypes.CDLL) -> None:
    f32p, i8p, i32p = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p
    i, i64, u64, f32 = ctypes.c_int, ctypes.c_int64, ctypes.c_uint64, ctypes.c_float
    kernel.tn_lenet_check.restype = i64
    kernel.tn_lenet_check.argtypes = [f32p, i8p, i, i, i, i, i, i, i, i, i, i, f32, f32p, i, u64, i64, i64, f32, i, i8p]
    kernel.tn_fcn_check.restype = i64
    kernel.tn_fcn_check.argtypes = [f32p, i8p, i, i32p, i, i, i, i, i, f32, f32p, i, u64, i64, i64, f32, i, i8p]
    kernel.tn_draw.restype = None
    kernel.tn_draw.argtypes = [u64, ctypes.c_void_p, i64, i64, i, f32, f32p, i, i, i, i, i, f32p]
    kernel.tn_fcn1_moves.restype = None
    kernel.tn_fcn1_moves.argtypes = [i64, i64, i, i, i, i, i, f32p, i, i8p, i, f32p, f32p, f32p, f32p, f32p, i, i64,
                                     ctypes.c_double, u64, i64, ctypes.c_double, f32p]
    kernel.tn_set_threads.restype = None
    kernel.tn_set_threads.argtypes = [i]
