"""Guess & Check streaming: throughput and peak memory of ``typicalnets sample`` against the count.

    python benchmarks/gc_streaming.py                        # both cases, 3 rounds (about 10 minutes)
    python benchmarks/gc_streaming.py --cases fcn --rounds 1 --small-runs 1
    python benchmarks/gc_streaming.py --src OTHER/src        # the same commands run with another checkout's code
    python benchmarks/gc_streaming.py --windows              # samples/s along one run of the large count

Each run is one ``typicalnets sample`` command in its own process, with every sampler setting at its default: beyond
the task (its training and test files, architecture, prior and n) it sets only --count, and a --time-limit as a
safety budget. Reported per run: draws/s end to end, over the time from the staging folder's appearing (just
before the sampler is built) to the committed --out (every file written), which is the comparable figure; draws/s
over summary.json's ``seconds`` (the sampler's loop, in which the files are written as the networks come, except
the last block of up to 1,024 networks, written after it: about half the writing of a 2,000-network run, so that
figure flatters small counts); samples/s end to end; the command's wall time (Python's start included); its peak
resident memory (``ru_maxrss`` from ``os.wait4``); what it wrote; and ``others``: the share of the machine's CPU
time that other processes took while it ran (from /proc/stat, less the run's own CPU time).

On a shared 2-core machine that share decides the speed: the native kernel's two OpenMP threads slow down several
times over when another process takes a core. So each run waits (up to --wait seconds) until other processes have
used less than --max-others of the CPUs for a second, the counts of a case take turns within each round (the small
count --small-runs times, since such a run samples for well under a second), and the table gives medians over the
runs that others left alone (``others`` <= --max-others) beside those over all runs.

``--windows`` runs the large count of each case in this process, as ``typicalnets sample`` does (``iter_samples``
into ``cli.SampleFiles``), and prints samples/s over each tenth of the samples with the others' share: the per-step
cost does not grow with the samples before it.

Cases:
- ``fcn``: the ``sample`` defaults (FCN 4-4-1, weights in {-1, 0, 1}) on a teacher-student task (an FCN 4-2-1
  teacher labels Gaussian inputs), n = 8 (acceptance ~2.8e-3), 1,000 test points; 2,000 and 200,000 samples.
- ``lenet``: LeNet-5 at width 0.5 (11,074 weights in {-1, 0, 1}) on the MNIST-shaped images of
  ``gc_throughput.py``, n = 4 (acceptance ~1.4e-2), no test set; 2,000 and 20,000 samples (1,515 networks per
  64 MiB shard: 20,000 make 14 shards). Without a test set, since PyTorch's LeNet forward runs at ~1-4 GFLOP/s
  here: test predictions would cost ~5-10 ms per network per 100 test images, the same at every count, and the
  run would measure that forward rather than G&C.
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

from typicalnets.cli import SampleFiles
from typicalnets.data import Dataset
from typicalnets.methods import MethodSpec
from typicalnets.nets import FCN, LeNet
from typicalnets.priors import QuantizedUniform
from typicalnets.samplers import GuessAndCheck, iter_samples
from typicalnets.teachers import make_task, narrow_teacher

SOURCE = Path(__file__).resolve().parents[1] / "src"
TIME_LIMIT = 1800  # seconds per run at most: a safety budget, never reached in these cases
Q3 = QuantizedUniform.evenly_spaced(3)  # the sample default prior
CASES = {
    "fcn": {"counts": (2_000, 200_000), "options": ["--n", "8"], "arch": FCN(4, (4,)), "n": 8},
    "lenet": {
        "counts": (2_000, 20_000),
        "options": ["--arch", "lenet", "--n", "4"],
        "arch": LeNet.with_width_factor(),
        "n": 4,
    },
}
TICKS = os.sysconf("SC_CLK_TCK")
POLL = 0.002  # seconds between looks at a running command's output folder


def task_data(case: str) -> tuple[Dataset, Dataset | None]:
    """The case's training set (all of it; the runs take its first n) and test set."""
    if case == "lenet":
        return mnist_shaped(16, seed=0), None
    gen = torch.Generator().manual_seed(0)
    task = make_task(narrow_teacher(FCN(4, (2,)), Q3, gen), 8, 1000, gen)
    return task.train, task.test


