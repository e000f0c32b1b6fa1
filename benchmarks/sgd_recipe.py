"""SGD with the toolkit's defaults: does it interpolate, on every family and data set, and how fast does it step?

    python benchmarks/sgd_recipe.py lenet     # 100 LeNets (w0.5, U[-1, 1]), Fashion-MNIST T-shirt vs Trouser, n = 16
    python benchmarks/sgd_recipe.py speed     # steps/s of 50 LeNets at n = 16: the old step against today's,
                                              # and the ceiling that the step's arithmetic sets
    python benchmarks/sgd_recipe.py table     # converged networks per family, data set, prior and n, with defaults
    python benchmarks/sgd_recipe.py all       # the three, as in benchmarks/results/sgd_recipe_cpu.txt

Every run uses ``methods.MethodSpec(sampler="sgd")``, the defaults of ``typicalnets sample --sampler sgd``,
``typicalnets run``'s SGD cells and the estimator. Data sets: digits (scikit-learn) and Fashion-MNIST (the
Debian package dataset-fashion-mnist); MNIST and CIFAR-10 need files that are not on the benchmark machine.
The "old" step of ``speed`` is the step of SGDTrainer before the recipe change (commit 178af66): autograd
through the family's own forward (grouped convolutions), then ``Population.mistakes`` for the check.
Its "ceiling" is the step's arithmetic over the best fp32 matrix-product rate measured on this machine:
an exact full-batch step computes the forward of every layer, the gradient of every weight and the
gradient of every layer's input but the first's (about 3 forwards less the first layer's), whatever
code runs it, so no implementation on this CPU steps faster than that.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from typicalnets.data import Dataset, load_binary_task
from typicalnets.experiments import RunConfig, build_task
from typicalnets.methods import MethodSpec, run_method
from typicalnets.nets import CNN, FCN, DiagonalLinear, LeNet, Population
from typicalnets.nets.base import Conv
from typicalnets.priors import Uniform, parse_prior
from typicalnets.samplers.sgd import SGDTrainer
from typicalnets.teachers import make_task, sparse_linear_teacher

DEFAULTS = MethodSpec(sampler="sgd")
PAIR = ("T-shirt/top", "Trouser")


def train(arch, prior, data: Dataset, count: int, seed: int):
    return run_method(DEFAULTS, arch, prior, data, torch.Generator().manual_seed(seed), count)


def lenet() -> None:
    task = load_binary_task("fashion-mnist", PAIR, 8, seed=0)
    arch, prior = LeNet.with_width_factor(0.5), Uniform(1.0)
    ran = train(arch, prior, task.train, 100, seed=0)
    test_error = ran.population.errors(task.test.x, task.test.y)
    print(f"LeNet w0.5, U[-1, 1], Fashion-MNIST {PAIR[0]} vs {PAIR[1]}, n = 16, 100 networks, defaults:")
    print(f"  {ran.message()} ({ran.summary['seconds']:.1f} s); lr {ran.summary['sgd']['lr']:.3g} (scaled to the init)")
    worst = ran.population[ran.converged].errors(task.train.x, task.train.y).max()
    print(f"  largest train error of a converged network: {worst:.0f}")
    print(f"  test error: mean {test_error.mean():.3f}, median {test_error.median():.3f} ({task.test.n} test images)")


def old_step(arch, prior, params, x, y, lr):
    """One step of the SGD trainer at commit 178af66 (full batch, no momentum)."""
    leaves = {name: p.clone().requires_grad_() for name, p in params.items()}
    losses = F.softplus(-arch.forward(leaves, x) * y).mean(dim=1)
    grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
    with torch.no_grad():
        params = {name: p - lr * g for (name, p), g in zip(leaves.items(), grads)}
    Population(arch, prior, params).mistakes(x, y)
    return params


def speed(rounds: int = 7, steps: int = 5) -> None:
    task = load_binary_task("fashion-mnist", PAIR, 8, seed=0)
    arch, prior, count = LeNet.with_width_factor(0.5), Uniform(1.0), 50
    x, y = task.train.x, task.train.y
    # stop_at_zero=False keeps all 50 networks moving, as in the run (none converged there).
    trainer = SGDTrainer(arch, prior, task.train, count, stop_at_zero=False)
    print(
        f"steps/s of {count} LeNets (w0.5, U[-1, 1]) at n = 16, full batch; median of {rounds} rounds of {steps} steps"
    )
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rates = {"old": [], "new": []}
        for _ in range(rounds):  # interleaved, so both see the same load
            params = Population.draw(arch, prior, count, torch.Generator().manual_seed(0)).params
            start = time.perf_counter()
            for _ in range(steps):
                params = old_step(arch, prior, params, x, y.float(), trainer.lr)
            rates["old"].append(steps / (time.perf_counter() - start))
            rng = torch.Generator().manual_seed(0)
            state = trainer.init(rng)
            start = time.perf_counter()
            for _ in range(steps):
                state, _ = trainer.step(rng, state)
            rates["new"].append(steps / (time.perf_counter() - start))
        old, new = statistics.median(rates["old"]), statistics.median(rates["new"])
        spread = {k: f"{min(v):.1f}-{max(v):.1f}" for k, v in rates.items()}
        ceiling = matmul_rate() / step_flops(arch, count, task.train.n)
        print(
            f"  torch threads {threads}: old {old:.1f} steps/s (range {spread['old']}), "
            f"new {new:.1f} steps/s (range {spread['new']}): {new / old:.1f}x; "
            f"ceiling {ceiling:.0f} steps/s ({ceiling / old:.1f}x the old)"
        )


def step_flops(arch, count: int, n: int) -> float:
    """Floating-point operations of one exact full-batch step: the forward, the weight gradients (as
    many as the forward) and the input gradients of every layer but the first."""
    first = arch.layer_plan()[0]
    first_flops = 2 * math.prod(arch.param_shapes()[first.weight]) * first_layer_positions(arch)
    return count * n * (3 * arch.flops_per_example() - first_flops)


def first_layer_positions(arch) -> int:
    """Output positions of the first layer (1 for a dense one): its weights' uses per example."""
    first = arch.layer_plan()[0]
    if not isinstance(first, Conv):
        return 1
    height = (arch.input_shape[1] - first.kernel[0]) // first.stride[0] + 1
    return height * ((arch.input_shape[2] - first.kernel[1]) // first.stride[1] + 1)


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """The best fp32 FLOP/s of a large square matrix product, at the current torch threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def image_students(shape: tuple[int, ...]) -> dict:
    d = math.prod(shape)
    students = {
        "fcn[16]": FCN(d, (16,)),
        "sfcn[16]": FCN(d, (16,), scaled=True),
        "cnn[8] k3 pool2": CNN(shape, (8,), kernel_size=3, pool=2),
        "scnn[8] k3 pool2": CNN(shape, (8,), kernel_size=3, pool=2, scaled=True),
        "diag": DiagonalLinear(d),
    }
    if shape[1] >= 16:
        students["lenet w0.5"] = LeNet.with_width_factor(0.5, shape)
    return students


def tasks():
    """(name, training set of 32, students): the run's default teacher task, a sparse linear one for the
    diagonal network, and two class pairs of each offline image set."""
    default = build_task(RunConfig.build({}), 0).train
    yield "teacher fcn[2], d=4", default, {"fcn[16]": FCN(4, (16,)), "sfcn[16]": FCN(4, (16,), scaled=True)}
    gen = torch.Generator().manual_seed(0)
    yield (
        "sparse linear teacher, d=16",
        make_task(sparse_linear_teacher(16, 2, gen), 32, 1, gen).train,
        {"diag": DiagonalLinear(16)},
    )
    for source, pair in (("digits", ("0", "1")), ("digits", ("3", "8")), ("fashion-mnist", PAIR)):
        data = load_binary_task(source, pair, 16, seed=0).train
        yield f"{source} {pair[0]} vs {pair[1]}", data, image_students(data.input_shape)
    data = load_binary_task("fashion-mnist", ("Pullover", "Coat"), 16, seed=0).train
    yield "fashion-mnist Pullover vs Coat", data, image_students(data.input_shape)


def table(count: int = 50, sizes=(4, 16, 32), priors=("uniform:1", "quantized:3")) -> None:
    print(f"converged / {count} networks with the defaults (full batch, lr scaled to the init, <= 10,000 steps)")
    print(f"{'task':34s} {'student':18s} {'prior':12s} " + " ".join(f"{'n=' + str(n):>16s}" for n in sizes))
    for name, data, students in tasks():
        for label, arch in students.items():
            for spec in priors:
                cells = []
                for n in sizes:
                    part = data.head(n)
                    if isinstance(arch, (FCN, DiagonalLinear)):
                        part = Dataset(part.x.reshape(n, -1), part.y)
                    ran = train(arch, parse_prior(spec), part, count, seed=1)
                    cells.append(f"{ran.summary['converged']:>3d} ({ran.summary['steps']:>5d} st)")
                print(f"{name:34s} {label:18s} {spec:12s} " + " ".join(f"{c:>16s}" for c in cells), flush=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("lenet", "speed", "table", "all"))
    part = parser.parse_args().part
    for name, run in (("lenet", lenet), ("speed", speed), ("table", table)):
        if part in (name, "all"):
            run()
            print()


if __name__ == "__main__":
    cli()
