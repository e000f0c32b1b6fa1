"""Interruptions and races, with real processes: Ctrl-C exits 130 and SIGTERM 143 with nothing
half-written, a SIGKILLed run's staging folder is removed by the next run beside it, and a run
never replaces results that another run wrote while it worked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from typicalnets.cli import main
from typicalnets.store import MARKER, remove_stale_staging

X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
Y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, 1, -1)
# A G&C run that is still sampling when it is signalled: far more networks than its time allows.
SLOW = ["--count", "1000000", "--time-limit", "{seconds}", "--widths", "4", "--no-progress"]


@pytest.fixture()
def train(tmp_path) -> Path:
    path = tmp_path / "train.npz"
    np.savez(path, x=X, y=Y)
    return path


def _start(args: list[str], seconds: float = 60) -> subprocess.Popen:
    command = [sys.executable, "-m", "typicalnets.cli", *[a.replace("{seconds}", str(seconds)) for a in args]]
    # SIGINT at its default, so that Python turns it into KeyboardInterrupt even where pytest ignores it.
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_staging(process: subprocess.Popen, parent: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(parent.glob(".*.partial-*"))
        if found:
            time.sleep(0.5)  # into the sampling loop
            return found[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the run never created its staging folder")


def _sample_args(train: Path, out: Path) -> list[str]:
    return ["sample", "--train", str(train), "--out", str(out), *SLOW]


@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_during_sample_exits_with_its_code_and_writes_nothing(train, tmp_path, signum, code, word):
    out = tmp_path / "out"
    process = _start(_sample_args(train, out))
    _wait_for_staging(process, tmp_path)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {word}"), lines
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_sigterm_during_run_removes_its_staging_folder(tmp_path):
    out = tmp_path / "run"
    process = _start(
        [
            "run",
            "--out",
            str(out),
            "--n",
            "32",
            "--methods",
            "gc:fcn",
            "--no-smc-fallback",
            "--count",
            "1000000",
            "--time-limit",
            "60",
            "--n-test",
            "100",
            "--no-progress",
        ]
    )
    _wait_for_staging(process, tmp_path)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert not out.exists() and not list(tmp_path.glob(".run.*"))


def test_a_sigkilled_runs_staging_folder_is_removed_by_the_next_run(train, tmp_path):
    process = _start(_sample_args(train, tmp_path / "killed"))
    staging = _wait_for_staging(process, tmp_path)
    process.kill()
    process.wait(timeout=30)
    assert staging.is_dir()  # SIGKILL leaves it behind
    alive = tmp_path / f".other.partial-{staging.name.split('-', 1)[1].split('-')[0]}-{os.getpid()}-0-x"
    alive.mkdir()  # owned by a live process (this one): kept
    assert (
        main(
            [
                "sample",
                "--train",
                str(train),
                "--out",
                str(tmp_path / "next"),
                "--count",
                "1",
                "--widths",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    assert not staging.exists() and alive.is_dir()
    assert remove_stale_staging(tmp_path) == []


def test_a_run_does_not_replace_results_written_while_it_worked(train, tmp_path, capsys):
    out = tmp_path / "race"
    slow = _start(_sample_args(train, out), seconds=8)
    _wait_for_staging(slow, tmp_path)
    assert (
        main(["sample", "--train", str(train), "--out", str(out), "--count", "1", "--widths", "4", "--no-progress"])
        == 0
    )  # the fast run finishes first
    token = json.loads((out / MARKER).read_text())["token"]
    _, err = slow.communicate(timeout=60)
    assert slow.returncode == 2, err
    assert (
        err.strip().startswith("error: ") and "changed by another process" in err and len(err.strip().splitlines()) == 1
    )
    assert json.loads((out / MARKER).read_text())["token"] == token  # the fast run's results are intact
    kept = list(tmp_path.glob("race.conflict-*"))
    assert len(kept) == 1 and (kept[0] / "summary.json").is_file()
