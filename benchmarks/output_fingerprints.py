"""Fingerprints of fixed-seed outputs, to show that a refactoring changed no result.

    python benchmarks/output_fingerprints.py                 # print the fingerprints as JSON
    python benchmarks/output_fingerprints.py --save FILE     # record them
    python benchmarks/output_fingerprints.py --check FILE    # compare with a record; exit 1 on a difference

Runs ``typicalnets run`` on its default and ``typicalnets sample`` on one fixed task with each G&C
engine (fast, native, torch, baseline), SMC and SGD, all with fixed seeds, and hashes what they
write: every CSV and .npy byte for byte, the population's tensors, and the JSON files without
the fields that measure time (``seconds``, and ``message``, which quotes them) or name the
software (``torch``). Plots are left out: their bytes depend on matplotlib's version, not on the
numbers. The record for the current code is ``benchmarks/results/output_fingerprints.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from typicalnets.cli import main
from typicalnets.nets import Population

TIMING_FIELDS = {"seconds", "message", "torch"}
TRAIN_ROWS, TEST_ROWS = 24, 200


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _digest(path: Path) -> str:
    if path.suffix == ".json":
        data = json.dumps(_without_timing(json.loads(path.read_text())), sort_keys=True).encode()
    elif path.suffix == ".pt":
        population = Population.load(path)
        data = json.dumps(population.arch.to_dict(), sort_keys=True).encode() + b"".join(
            name.encode() + tensor.contiguous().numpy().tobytes() for name, tensor in sorted(population.params.items())
        )
    elif path.name == "cells.csv":  # its seconds and message columns are timings
        import pandas as pd

        data = pd.read_csv(path).drop(columns=["seconds", "message"], errors="ignore").to_csv(index=False).encode()
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _fingerprint(folder: Path) -> dict[str, str]:
    return {
        path.name: _digest(path)
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in (".csv", ".npy", ".json", ".pt") and not path.name.startswith(".")
    }


def _task(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(TRAIN_ROWS + TEST_ROWS, 4)).astype(np.float32)
    y = np.where(x[:, 0] - 0.5 * x[:, 1] > 0, 1, -1)
    np.savez(root / "train.npz", x=x[:TRAIN_ROWS], y=y[:TRAIN_ROWS])
    np.savez(root / "test.npz", x=x[TRAIN_ROWS:], y=y[TRAIN_ROWS:])
    return root / "train.npz", root / "test.npz"


def fingerprints() -> dict[str, dict[str, str]]:
    torch.set_num_threads(1)  # the native kernel's results do not depend on threads, torch's sums might
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        train, test = _task(root)
        runs = {"run-default": ["run", "--no-progress"]}
        common = [
            "sample",
            "--train",
            str(train),
            "--test",
            str(test),
            "--n",
            "12",
            "--widths",
            "6",
            "--seed",
            "7",
            "--no-progress",
        ]
        for engine in ("fast", "native", "torch", "baseline"):
            runs[f"sample-gc-{engine}"] = [*common, "--engine", engine, "--count", "20"]
        runs["sample-smc"] = [*common, "--sampler", "smc", "--count", "20", "--particles", "200", "--repeats", "2"]
        runs["sample-sgd"] = [*common, "--sampler", "sgd", "--count", "20", "--sgd-max-steps", "2000"]
        result = {}
        for name, args in runs.items():
            out = root / name
            if main([*args, "--out", str(out)]) != 0:
                raise SystemExit(f"{name} failed: typicalnets {' '.join(args)}")
            result[name] = _fingerprint(out)
        return result


def _differences(now: dict, recorded: dict) -> list[str]:
    lines = []
    for run in sorted(set(now) | set(recorded)):
        for file in sorted(set(now.get(run, {})) | set(recorded.get(run, {}))):
            a, b = recorded.get(run, {}).get(file), now.get(run, {}).get(file)
            if a != b:
                lines.append(f"{run}/{file}: recorded {a}, now {b}")
    return lines


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the fingerprints to this JSON file")
    parser.add_argument("--check", type=Path, help="compare with the fingerprints in this JSON file")
    args = parser.parse_args()
    now = fingerprints()
    if args.save:
        args.save.write_text(json.dumps(now, indent=2, sort_keys=True) + "\n")
    if args.check:
        differences = _differences(now, json.loads(args.check.read_text()))
        print("\n".join(differences) or f"identical to {args.check}", file=sys.stderr)
        raise SystemExit(1 if differences else 0)
    if not args.save:
        print(json.dumps(now, indent=2, sort_keys=True))


if __name__ == "__main__":
    cli()
