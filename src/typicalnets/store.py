"""Results directories that are written whole or not at all, and never over someone else's files.

The rules, in the order a command meets them:

1. **Before any work** (``check_output_dir``, and again on entering ``staged_output``): the target
   must be absent, an empty directory, or -- with ``overwrite`` -- a directory that typicalnets
   wrote itself. Such a directory holds the marker ``.typicalnets-output.json``, which lists every
   file typicalnets put there; a directory without it, or holding anything the marker does not
   list, is never replaced. The current directory, its ancestors, the home directory and its
   ancestors are refused outright, as is a target that contains one of the command's input files.
2. **Staging**: results go into a hidden directory beside the target, created at the start, so an
   output that cannot be written fails before any work. Its name,
   ``.NAME.partial-HOST-PID-START-RANDOM``, records which process owns it; a later run that writes
   into the same parent directory removes the staging directories whose owner has died (a run
   killed by SIGKILL cannot clean up after itself). Parent directories created for the target are
   removed again if the command fails.
3. **Commit**: under an exclusive ``flock`` on the parent directory (so concurrent typicalnets
   runs commit one at a time), the target is compared with what the start found. Only if it is
   unchanged is it replaced by the staging directory (a rename). If another run wrote it in the
   meantime, nothing is replaced: the results are kept beside it as ``NAME.conflict-TIMESTAMP``
   and ``OutputConflict`` says so in one line. SIGINT and SIGTERM are held back during the swap.
4. **Failure or interruption** (any exception, KeyboardInterrupt and SIGTERM included): the staging
   directory is deleted and the target is left as it was.

Outputs too large to hold are written into the staging directory piece by piece: ``NpyRows`` appends
rows to a .npy file, and ``check_free_space`` refuses, before any work, an output the disk cannot hold.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from typicalnets.errors import TypicalnetsError
from typicalnets.resources import GIB

MARKER = ".typicalnets-output.json"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
# .NAME.partial-HOST-PID-START-RANDOM (staging) and .NAME.replaced-HOST-PID-START-RANDOM (an old
# result being swapped out): HOST is a hash of the host name, START the owner's start time.
_OWNED = re.compile(r"^\..+\.(?:partial|replaced)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-[^-/]+$")


class OutputConflict(TypicalnetsError):
    """Another run wrote the output directory while this one worked; the results were kept aside."""


def _process_start(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 where /proc is missing): with the pid
    it names a process uniquely, so a recycled pid is not mistaken for the owner."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def _owner_tag() -> str:
    pid = os.getpid()
    return f"{_HOST}-{pid}-{_process_start(pid)}-"


def _owner_alive(pid: int, start: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds the pid: not our owner
        return start == 0
    return start == 0 or _process_start(pid) in (0, start)


def remove_stale_staging(parent: Path) -> list[Path]:
    """Delete the staging directories in ``parent`` whose owning process (on this host) is gone."""
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _OWNED.match(entry.name)
        if not match or match["host"] != _HOST or not entry.is_dir() or entry.is_symlink():
            continue
        if entry.stat().st_uid != os.geteuid() or _owner_alive(int(match["pid"]), int(match["start"])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), list) or "token" not in marker:
        return None
    return marker


def _relative_files(directory: Path) -> list[str]:
    """Every file, link and directory below ``directory`` (relative, sorted), without following links."""
    found = []
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def _protected(out: Path) -> str | None:
    """Why ``out`` may never be an output directory, or None."""
    resolved = out.resolve()
    places = [("the current directory", Path.cwd())]
    try:
        places.append(("your home directory", Path.home()))
    except RuntimeError:  # no home directory known
        pass
    for label, place in places:
        place = place.resolve()
        if resolved == place:
            return label
        if resolved in place.parents:
            return f"a parent of {label}"
    return None


@dataclass(frozen=True)
class _TargetState:
    kind: str  # "absent", "empty" (an empty directory) or "ours" (a directory typicalnets wrote)
    identity: tuple = ()  # (device, inode) of an empty directory, the marker token of ours


def _target_state(out: Path, overwrite: bool, inputs: Iterable[Path] = ()) -> _TargetState:
    """Check that ``out`` may be written (rule 1) and describe what is there now."""
    reason = _protected(out)
    if reason is not None:
        raise TypicalnetsError(f"output directory {out} is {reason}; give a new directory such as results/run1")
    resolved = out.resolve()
    for path in inputs:
        path = Path(path).resolve()
        if path == resolved or resolved in path.parents:
            raise TypicalnetsError(f"output directory {out} holds the input {path}; choose another output directory")
    blocking = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise TypicalnetsError(f"output directory {out} lies inside {blocking}, which is a file; choose another --out")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise TypicalnetsError(f"output path {out} is a file or link, not a directory; give a directory path")
    if not out.exists():
        return _TargetState("absent")
    try:
        entries = _relative_files(out)
    except OSError as exc:
        raise TypicalnetsError(f"cannot read output directory {out} ({exc.strerror}); choose another one") from None
    if not entries:
        info = out.stat()
        return _TargetState("empty", (info.st_dev, info.st_ino))
    if not overwrite:
        raise TypicalnetsError(
            f"output directory {out} already holds results; pass --overwrite or choose another --out"
        )
    marker = _read_marker(out)
    if marker is None:
        raise TypicalnetsError(
            f"output directory {out} was not written by typicalnets (it has no {MARKER}), so --overwrite will "
            "not replace it; choose another --out"
        )
    foreign = sorted(set(entries) - set(marker["files"]) - {MARKER})
    if foreign:
        raise TypicalnetsError(
            f"output directory {out} holds {len(foreign)} file(s) that typicalnets did not write (such as "
            f"{foreign[0]}), so --overwrite will not replace it; move them away or choose another --out"
        )
    return _TargetState("ours", (str(marker["token"]),))


def check_output_dir(out: Path, overwrite: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse, before any work, an output directory that may not be written (rule 1)."""
    _target_state(Path(out), overwrite, inputs)