def write_task(case: str, folder: Path) -> list[str]:
    """The case's data options: its training (and test) files, written into ``folder``."""
    options = []
    for name, data in zip(("train", "test"), task_data(case)):
        if data is not None:
            data.save_npz(folder / f"{case}-{name}.npz")
            options += [f"--{name}", str(folder / f"{case}-{name}.npz")]
    return options


def cpu_ticks() -> tuple[int, int]:
    """(busy, all) CPU time of the machine since boot, in clock ticks (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


def wait_for_quiet(max_others: float, wait: float) -> float:
    """Seconds waited until other processes used less than ``max_others`` of the CPUs over one second."""
    start = time.perf_counter()
    while time.perf_counter() - start < wait:
        busy, total = cpu_ticks()
        time.sleep(1)
        busy_after, total_after = cpu_ticks()
        if (busy_after - busy) / max(total_after - total, 1) < max_others:
            break
    return time.perf_counter() - start


def run(source: Path, case: str, count: int, data: list[str], out: Path) -> dict:
    """One ``typicalnets sample`` command: its summary's numbers, its timings, peak memory, output and the others'
    share of the CPUs meanwhile."""
    command = [sys.executable, "-m", "typicalnets.cli", "sample", *data, *CASES[case]["options"]]
    command += ["--count", str(count), "--time-limit", str(TIME_LIMIT), "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(source)}
    busy, total = cpu_ticks()
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    staged = committed = None  # when the staging folder appeared (sampling starts) and --out (all written)
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)  # the child's own usage, peak memory included
        now = time.perf_counter()
        if staged is None and any(out.parent.glob(f".{out.name}.partial-*")):
            staged = now
        if committed is None and out.exists():
            committed = now
        if pid:
            break
        time.sleep(POLL)
    wall = time.perf_counter() - start
    busy_after, total_after = cpu_ticks()
    err = process.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or staged is None or committed is None:
        raise SystemExit(f"{' '.join(command)} failed ({code}):\n{err}")
    own = (usage.ru_utime + usage.ru_stime) * TICKS
    summary = json.loads((out / "summary.json").read_text())
    files = sorted(path.name for path in out.iterdir() if not path.name.startswith("."))
    return {
        "case": case,
        "count": summary["count"],
        "draws": summary["draws"],
        "seconds": summary["seconds"],
        "draws_per_s": summary["draws"] / summary["seconds"],
        "staged_to_written_s": committed - staged,
        "end_to_end_draws_per_s": summary["draws"] / (committed - staged),
        "samples_per_s": summary["count"] / (committed - staged),
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kB on Linux
        "others": max(0.0, (busy_after - busy - own) / max(total_after - total, 1)),
        "output_mb": sum(path.stat().st_size for path in out.iterdir()) / 2**20,
        "shards": sum(name.startswith("population-") and name.endswith(".pt") for name in files),
        "message": err.strip().splitlines()[0],
    }


def report(results: list[dict], max_others: float) -> None:
    print(
        "\n| case | count | runs (quiet) | draws/s, end to end | draws/s, sampler seconds "
        "| draws/s, end to end, all runs (range) | samples/s | staged to written, s | wall s | peak RSS MB | output |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    medians = {}
    for case in CASES:
        for count in CASES[case]["counts"]:
            runs = [r for r in results if r["case"] == case and r["count"] == count]
            if not runs:
                continue
            quiet = [r for r in runs if r["others"] <= max_others] or runs

            def median(key: str, among: list[dict] = quiet) -> float:
                return statistics.median(r[key] for r in among)

            speeds = [r["end_to_end_draws_per_s"] for r in runs]
            medians[case, count] = median("end_to_end_draws_per_s"), median("draws_per_s")
            shards = runs[0]["shards"]
            output = f"{runs[0]['output_mb']:.0f} MB" + (f", {shards} shards" if shards else ", population.pt")
            print(
                f"| {case} | {count:,} | {len(runs)} ({sum(r['others'] <= max_others for r in runs)}) "
                f"| {medians[case, count][0]:,.0f} | {medians[case, count][1]:,.0f} | {statistics.median(speeds):,.0f} "
                f"({min(speeds):,.0f}-{max(speeds):,.0f}) | {median('samples_per_s'):,.0f} "
                f"| {median('staged_to_written_s'):.2f} | {median('wall_s', runs):.1f} "
                f"| {max(r['peak_rss_mb'] for r in runs):.0f} | {output} |"
            )
    for case in CASES:
        small, large = CASES[case]["counts"]
        if (case, small) in medians and (case, large) in medians:
            end_to_end, sampler = (medians[case, large][i] / medians[case, small][i] for i in (0, 1))
            print(
                f"{case}: draws/s at {large:,} / at {small:,} = {end_to_end:.2f} end to end, {sampler:.2f} over the "
                "sampler's seconds (medians of the quiet runs)"
            )


def windows(case: str, parts: int = 10) -> None:
    """Samples/s over each 1/``parts`` of a run of the case's large count, as ``typicalnets sample`` writes it."""
    train, test = task_data(case)
    train = train.head(CASES[case]["n"])
    arch, count = CASES[case]["arch"], CASES[case]["counts"][1]
    spec = MethodSpec()
    sampler = GuessAndCheck(arch, Q3, train, spec.batch_size, engine=spec.engine, mirror=spec.mirror)
    print(f"\n{case}, {count:,} samples in this process: samples/s over each tenth, others' CPU share")
    with tempfile.TemporaryDirectory() as scratch, SampleFiles(Path(scratch), arch, Q3, train, test) as files:
        stream = iter_samples(sampler, torch.Generator().manual_seed(0), count, progress=False)
        last_time, last_count, done = time.perf_counter(), 0, 0
        last_busy, last_total = cpu_ticks()
        own = time.process_time()
        for chunk in stream:
            files.add(chunk)
            done += len(chunk)
            if done - last_count >= count // parts or done == count:
                now, busy, total = time.perf_counter(), *cpu_ticks()
                others = (busy - last_busy - (time.process_time() - own) * TICKS) / max(total - last_total, 1)
                speed = (done - last_count) / (now - last_time)
                print(f"  {last_count:>7,}-{done:>7,}: {speed:>9,.0f}  {max(0.0, others):.2f}")
                last_time, last_count, last_busy, last_total, own = now, done, busy, total, time.process_time()
        files.finish({})


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small-runs", type=int, default=5, help="runs of the small count per round")
    parser.add_argument("--src", type=Path, default=SOURCE, help="the typicalnets source folder the commands run")
    parser.add_argument("--max-others", type=float, default=0.15, help="others' CPU share that leaves a run quiet")
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for quiet before a run, at most")
    parser.add_argument("--windows", action="store_true", help="samples/s along one run per case, in this process")
    args = parser.parse_args()
    cases = args.cases.split(",")
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the start")
    if args.windows:
        for case in cases:
            windows(case)
        return
    print(f"typicalnets from {args.src}")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        tasks = {case: write_task(case, root) for case in cases}
        for round_number in range(args.rounds):
            for case in cases:
                small, large = CASES[case]["counts"]
                for count in [small] * args.small_runs + [large]:
                    waited = wait_for_quiet(args.max_others, args.wait)
                    out = root / f"{case}-{count}"
                    result = run(args.src, case, count, tasks[case], out)
                    results.append(result)
                    print(json.dumps({"round": round_number, "waited_s": round(waited, 1), **result}), flush=True)
                    shutil.rmtree(out)
    report(results, args.max_others)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    cli()
