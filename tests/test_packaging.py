"""The wheel holds everything a normal install needs: installed from it alone, outside the repo,
``typicalnets sample --engine native`` builds its kernel from the packaged source and runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_wheel_installs_and_samples_with_the_native_engine(tmp_path):
    # Built from a copy without build outputs: setuptools packs whatever an earlier build left in
    # build/lib, which would hide a file that package-data misses (and the working tree stays clean).
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*cache", ".hypothesis", "results"
        ),
    )
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        tmp_path / "wheels",
        source,
    )
    (wheel,) = (tmp_path / "wheels").glob("typicalnets-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"typicalnets/native/gc_kernel.c", "typicalnets/native/gc_cuda.cu"} <= names

    fresh = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", "--without-pip", fresh)
    python = fresh / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel)
    # The dependencies (torch, numpy, ...) from this interpreter's site-packages. A path line in a
    # .pth adds the folder but runs none of its .pth files, so the repo's editable install stays out.
    site_packages = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site_packages / "dependencies.pth").write_text("".join(f"{folder}\n" for folder in ours))

    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "TYPICALNETS_NATIVE")}
    env["TYPICALNETS_CACHE"] = str(tmp_path / "cache")
    work = tmp_path / "work"
    work.mkdir()
    # typicalnets is a namespace package (no __init__.py): every folder it is made of, and the module
    # that holds the kernel's source, must be the installed ones.
    where = "import typicalnets, typicalnets.native; print(*typicalnets.__path__, typicalnets.native.__file__)"
    installed = run(python, "-c", where, cwd=work, env=env).stdout.split()
    assert installed and all(Path(path).resolve().is_relative_to(fresh.resolve()) for path in installed), installed

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    np.savez(work / "train.npz", x=x, y=np.where(x[:, 0] > 0, 1, -1))
    run(
        fresh / "bin" / "typicalnets",
        "sample",
        "--train",
        "train.npz",
        "--out",
        "out",
        "--engine",
        "native",
        "--count",
        "3",
        "--widths",
        "8",
        "--no-progress",
        cwd=work,
        env=env,
    )
    assert json.loads((work / "out" / "summary.json").read_text())["engine"] == "native"