def _missing_parents(path: Path) -> list[Path]:
    missing = []
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            break
        missing.append(parent)
    return missing


def _remove_created(created: list[Path]) -> None:
    for directory in created:  # deepest first
        try:
            directory.rmdir()
        except OSError:
            break


def _unwritable(out: Path, exc: OSError) -> TypicalnetsError:
    reason = exc.strerror or type(exc).__name__
    return TypicalnetsError(f"cannot write output directory {out} ({reason}); choose a --out in a writable folder")


@contextmanager
def staged_output(out: Path, overwrite: bool = False, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Yield a staging directory, created now (so an unwritable ``out`` fails before any work);
    on success it replaces ``out`` if ``out`` is still as this call found it, on failure or
    interruption it is deleted. See the module docstring for the rules."""
    out = Path(out)
    start_state = _target_state(out, overwrite, inputs)
    created = _missing_parents(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{_owner_tag()}", dir=out.parent))
    except OSError as exc:
        _remove_created(created)
        raise _unwritable(out, exc) from None
    try:
        yield staging
        _write_marker(staging)
        _commit(staging, out, overwrite, start_state)
    except BaseException:  # the staging folder is gone if the commit moved it
        shutil.rmtree(staging, ignore_errors=True)
        if not out.exists():
            _remove_created(created)
        raise


def _write_marker(staging: Path) -> None:
    marker = {
        "format": 1,
        "token": uuid.uuid4().hex,
        "written": datetime.now().isoformat(timespec="seconds"),
        "files": _relative_files(staging),
    }
    write_json(staging / MARKER, marker)


def _commit(staging: Path, out: Path, overwrite: bool, start_state: _TargetState) -> None:
    # Ctrl-C and SIGTERM wait until the swap is done: between its two renames the old results exist
    # only under a hidden name.
    masked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    directory = os.open(out.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)  # concurrent typicalnets commits into this folder take turns
        try:
            now = _target_state(out, overwrite)
        except TypicalnetsError:
            now = None
        if now != start_state:
            _conflict(staging, out)
        replaced = None
        if now.kind == "ours":
            replaced = out.parent / f".{out.name}.replaced-{_owner_tag()}{uuid.uuid4().hex[:8]}"
            out.rename(replaced)
        try:
            # Over an absent target, or an empty directory (which rename replaces); a process that
            # ignores the lock and filled the target since is caught here: rename fails then.
            staging.rename(out)
        except OSError:
            if replaced is not None:
                replaced.rename(out)
            _conflict(staging, out)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
    finally:
        os.close(directory)  # releases the lock
        signal.pthread_sigmask(signal.SIG_SETMASK, masked)


def _conflict(staging: Path, out: Path) -> None:
    kept = _keep_aside(staging, out)
    raise OutputConflict(
        f"output directory {out} was changed by another process while this run worked, so it was not "
        f"replaced; these results are in {kept}; compare the two and keep one"
    )


def _keep_aside(staging: Path, out: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(100):
        kept = out.with_name(f"{out.name}.conflict-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            staging.rename(kept)  # fails on an existing non-empty directory: never replaces anything
            return kept
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) and not kept.exists():
                raise
    raise TypicalnetsError(f"cannot keep the results beside {out}; clean up its .conflict-* folders")


def _json_safe(value: Any) -> Any:
    """JSON has no infinities or NaN: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


class NpyRows:
    """A .npy file of a (rows, width) array written a block of rows at a time (``add``, then ``close``), never
    held whole. The header is written first for 0 rows and rewritten at ``close`` with the final count in place:
    numpy's header leaves room for the first dimension to grow (``GROWTH_AXIS_MAX_DIGITS``), so its length does
    not change and the file is byte for byte what ``np.save`` writes for the whole array."""

    def __init__(self, path: Path, width: int, dtype: np.dtype | type = np.int8):
        self.width, self.dtype, self.rows = width, np.dtype(dtype), 0
        self.handle = open(path, "wb")
        self._write_header()

    def add(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != (self.width,) or rows.dtype != self.dtype:
            raise TypicalnetsError(
                f"rows of shape {rows.shape[1:]} and dtype {rows.dtype} do not fit a .npy of width {self.width} and "
                f"dtype {self.dtype}; add rows of that width and dtype"
            )
        self.handle.write(np.ascontiguousarray(rows).tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        if self.handle.closed:
            return
        self.handle.seek(0)
        self._write_header()
        self.handle.close()

    def _write_header(self) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self.handle, {**header, "shape": (self.rows, self.width)})


def check_free_space(out: Path, need: int, what: str, fix: str) -> None:
    """Refuse, before any work, an output of about ``need`` bytes that the file system of ``out`` has no room for."""
    folder = next(place for place in (Path(out), *Path(out).parents) if place.is_dir())
    free = shutil.disk_usage(folder).free
    if need > free:
        raise TypicalnetsError(
            f"{what} need about {need / GIB:.1f} GiB on disk, but {folder} has {free / GIB:.1f} GiB free; {fix}"
        )
