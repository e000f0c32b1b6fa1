"""Guess & Check streaming: throughput and peak memory of ``typicalnets sample`` against the count.

    python benchmarks/gc_streaming.py                        # both cases, 3 rounds
    python benchmarks/gc_streaming.py --cases fcn --rounds 1 --small-runs 1
    python benchmarks/gc_streaming.py --src OTHER/src        # the same commands run with another checkout's code

Each run is one ``typicalnets sample`` command in its own process, with every sampler setting at its default: beyond
the task (its training and test files, architecture, prior and n) it sets only --count, and a --time-limit as a
safety budget. The counts of a case take turns within each round (the small count --small-runs times, since one
such run samples for a second or so and catches this shared machine at one moment), so that the drift of its speed
hits them alike; the table gives medians over the runs. Reported per run: draws/s and samples/s over the run's own
seconds (summary.json's ``seconds``, which include writing the files, done while sampling), the command's wall time
(Python's start included), its peak resident memory (``ru_maxrss`` from ``os.wait4``) and what it wrote.

Cases:
- ``fcn``: the ``sample`` defaults (FCN 4-4-1, weights in {-1, 0, 1}) on a teacher-student task (an FCN 4-2-1
  teacher labels Gaussian inputs), n = 8 (acceptance ~2.8e-3), 1,000 test points; 2,000 and 200,000 samples.
- ``lenet``: LeNet-5 at width 0.5 (11,074 weights in {-1, 0, 1}) on the MNIST-shaped images of
  ``gc_throughput.py``, n = 4 (acceptance ~1.4e-2, so that 20,000 samples take about a minute on 2 cores), no test
  set; 2,000 and 20,000 samples (1,515 networks per 64 MiB shard: 20,000 make 14 shards). Without a test set,
  since PyTorch's LeNet forward runs at ~1-4 GFLOP/s here: test predictions would cost ~5-10 ms per network per
  100 test images, the same at every count, and the run would measure that forward rather than G&C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from gc_throughput import mnist_shaped

from typicalnets.nets import FCN
from typicalnets.priors import QuantizedUniform
from typicalnets.teachers import make_task, narrow_teacher

SOURCE = Path(__file__).resolve().parents[1] / "src"
TIME_LIMIT = 1800  # seconds per run at most: a safety budget, never reached in these cases
CASES = {
    "fcn": {"counts": (2_000, 200_000), "options": ["--n", "8"]},
    "lenet": {"counts": (2_000, 20_000), "options": ["--arch", "lenet", "--n", "4"]},
}


def write_task(case: str, folder: Path) -> list[str]:
    """The case's data options: its training (and test) files, written into ``folder``."""
    train = folder / f"{case}-train.npz"
    if case == "lenet":
        mnist_shaped(16, seed=0).save_npz(train)
        return ["--train", str(train)]
    gen = torch.Generator().manual_seed(0)
    task = make_task(narrow_teacher(FCN(4, (2,)), QuantizedUniform.evenly_spaced(3), gen), 8, 1000, gen)
    task.train.save_npz(train)
    task.test.save_npz(folder / f"{case}-test.npz")
    return ["--train", str(train), "--test", str(folder / f"{case}-test.npz")]


def run(source: Path, case: str, count: int, data: list[str], out: Path) -> dict:
    """One ``typicalnets sample`` command: its summary's numbers, wall time, peak memory and output."""
    command = [sys.executable, "-m", "typicalnets.cli", "sample", *data, *CASES[case]["options"]]
    command += ["--count", str(count), "--time-limit", str(TIME_LIMIT)]
    command += ["--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(source)}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)  # the child's own resource usage, peak memory included
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}):\n{err}")
    summary = json.loads((out / "summary.json").read_text())
    files = sorted(path.name for path in out.iterdir() if not path.name.startswith("."))
    return {
        "case": case,
        "count": summary["count"],
        "draws": summary["draws"],
        "seconds": summary["seconds"],
        "draws_per_s": summary["draws"] / summary["seconds"],
        "samples_per_s": summary["count"] / summary["seconds"],
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kB on Linux
        "output_mb": sum(path.stat().st_size for path in out.iterdir()) / 2**20,
        "shards": sum(name.startswith("population-") and name.endswith(".pt") for name in files),
        "message": err.strip().splitlines()[0],
    }


def report(results: list[dict]) -> None:
    print("\n| case | count | runs | draws/s, median (range) | samples/s | seconds | wall s | peak RSS MB | output |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in CASES:
        for count in CASES[case]["counts"]:
            runs = [r for r in results if r["case"] == case and r["count"] == count]
            if not runs:
                continue
            speeds = [r["draws_per_s"] for r in runs]
            median = {key: statistics.median(r[key] for r in runs) for key in ("samples_per_s", "seconds", "wall_s")}
            shards = runs[0]["shards"]
            output = f"{runs[0]['output_mb']:.0f} MB" + (f", {shards} shards" if shards else ", population.pt")
            print(
                f"| {case} | {count:,} | {len(runs)} | {statistics.median(speeds):,.0f} "
                f"({min(speeds):,.0f}-{max(speeds):,.0f}) | {median['samples_per_s']:,.0f} | {median['seconds']:.1f} "
                f"| {median['wall_s']:.1f} | {max(r['peak_rss_mb'] for r in runs):.0f} | {output} |"
            )
    for case in CASES:
        small, large = CASES[case]["counts"]
        speeds = {
            count: [r["draws_per_s"] for r in results if r["case"] == case and r["count"] == count]
            for count in (small, large)
        }
        if speeds[small] and speeds[large]:
            ratio = statistics.median(speeds[large]) / statistics.median(speeds[small])
            print(
                f"{case}: draws/s at {large:,} / at {small:,} = {ratio:.2f} (medians; the large count's runs range "
                f"{min(speeds[large]) / statistics.median(speeds[small]):.2f}-"
                f"{max(speeds[large]) / statistics.median(speeds[small]):.2f} of the small count's median)"
            )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small-runs", type=int, default=3, help="runs of the small count per round")
    parser.add_argument("--src", type=Path, default=SOURCE, help="the typicalnets source folder the commands run")
    args = parser.parse_args()
    cases = args.cases.split(",")
    print(f"typicalnets from {args.src}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the start")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        tasks = {case: write_task(case, root) for case in cases}
        for round_number in range(args.rounds):
            for case in cases:
                small, large = CASES[case]["counts"]
                for count in [small] * args.small_runs + [large]:
                    out = root / f"{case}-{count}"
                    result = run(args.src, case, count, tasks[case], out)
                    results.append(result)
                    print(json.dumps({"round": round_number, **result}), flush=True)
                    shutil.rmtree(out)
    report(results)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    cli()
