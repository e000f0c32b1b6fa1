"""Guess & Check throughput: the straightforward baseline and the fast engine, side by side.

    python benchmarks/gc_throughput.py                   # CPU; add --device cuda on a GPU
    python benchmarks/gc_throughput.py --json            # one JSON object per line
    python benchmarks/gc_throughput.py --ablations       # also each idea of the fast engine on its own

Cases: n in {2, 16, 32} training examples of a 2-class MNIST-shaped task (1x28x28 images: shifted
crops of two smooth class prototypes plus noise, standardised); LeNet-5 at width 0.5 with U[-1, 1] weights, and an
FCN 784-32-1 with weights uniform over {-1, 0, 1}. Each method runs for --seconds after one
warm-up step, in --rounds interleaved rounds (so drift in a shared machine's speed hits every
method alike); the last column gives the lowest and highest speed-up over the rounds.
networks/s counts drawn networks (the native engine's mirrored pairs count as the two prior draws
they are; ``--ablations`` also measures it without them); network-examples/s counts the forward
passes actually evaluated (early rejection evaluates far fewer than networks x n, and one forward
decides both networks of a mirrored pair on the first example); the FLOP fraction is useful forward
FLOPs per second over the device's nominal fp32 peak (the clock /proc/cpuinfo reports).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import torch

from typicalnets.data import Dataset
from typicalnets.engines.drawing import draw_batch
from typicalnets.engines.pytorch import TorchEngine
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import FCN, LeNet, Population
from typicalnets.priors import QuantizedUniform, Uniform
from typicalnets.samplers.gc import GuessAndCheck

CASES = {
    "lenet-w0.5": (LeNet.with_width_factor(0.5), Uniform(1.0)),
    "fcn-784-32": (FCN(784, (32,)), QuantizedUniform.evenly_spaced(3)),
}


def mnist_shaped(n: int, seed: int = 0) -> Dataset:
    """n images (1x28x28) of two classes, alternating labels: a randomly shifted crop of a smooth
    class prototype plus noise, standardised. Random LeNets accept ~7e-4 of draws at n = 16."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.nn.functional.avg_pool2d(torch.randn(2, 1, 36, 36, generator=gen), 7, 1, 3) * 3
    labels = torch.arange(n) % 2
    shifts = torch.randint(0, 9, (n, 2), generator=gen).tolist()
    x = torch.stack([prototypes[c, :, dy : dy + 28, dx : dx + 28] for c, (dy, dx) in zip(labels.tolist(), shifts)])
    x = x + torch.randn(n, 1, 28, 28, generator=gen)
    return Dataset((x - x.mean()) / x.std(), (2 * labels - 1).to(torch.int8))


def peak_flops(device: str) -> float:
    """Nominal fp32 peak: FMA units x SIMD lanes x 2 x clock (CPU); FP32 cores x 2 x clock (GPU)."""
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        clock_ghz = float(os.environ.get("GPU_BOOST_GHZ", "1.98"))  # H100/H200 SXM boost clock
        return props.multi_processor_count * 128 * 2 * clock_ghz * 1e9
    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    mhz = [float(v) for v in re.findall(r"cpu MHz\s*:\s*([\d.]+)", info)] or [2500.0]
    lanes = 16 if " avx512f" in info else 8 if " avx2" in info else 4
    return torch.get_num_threads() * 2 * lanes * 2 * max(mhz) * 1e6


def measure(samplers: list[GuessAndCheck], device: str, seconds: float, rounds: int, seed: int = 0) -> list[dict]:
    """Networks/s, network-examples/s and draws of each sampler over ``seconds``, interleaved: after
    one warm-up step each, ``rounds`` rounds give every sampler seconds / rounds in turn, so a
    machine whose speed drifts (shared, virtualised CPUs) slows all of them alike. Each sampler's
    rate in each round is kept too, for the spread of the speed-ups."""
    rngs = [torch.Generator(device=device).manual_seed(seed) for _ in samplers]
    states = [sampler.init() for sampler in samplers]
    for sampler, rng, state in zip(samplers, rngs, states):
        sampler.step(rng, state)
    totals = [{"draws": 0, "examples": 0, "accepted": 0, "seconds": 0.0, "rates": []} for _ in samplers]
    for _ in range(rounds):
        for sampler, rng, state, total in zip(samplers, rngs, states, totals):
            draws = examples = accepted = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds / rounds:
                _, info = sampler.step(rng, state)
                draws, examples, accepted = (
                    draws + info.draws,
                    examples + info.network_examples,
                    accepted + info.accepted,
                )
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            total["draws"] += draws
            total["examples"] += examples
            total["accepted"] += accepted
            total["seconds"] += elapsed
            total["rates"].append(draws / elapsed)
    return [
        {
            "networks_per_s": t["draws"] / t["seconds"],
            "network_examples_per_s": t["examples"] / t["seconds"],
            "draws": t["draws"],
            "accepted": t["accepted"],
            "round_rates": t["rates"],
        }
        for t in totals
    ]


