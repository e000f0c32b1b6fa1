"""The native CPU kernel (fast Guess & Check, and SMC moves), compiled on first use.

``gc_kernel.c`` is compiled with the system C compiler (``cc -O3 -march=native -fopenmp``) into
a per-user cache folder the first time it is needed and loaded with ctypes. Where no compiler
works, ``load()`` returns None and the engine falls back to its PyTorch path;
``TYPICALNETS_NATIVE=0`` forces that. ``load_cached`` builds and loads every cached kernel (this
one, and the CUDA kernel and its CPU emulation in ``native.cuda``) under the same trust rules:

- The folder is ``$TYPICALNETS_CACHE/typicalnets`` (else ``$XDG_CACHE_HOME`` or ``~/.cache``),
  created with mode 0700. One owned by another user or writable by group or others is not used:
  one warning names it and the fix, and None sends the caller to the torch engine.
- An entry's name holds a hash of the source, the compiler's path and ``--version`` output, the
  CPU's model and instruction-set flags (``-march=native`` builds run only on CPUs like it) and
  the flags, so a home folder shared between machines or compilers never serves a foreign build.
- Each build is made writable by its owner alone and its sha256 recorded next to it
  (``<entry>.sha256``); both are written to scratch files and moved into place with ``os.replace``,
  so no one sees half a file. Before every load the entry must belong to the user, not be writable
  by others and match its recorded hash (a truncated library would crash the process with SIGBUS
  when mapped); once loaded, it must have the symbols its caller expects.
- A bad entry is rebuilt once, with one warning; if it is still bad, one warning says so and
  None sends the caller to the torch engine. Nothing in the cache raises or crashes.
"""

from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from typing import TypeVar

from typicalnets.errors import TypicalnetsWarning
from typicalnets.native.abi import CPUKernel

SOURCE = Path(__file__).with_name("gc_kernel.c")
FLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp",
    "-ffp-contract=fast",
    "-fno-tree-loop-distribute-patterns",
    "-shared",
    "-fPIC",
    "-std=gnu11",
]
# GCC's register-pressure-aware scheduling before register allocation: the convolution tiles then
# load each input vector once per tap instead of folding a load into most FMAs, which made them
# load-bound (LeNet G&C measured about 15% faster); tried first, dropped for compilers that refuse them.
SCHEDULING = ["-fschedule-insns", "-fsched-pressure", "-fsched-spec-load"]
# What opening an entry raises when the entry is bad: a file the loader refuses (OSError), a missing
# function (AttributeError) or a missing variable (ValueError, from ctypes' in_dll).
BAD_ENTRY_ERRORS = (OSError, AttributeError, ValueError)
UNSAFE_MODE = 0o022  # group or others may write
unload_library = _ctypes.dlclose if hasattr(_ctypes, "dlclose") else _ctypes.FreeLibrary  # POSIX, Windows

Entry = TypeVar("Entry")


def cache_dir() -> Path:
    root = os.environ.get("TYPICALNETS_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "typicalnets"


def trusted_cache_dir() -> Path | None:
    """``cache_dir()``, created for this user alone where missing; None, with one warning, where
    someone else could write into it (or it cannot be made)."""
    folder = cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = folder.stat()
    except OSError as error:
        warnings.warn(
            f"cannot create the kernel cache folder {folder} ({error}); the torch engine is used instead; "
            "set TYPICALNETS_CACHE to a writable folder",
            TypicalnetsWarning,
            stacklevel=2,
        )
        return None
    if status.st_uid != os.geteuid():
        warnings.warn(
            f"the kernel cache folder {folder} belongs to another user, so native kernels are not used; "
            "set TYPICALNETS_CACHE to a folder of your own",
            TypicalnetsWarning,
            stacklevel=2,
        )
        return None
    if status.st_mode & UNSAFE_MODE:
        warnings.warn(
            f"the kernel cache folder {folder} is writable by others, so native kernels are not used; "
            f"run `chmod go-w {folder}` or set TYPICALNETS_CACHE to a folder of your own",
            TypicalnetsWarning,
            stacklevel=2,
        )
        return None
    return folder


@cache
def compiler_version(compiler: str) -> bytes:
    """``compiler --version``: an upgraded compiler gets new entries instead of the old one's builds."""
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, check=False).stdout
    except OSError:
        return b""  # a compiler that cannot run: building with it fails, and says so


@lru_cache(maxsize=1)
def cpu_features() -> bytes:
    """The CPU's model and instruction-set flags (``Features`` is their name on ARM), from
    /proc/cpuinfo; elsewhere what ``platform`` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    wanted = sorted({line for line in lines if line.partition(":")[0].strip() in ("flags", "Features", "model name")})
    return "\n".join(wanted or [platform.processor(), platform.machine()]).encode()


def cache_key(source: Path, compiler: str, flag_sets: list[list[str]], libraries: tuple[str, ...] = ()) -> str:
    """The hash that names ``source``'s entry: everything the build depends on."""
    parts = [
        source.read_bytes(),
        compiler.encode(),
        compiler_version(compiler),
        cpu_features(),
        *(" ".join(flags).encode() for flags in flag_sets),
        " ".join(libraries).encode(),
    ]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _recorded_hash(entry: Path) -> Path:
    return entry.with_name(entry.name + ".sha256")


