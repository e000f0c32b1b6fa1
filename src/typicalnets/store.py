"""Results directories that are written whole or not at all.

Everything goes into a hidden staging directory beside the target, which is renamed into place
only when the command has finished; on any error the staging directory is removed. A target that
already holds files is refused unless ``overwrite`` is set, and this check runs before any work.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from typicalnets.errors import TypicalnetsError


def check_output_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TypicalnetsError(f"output path {out} is a file; give a directory path with --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise TypicalnetsError(f"output directory {out} already holds results; pass --overwrite or choose another --out")


@contextmanager
def staged_output(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging directory; on success it replaces ``out``, on failure it is deleted."""
    out = Path(out)
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


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