def draw_rate(arch, prior, device: str, how: str, seconds: float) -> float:
    """Networks/s of drawing parameters alone."""
    gen = torch.Generator(device=device).manual_seed(0)
    batch = max(1, min(16_384, (1 << 25) // arch.num_params()))
    draw = {
        "prior": lambda: Population.draw(arch, prior, batch, gen),
        "raw-bits": lambda: draw_batch(arch, prior, batch, gen),
    }[how]
    draw()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        draw()
        count += batch
    if device == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--n", default="2,16,32", help="training-set sizes")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per method and case")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds the measuring time is split into")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--ablations", action="store_true", help="also measure each idea of the fast engine alone")
    parser.add_argument("--baseline-batch", type=int, default=None, help="baseline networks per batch")
    parser.add_argument("--fast-batch", type=int, default=None, help="fast-engine networks per batch")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available; use --device cpu", file=sys.stderr)
        return 2
    cuda = args.device == "cuda"
    baseline_batch = args.baseline_batch or (4096 if cuda else 256)  # the baseline's best measured batch
    fast_batch = args.fast_batch or (1 << 18 if cuda else 1 << 16)
    peak = peak_flops(args.device)
    device_name = torch.cuda.get_device_name(0) if cuda else f"cpu x{torch.get_num_threads()}"
    if not args.json:
        print(f"device: {device_name}, nominal fp32 peak {peak / 1e9:.0f} GFLOP/s")
        print(
            f"{'case':<12} {'n':>3} {'method':<36} {'networks/s':>12} {'net-examples/s':>16} {'peak %':>7} "
            f"{'speed-up':>9} {'(rounds)':>9}"
        )
    for case in args.cases.split(","):
        arch, prior = CASES[case]
        flops = arch.flops_per_example()
        for n in (int(v) for v in args.n.split(",")):
            data = mnist_shaped(n)
            if isinstance(arch, FCN):
                data = Dataset(data.x.flatten(1), data.y)
            fast = GuessAndCheck(arch, prior, data, fast_batch, args.device, engine="fast")
            methods = [
                ("baseline", GuessAndCheck(arch, prior, data, baseline_batch, args.device, engine="baseline")),
                ("fast", fast),
            ]
            if cuda and isinstance(arch, LeNet):  # the CUDA kernel, opt-in until measured here
                try:
                    methods.append(
                        ("native", GuessAndCheck(arch, prior, data, fast_batch, args.device, engine="native"))
                    )
                except TypicalnetsError as error:
                    print(f"note: no CUDA kernel ({error})", file=sys.stderr)
            if args.ablations:
                if fast.engine == "native" and fast.draws_per_trial == 2:
                    methods.append(
                        (
                            "ablation:native-no-mirror",
                            GuessAndCheck(arch, prior, data, fast_batch, args.device, engine="native", mirror=False),
                        )
                    )
                torch_engine = GuessAndCheck(arch, prior, data, fast_batch, args.device, engine="torch")
                no_early = GuessAndCheck(arch, prior, data, fast_batch, args.device, engine="torch")
                no_early.engine_impl = TorchEngine(arch, prior, data, device=args.device, early_rejection=False)
                torch_unpaired = GuessAndCheck(arch, prior, data, fast_batch, args.device, engine="torch", mirror=False)
                methods += [
                    ("ablation:torch-early-rejection", torch_engine),
                    ("ablation:torch-no-mirror", torch_unpaired),
                    ("ablation:torch-no-early-rejection", no_early),
                ]
                if isinstance(arch, LeNet):
                    im2col = GuessAndCheck(arch, prior, data, fast_batch, args.device, engine="torch")
                    im2col.engine_impl = TorchEngine(arch, prior, data, device=args.device, grouped=False)
                    methods.append(("ablation:torch-im2col-bmm", im2col))
            results = measure([sampler for _, sampler in methods], args.device, args.seconds, args.rounds)
            base = results[0]
            for (method, sampler), result in zip(methods, results):
                round_speedups = [r / b for r, b in zip(result["round_rates"], base["round_rates"])]
                row = {
                    "method": method,
                    "engine": sampler.engine,
                    "arch": case,
                    "device": args.device,
                    "n": n,
                    "networks_per_s": result["networks_per_s"],
                    "network_examples_per_s": result["network_examples_per_s"],
                    "flop_fraction": result["network_examples_per_s"] * flops / peak,
                    "speedup": result["networks_per_s"] / base["networks_per_s"],
                    "speedup_min": min(round_speedups),
                    "speedup_max": max(round_speedups),
                    "draws": result["draws"],
                    "accepted": result["accepted"],
                    "draws_per_trial": sampler.draws_per_trial,
                    "batch": sampler.batch_size,
                    "device_name": device_name,
                }
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    spread = f"{row['speedup_min']:.0f}-{row['speedup_max']:.0f}" if method != "baseline" else ""
                    print(
                        f"{case:<12} {n:>3} {method + ' (' + sampler.engine + ')':<36} {row['networks_per_s']:>12,.0f} "
                        f"{row['network_examples_per_s']:>16,.0f} {100 * row['flop_fraction']:>6.2f}% "
                        f"{row['speedup']:>8.1f}x {spread:>9}",
                        flush=True,
                    )
        if args.ablations:
            for how in ("prior", "raw-bits"):
                rate = draw_rate(arch, prior, args.device, how, args.seconds)
                if args.json:
                    print(
                        json.dumps(
                            {
                                "method": f"ablation:draw-{how}",
                                "arch": case,
                                "device": args.device,
                                "networks_per_s": rate,
                            }
                        ),
                        flush=True,
                    )
                else:
                    print(f"{case:<12} {'-':>3} {'ablation:draw-only ' + how:<36} {rate:>12,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
