"""The compiled-kernel cache trusts only the user's own, unchanged builds: a bad entry is rebuilt
or refused with one warning line, never loaded, and never crashes the process."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

from typicalnets import native
from typicalnets.data import Dataset, boolean_cube
from typicalnets.errors import TypicalnetsWarning
from typicalnets.native import cuda
from typicalnets.nets import FCN, LeNet
from typicalnets.priors import QuantizedUniform
from typicalnets.samplers import GuessAndCheck

COMPILER = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
needs_compiler = pytest.mark.skipif(COMPILER is None, reason="no C compiler")
TINY_FLAGS = [["-shared", "-fPIC"]]


def one_warning(call):
    """``call()`` and the message of the one warning it gave (any other warning fails the test)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    assert [w.category for w in caught] == [TypicalnetsWarning], [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "\n" not in message
    return result, message


def replace_file(path: Path, data: bytes) -> None:
    """``path`` now holds ``data``, as a new file: rewriting the old one in place would change the
    pages of a copy this process may have loaded (and crash it at exit)."""
    scratch = path.with_name(path.name + ".new")
    scratch.write_bytes(data)
    os.replace(scratch, path)


def record_hash(entry: Path) -> None:
    """The hash the cache records for a build of its own, here for a file the test put in place."""
    entry.with_name(entry.name + ".sha256").write_text(hashlib.sha256(entry.read_bytes()).hexdigest())


def compile_library(source: str, folder: Path) -> bytes:
    """A shared library built from C ``source``, outside the cache."""
    (folder / "other.c").write_text(source)
    subprocess.run([COMPILER, "-shared", "-fPIC", str(folder / "other.c"), "-o", str(folder / "other.so")], check=True)
    return (folder / "other.so").read_bytes()


def the_answer(library):
    library.tn_answer.restype = int
    return library.tn_answer()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder of this test's own (``load()`` forgets its kernel before and after)."""
    monkeypatch.setenv("TYPICALNETS_CACHE", str(tmp_path / "root"))
    monkeypatch.delenv("TYPICALNETS_NATIVE", raising=False)
    native.load.cache_clear()
    yield tmp_path / "root" / "typicalnets"
    native.load.cache_clear()  # the next load() reads the cache of the restored environment


@pytest.fixture
def tiny(tmp_path):
    """A one-function C source and a loader of it through the cache."""
    source = tmp_path / "tiny.c"
    source.write_text("int tn_answer(void) { return 42; }\n")

    def load(open_entry=lambda entry: native.open_library(entry, the_answer)):
        return native.load_cached(source, COMPILER, TINY_FLAGS, ".so", open_entry)

    return load


def tiny_entry(cache: Path, tiny) -> Path:
    """The tiny library built into ``cache``, not loaded: for its path, the loader would hand out a
    loaded copy again."""
    entry = tiny(lambda entry: entry)
    assert entry.parent == cache
    return entry


TAMPERINGS = {
    "other bytes": lambda entry: replace_file(entry, bytes(reversed(entry.read_bytes()))),
    "truncated": lambda entry: replace_file(entry, entry.read_bytes()[: entry.stat().st_size // 2]),
    "no recorded hash": lambda entry: entry.with_name(entry.name + ".sha256").unlink(),
    "writable by others": lambda entry: entry.chmod(0o777),
    "lacks its symbol": lambda entry: (
        replace_file(entry, compile_library("int tn_other;\n", entry.parent.parent)),
        record_hash(entry),
    ),
}


@needs_compiler
@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_bad_entry_is_rebuilt_with_one_warning(cache, tiny, tampering):
    entry = tiny_entry(cache, tiny)
    TAMPERINGS[tampering](entry)
    answer, message = one_warning(tiny)
    assert answer == 42
    assert message.startswith(f"the cached native kernel {entry} failed its integrity check")
    assert message.endswith("rebuilt it")
    assert tiny() == 42  # the rebuild is trusted: no second warning


@needs_compiler
def test_entry_still_bad_after_its_rebuild_is_refused_with_one_warning(cache, tiny):
    def wants_a_missing_symbol(library):
        return library.tn_question

    result, message = one_warning(lambda: tiny(lambda entry: native.open_library(entry, wants_a_missing_symbol)))
    assert result is None
    assert "and its rebuild too" in message and "tn_question" in message and "torch engine" in message


@needs_compiler
def test_build_errors_give_one_warning(cache, tiny, tmp_path, monkeypatch):
    source = tmp_path / "tiny.c"
    result, message = one_warning(
        lambda: native.load_cached(source, str(tmp_path / "no-such-cc"), TINY_FLAGS, ".so", lambda entry: entry)
    )
    assert result is None and "cannot build the native kernel tiny.c" in message
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("TYPICALNETS_CACHE", str(tmp_path / "a-file"))
    result, message = one_warning(tiny)
    assert result is None and "cannot create the kernel cache folder" in message and "TYPICALNETS_CACHE" in message


@needs_compiler
def test_key_holds_the_compiler_version_and_the_cpu(cache, tiny, monkeypatch):
    assert native.compiler_version(COMPILER) and native.cpu_features()
    entries = {tiny(lambda entry: entry)}
    monkeypatch.setattr(native, "compiler_version", lambda compiler: b"cc (Other) 99.1")
    entries.add(tiny(lambda entry: entry))
    monkeypatch.setattr(native, "cpu_features", lambda: b"model name : Other CPU\nflags : fpu avx512f")
    entries.add(tiny(lambda entry: entry))
    assert len(entries) == 3 and all(entry.parent == cache for entry in entries)


def interpolating_problem():
    arch = FCN(in_dim=2, hidden=(2,), activation="relu", bias=True)
    return (
        arch,
        QuantizedUniform.evenly_spaced(3),
        Dataset(boolean_cube(2)[:3], torch.tensor([1, -1, 1], dtype=torch.int8)),
    )


@pytest.mark.parametrize("problem", ["writable by others", "another user's"])
def test_untrusted_cache_folder_sends_fast_to_torch_with_one_warning(cache, monkeypatch, problem):
    cache.mkdir(parents=True)
    if problem == "writable by others":
        cache.chmod(0o777)
    else:
        uid = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: uid + 1)
    kernel, message = one_warning(native.load)
    assert kernel is None and str(cache) in message and "TYPICALNETS_CACHE" in message
    assert ("chmod go-w" in message) == (problem == "writable by others")
    arch, prior, train = interpolating_problem()
    assert GuessAndCheck(arch, prior, train, engine="fast").engine == "torch"
    assert list(cache.iterdir()) == []  # nothing was built there


@pytest.fixture(scope="module")
def built_kernel(tmp_path_factory) -> Path:
    """A cache folder holding the kernel, built once for this module's tests to copy."""
    root = tmp_path_factory.mktemp("built")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TYPICALNETS_CACHE", str(root))
        patch.delenv("TYPICALNETS_NATIVE", raising=False)
        native.load.cache_clear()
        kernel = native.load()
        native.load.cache_clear()
    if kernel is None:
        pytest.skip("no C compiler: the native kernel cannot be built")
    return root / "typicalnets"


def copied_kernel(built_kernel: Path, cache: Path) -> Path:
    shutil.copytree(built_kernel, cache)
    (entry,) = cache.glob("gc_kernel-*.so")
    return entry


def check_kernel_works():
    arch, prior, train = interpolating_problem()
    sampler = GuessAndCheck(arch, prior, train, batch_size=1000, engine="native")
    state, info = sampler.step(torch.Generator().manual_seed(0), sampler.init())
    assert sampler.engine == "native" and info.draws == 1000 and info.accepted > 0
    assert (state.accepted.mistakes(train.x, train.y) == 0).all()


def test_good_kernel_loads_without_a_warning_or_a_build(built_kernel, cache):
    entry = copied_kernel(built_kernel, cache)
    built_at = entry.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernel = native.load()
    assert kernel is not None and Path(kernel.library._name) == entry and entry.stat().st_mtime_ns == built_at


@pytest.mark.parametrize("tampering", ["other bytes", "truncated"])
def test_tampered_kernel_is_rebuilt_and_works(built_kernel, cache, tampering):
    entry = copied_kernel(built_kernel, cache)
    TAMPERINGS[tampering](entry)  # a truncated library, if loaded, would crash the process with SIGBUS
    kernel, message = one_warning(native.load)
    assert f"{entry} failed its integrity check" in message and "rebuilt it" in message
    assert kernel is not None and Path(kernel.library._name) == entry
    check_kernel_works()


def test_kernel_without_its_symbols_is_rebuilt(built_kernel, cache):
    entry = copied_kernel(built_kernel, cache)
    replace_file(entry, compile_library("static int unused;\n", cache.parent))
    record_hash(entry)  # passes the hash check: only its missing functions tell
    kernel, message = one_warning(native.load)
    assert "does not load" in message and "tn_lenet_check" in message and "rebuilt it" in message
    assert kernel is not None
    check_kernel_works()


def test_emulator_entry_goes_through_the_same_checks(cache, monkeypatch, tmp_path):
    arch = LeNet.with_width_factor(0.5)
    cuda.emulator.cache_clear()
    if cuda.emulator(arch) is None:
        pytest.skip("no C++ compiler: the CUDA kernel's emulation cannot be built")
    # A copy of the built entry, never loaded, replaced by a library without the kernel's symbols.
    shutil.copytree(cache, tmp_path / "copy" / "typicalnets")
    monkeypatch.setenv("TYPICALNETS_CACHE", str(tmp_path / "copy"))
    (entry,) = (tmp_path / "copy" / "typicalnets").glob("gc_cuda-*.so")
    replace_file(entry, compile_library("static int unused;\n", tmp_path))
    record_hash(entry)
    cuda.emulator.cache_clear()
    try:
        emulated, message = one_warning(lambda: cuda.emulator(arch))
    finally:
        cuda.emulator.cache_clear()  # other tests build theirs in the usual cache
    assert f"{entry} failed its integrity check" in message and "rebuilt it" in message
    assert emulated is not None and (emulated.layout.shape.c0, emulated.layout.shape.h) == (1, 28)