def _build(source: Path, compiler: str, flag_sets: list[list[str]], entry: Path, libraries: tuple[str, ...]) -> bool:
    """Compile ``source`` into ``entry`` with the first of ``flag_sets`` that builds, and record its
    hash; False when none builds."""
    with tempfile.TemporaryDirectory(dir=entry.parent) as scratch:
        built, digest = Path(scratch) / entry.name, Path(scratch) / _recorded_hash(entry).name
        for flags in flag_sets:
            command = [compiler, *flags, str(source), "-o", str(built), *libraries]
            if subprocess.run(command, capture_output=True, check=False).returncode == 0:
                break
        else:
            return False
        built.chmod(0o700)  # the umask may have left it writable by the group
        digest.write_text(hashlib.sha256(built.read_bytes()).hexdigest())
        # Atomic: concurrent builders never see half-written files. The hash goes first, so a crash in
        # between leaves an entry that fails its check (and is rebuilt), never an unchecked one.
        os.replace(digest, _recorded_hash(entry))
        os.replace(built, entry)
    return True


def _flaw(entry: Path) -> str | None:
    """Why ``entry`` must not be loaded, or None when it is the user's own build, unchanged."""
    recorded_hash = _recorded_hash(entry)
    if not recorded_hash.exists():
        return "the hash recorded when it was built is missing"
    try:
        status = entry.stat()
        recorded = recorded_hash.read_bytes().strip()
        actual = hashlib.sha256(entry.read_bytes()).hexdigest().encode()
    except OSError as error:
        return f"it cannot be read: {error}"
    if status.st_uid != os.geteuid() or status.st_mode & UNSAFE_MODE:
        return "it belongs to another user or is writable by others"
    if actual != recorded:
        return "its content differs from the hash recorded when it was built"
    return None


def _open_checked(entry: Path, open_entry: Callable[[Path], Entry]) -> tuple[Entry | None, str | None]:
    """(the opened entry, None), or (None, why it is bad)."""
    flaw = _flaw(entry)
    if flaw is not None:
        return None, flaw
    try:
        return open_entry(entry), None
    except BAD_ENTRY_ERRORS as error:
        return None, f"it does not load: {error}"


def load_cached(
    source: Path,
    compiler: str,
    flag_sets: list[list[str]],
    suffix: str,
    open_entry: Callable[[Path], Entry],
    libraries: tuple[str, ...] = (),
) -> Entry | None:
    """``open_entry`` of ``source`` compiled into the per-user cache (with the first of ``flag_sets``
    that builds), under the trust rules of the module docstring; None where no flag set builds, or
    with one warning where the cache or its entry cannot be trusted. ``open_entry`` raises one of
    ``BAD_ENTRY_ERRORS`` for an entry that is bad."""
    folder = trusted_cache_dir()
    if folder is None:
        return None
    try:
        entry = folder / f"{source.stem}-{cache_key(source, compiler, flag_sets, libraries)}{suffix}"
        if not entry.exists() and not _build(source, compiler, flag_sets, entry, libraries):
            return None  # no working compiler: the torch engine, silently, as documented
        opened, flaw = _open_checked(entry, open_entry)
        if flaw is None:
            return opened
        problem = f"the cached native kernel {entry} failed its integrity check ({flaw})"
        if not _build(source, compiler, flag_sets, entry, libraries):
            warnings.warn(
                f"{problem} and does not build again; the torch engine is used instead",
                TypicalnetsWarning,
                stacklevel=2,
            )
            return None
        opened, flaw = _open_checked(entry, open_entry)
    except OSError as error:  # an unwritable cache, a missing source, a compiler that cannot run
        warnings.warn(
            f"cannot build the native kernel {source.name} in {folder} ({error}); the torch engine is used instead",
            TypicalnetsWarning,
            stacklevel=2,
        )
        return None
    if flaw is not None:
        warnings.warn(
            f"{problem}, and its rebuild too ({flaw}); the torch engine is used instead",
            TypicalnetsWarning,
            stacklevel=2,
        )
        return None
    warnings.warn(f"{problem}; rebuilt it", TypicalnetsWarning, stacklevel=2)
    return opened


def open_library(entry: Path, declare: Callable[[ctypes.CDLL], Entry]) -> Entry:
    """``declare`` (which sets up, or wraps, the library's functions) of the shared library ``entry``."""
    library = ctypes.CDLL(str(entry))
    try:
        return declare(library)
    except BAD_ENTRY_ERRORS:
        # Unloaded, or the loader would hand this library out again for the rebuild at the same path.
        unload_library(library._handle)
        raise


@lru_cache(maxsize=1)
def load() -> CPUKernel | None:
    """The compiled kernel, or None when native code is disabled or cannot be built or trusted."""
    if os.environ.get("TYPICALNETS_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    return load_cached(
        SOURCE, compiler, [FLAGS + SCHEDULING, FLAGS], ".so", lambda entry: open_library(entry, CPUKernel), ("-lm",)
    )
