"""The ``typicalnets`` command line: ``run`` (the main teacher-student job) and ``sample``.

Bad input ends with one line on stderr, ``error: <problem>; <fix>``, exit code 2, and no output
directory left behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import tomllib
import warnings
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
import typer
from rich.console import Console
from rich.table import Table

from typicalnets.data import Dataset, require_both_classes
from typicalnets.errors import TypicalnetsError, build_model
from typicalnets.experiments import RunConfig, experiment_inputs, load_teacher, run_experiment
from typicalnets.methods import MethodResult, MethodSpec, run_method
from typicalnets.nets import ARCH_NAMES, DEFAULT_WIDTH_FACTOR, Population, build_arch
from typicalnets.priors import parse_prior
from typicalnets.resources import check_device, check_seed
from typicalnets.store import check_output_dir, staged_output, write_json
from typicalnets.theory import bound_report, c_tilde_for, plot_epsilon_vs_n

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Typical interpolating neural networks: sample, train, compare, bound.",
)
console = Console(stderr=True)
DEFAULTS = RunConfig()
SPEC = MethodSpec()  # the sampler defaults, defined once in typicalnets.methods


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise TypicalnetsError(f"{what} must be comma-separated integers like 4 or 8,8; got {text!r}") from None
    if not values:
        raise TypicalnetsError(f"{what} is empty; give integers like 4 or 8,8")
    return values


def _loss_bin(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise TypicalnetsError(f"--loss-bin must be LOW,HIGH like 0.5,0.7; got {text!r}") from None
    if not low < high:
        raise TypicalnetsError(f"--loss-bin {text} is empty; give LOW < HIGH")
    return low, high


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TypicalnetsError(f"config file {path} does not exist; give the path of a TOML file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TypicalnetsError(f"config file {path} is not valid TOML ({exc}); fix its syntax") from None
    return {key.replace("-", "_"): value for key, value in data.items()}


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _opt(name: str, help_text: str | None = None, **kwargs: Any) -> Any:
    field = RunConfig.model_fields[name]
    return typer.Option(help=help_text or field.description, **kwargs)


def _csv(values: list[Any]) -> str:
    return ",".join(str(v) for v in values)


@app.command()
def run(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="TOML file whose keys are these options' names")] = None,
    out: Annotated[Path | None, typer.Option(help="results directory [default: results/run-TIMESTAMP]")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an output directory that already holds results")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    seeds: Annotated[str, _opt("seeds")] = _csv(DEFAULTS.seeds),
    dataset: Annotated[str, _opt("dataset")] = DEFAULTS.dataset,
    classes: Annotated[str, _opt("classes")] = _csv(DEFAULTS.classes),
    data_dir: Annotated[str, _opt("data_dir")] = DEFAULTS.data_dir,
    standardize: Annotated[str, _opt("standardize")] = DEFAULTS.standardize,
    input: Annotated[str, _opt("input", "input distribution: gaussian, uniform or boolean")] = DEFAULTS.input,
    in_dim: Annotated[int, _opt("in_dim")] = DEFAULTS.in_dim,
    teacher_widths: Annotated[str, _opt("teacher_widths")] = _csv(DEFAULTS.teacher_widths),
    teacher: Annotated[str, _opt("teacher")] = DEFAULTS.teacher,
    student_widths: Annotated[str, _opt("student_widths")] = _csv(DEFAULTS.student_widths),
    activation: Annotated[str, _opt("activation", "relu, sign, leaky-relu or tanh")] = DEFAULTS.activation,
    bias: Annotated[bool, _opt("bias", "biases in every layer")] = DEFAULTS.bias,
    prior: Annotated[str, _opt("prior")] = DEFAULTS.prior,
    n: Annotated[str, _opt("n")] = _csv(DEFAULTS.n),
    n_test: Annotated[int, _opt("n_test")] = DEFAULTS.n_test,
    count: Annotated[int, _opt("count")] = DEFAULTS.count,
    methods: Annotated[str, _opt("methods")] = _csv(DEFAULTS.methods),
    lenet_width_factor: Annotated[float, _opt("lenet_width_factor")] = DEFAULTS.lenet_width_factor,
    device: Annotated[str, _opt("device")] = DEFAULTS.device,
    engine: Annotated[str, _opt("engine")] = DEFAULTS.engine,
    label_noise: Annotated[float, _opt("label_noise")] = DEFAULTS.label_noise,
    random_labels: Annotated[bool, _opt("random_labels")] = DEFAULTS.random_labels,
    max_majority: Annotated[float, _opt("max_majority")] = DEFAULTS.max_majority,
    max_draws: Annotated[int, _opt("max_draws")] = DEFAULTS.max_draws,
    time_limit: Annotated[float, _opt("time_limit")] = DEFAULTS.time_limit,
    batch_size: Annotated[int, _opt("batch_size")] = DEFAULTS.batch_size,
    smc_fallback: Annotated[bool, _opt("smc_fallback")] = DEFAULTS.smc_fallback,
    smc_particles: Annotated[int | None, _opt("smc_particles")] = DEFAULTS.smc_particles,
    smc_repeats: Annotated[int | None, _opt("smc_repeats")] = DEFAULTS.smc_repeats,
    smc_refresh: Annotated[float, _opt("smc_refresh")] = DEFAULTS.smc_refresh,
    sgd_init: Annotated[str, _opt("sgd_init", "SGD initialisation: prior or standard")] = DEFAULTS.sgd_init,
    sgd_loss: Annotated[str, _opt("sgd_loss", "SGD loss: logistic or hinge")] = DEFAULTS.sgd_loss,
    sgd_lr: Annotated[float, _opt("sgd_lr", "SGD learning rate")] = DEFAULTS.sgd_lr,
    sgd_batch_size: Annotated[int, _opt("sgd_batch_size")] = DEFAULTS.sgd_batch_size,
    sgd_max_steps: Annotated[int, _opt("sgd_max_steps", "SGD step budget per network")] = DEFAULTS.sgd_max_steps,
) -> None:
    """Experiment: typical interpolators (G&C, SMC) and SGD against n.

    A narrow teacher labels the data (or --dataset picks a class pair of an offline data set);
    Guess & Check / SMC sample typical interpolators of the students and SGD trains them. Writes
    results.csv, cells.csv, accuracy.csv, manifest.json and plots (test error with the C~ bound,
    test accuracy, and -ln P(L_S = 0) against C~).
    """
    values = _read_config(config) if config else {}
    for name in RunConfig.model_fields:
        if _from_command_line(ctx, name) or name not in values:
            values[name] = ctx.params[name]
    settings = RunConfig.build(values, strict=True)  # a config file's values must have their exact types
    out = out or Path("results") / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    inputs = [config] if config else []
    check_output_dir(out, overwrite, inputs + experiment_inputs(settings))
    if settings.teacher:
        load_teacher(settings)  # a bad teacher file fails here, before any work
    run_experiment(settings, out, overwrite, progress, console, inputs)


@app.command("sample")
def sample_command(
    ctx: typer.Context,
    train: Annotated[Path, typer.Option(help=".npz with x (n, d) or (n, c, h, w) and y in {-1,+1} or {0,1}")],
    out: Annotated[Path, typer.Option(help="output directory")],
    test: Annotated[Path | None, typer.Option(help=".npz test set, same format")] = None,
    arch: Annotated[str, typer.Option(help=f"architecture: {', '.join(ARCH_NAMES)}")] = "fcn",
    widths: Annotated[
        str,
        typer.Option(
            help="hidden widths (fcn, sfcn) or channels per conv layer (cnn, scnn); lenet uses --width-factor"
        ),
    ] = "4",
    activation: Annotated[str, typer.Option(help="relu, sign, leaky-relu or tanh")] = "relu",
    bias: Annotated[bool, typer.Option(help="biases in every layer")] = True,
    prior: Annotated[
        str, typer.Option(help="quantized:Q, quantized:L1,L2,..., uniform:A or gaussian:SIGMA")
    ] = "quantized:3",
    sampler: Annotated[str, typer.Option(help="gc (Guess & Check), smc (sequential Monte Carlo) or sgd")] = "gc",
    count: Annotated[int, typer.Option(help="networks to sample")] = 100,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    n: Annotated[int | None, typer.Option(help="use only the first n training examples")] = None,
    max_draws: Annotated[int | None, typer.Option(help="G&C budget: networks drawn at most")] = None,
    time_limit: Annotated[float | None, typer.Option(help="G&C budget: seconds at most")] = None,
    batch_size: Annotated[int, typer.Option(help="G&C networks per batch")] = SPEC.batch_size,
    kernel_size: Annotated[str, typer.Option(help="cnn/scnn: kernel size, one or one per layer")] = "3",
    stride: Annotated[str, typer.Option(help="cnn/scnn: stride, one or one per layer")] = "1",
    pool: Annotated[str, typer.Option(help="cnn/scnn: max-pool size (1 = none), one or one per layer")] = "1",
    depth: Annotated[int, typer.Option(help="diag: number of diagonal layers")] = 2,
    width_factor: Annotated[
        float, typer.Option(help="lenet: width factor (0.5 = 3, 8, 60, 42 channels/units)")
    ] = DEFAULT_WIDTH_FACTOR,
    head: Annotated[str, typer.Option(help="lenet: logits (2, argmax) or scalar (sign)")] = "logits",
    engine: Annotated[str, typer.Option(help="gc: fast (native or torch), native, torch or baseline")] = "fast",
    loss_bin: Annotated[
        str | None, typer.Option(help="gc: also require LOW <= normalized cross-entropy < HIGH")
    ] = None,
    mirror: Annotated[
        bool,
        typer.Option(
            help="gc: draw mirrored pairs where the prior allows (--no-mirror: unpaired "
            "draws; both give i.i.d. posterior samples)"
        ),
    ] = True,
    particles: Annotated[
        int | None, typer.Option(help="smc: particles per run [default: from --count]")
    ] = SPEC.particles,
    repeats: Annotated[
        int | None, typer.Option(help="smc: independent runs (>= 2 gives an interval for ln P(L_S = 0)) [default: 2]")
    ] = SPEC.repeats,
    block: Annotated[int, typer.Option(help="smc: training examples added per step")] = SPEC.block,
    max_moves: Annotated[int, typer.Option(help="smc: most MCMC sweeps per step")] = SPEC.max_moves,
    sgd_init: Annotated[str, typer.Option(help="sgd: prior or standard")] = SPEC.sgd_init,
    sgd_loss: Annotated[str, typer.Option(help="sgd: logistic or hinge")] = SPEC.sgd_loss,
    sgd_lr: Annotated[float, typer.Option(help="sgd: learning rate")] = SPEC.sgd_lr,
    sgd_batch_size: Annotated[
        int | None, typer.Option(help="sgd: mini-batch size, 0 = full batch [default: full batch]")
    ] = SPEC.sgd_batch_size,
    sgd_max_steps: Annotated[int, typer.Option(help="sgd: step budget")] = SPEC.sgd_max_steps,
    sgd_epochs: Annotated[int | None, typer.Option(help="sgd: passes over the data (replaces --sgd-max-steps)")] = None,
    sgd_momentum: Annotated[float, typer.Option(help="sgd: momentum in [0, 1)")] = SPEC.sgd_momentum,
    sgd_stop: Annotated[
        bool,
        typer.Option(
            help="sgd: freeze each network at zero training error "
            "(--no-sgd-stop trains every network for the whole budget)"
        ),
    ] = True,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    overwrite: Annotated[bool, typer.Option(help="replace an output directory that already holds results")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Sample typical interpolators (or train SGD networks) on your data.

    Writes summary.json, networks.csv, train_predictions.npy and test_predictions.npy (int8, K x n,
    +1/-1, and 0 only where f = 0 exactly, which counts as a mistake) and population.pt.
    """
    inputs = [train] + ([test] if test else [])
    check_output_dir(out, overwrite, inputs)
    device = check_device(device, "--device")
    check_seed(seed, "--seed")
    train_set = Dataset.load_npz(train)
    if n is not None:
        if n < 1:
            raise TypicalnetsError(f"--n must be >= 1, got {n}; give a positive number of examples")
        train_set = train_set.head(n)
    require_both_classes(train_set, str(train) + (f" (first {n} examples)" if n is not None else ""))
    test_set = Dataset.load_npz(test) if test else None
    network = build_arch(
        arch,
        train_set.input_shape,
        _ints(widths, "--widths"),
        activation,
        bias,
        _ints(kernel_size, "--kernel-size"),
        _ints(stride, "--stride"),
        _ints(pool, "--pool"),
        depth,
        width_factor,
        head,
    )
    bin_edges = _loss_bin(loss_bin) if loss_bin else None
    if test_set is not None and test_set.input_shape != train_set.input_shape:
        raise TypicalnetsError(
            f"test examples have shape {test_set.input_shape} but training examples {train_set.input_shape}; use "
            "matching data"
        )
    prior_obj = parse_prior(prior)
    # The sampler settings are the options named like MethodSpec's fields.
    settings = {name: value for name, value in ctx.params.items() if name in MethodSpec.model_fields}
    spec = build_model(
        MethodSpec, {**settings, "device": device, "loss_bin": bin_edges, "sgd_batch_size": sgd_batch_size or None}
    )
    with staged_output(out, overwrite, inputs) as staging:  # an unwritable --out fails here, before sampling
        rng = torch.Generator(device=device).manual_seed(seed)
        ran = run_method(spec, network, prior_obj, train_set, rng, count, max_draws, time_limit, progress)
        summary = {
            "sampler": sampler,
            **ran.summary,
            "arch": network.to_dict(),
            "prior": prior_obj.spec(),
            "seed": seed,
            "n_train": train_set.n,
            "n_test": test_set.n if test_set else None,
            "device": device,
        }
        _write_sample(staging, ran, summary, train_set, test_set)
    console.print(ran.message(), soft_wrap=True)
    console.print(f"results in {out}")


def _write_sample(
    staging: Path, ran: MethodResult, summary: dict[str, Any], train: Dataset, test: Dataset | None
) -> None:
    """The files of ``typicalnets sample`` (the README's contract) for the networks ``ran`` produced."""
    population = ran.population.to("cpu")
    table = pd.DataFrame(
        {"network": np.arange(len(population)), "train_error": population.errors(train.x, train.y).numpy()}
    )
    if ran.sampler == "sgd":
        table["converged"] = ran.converged
        table["steps"] = ran.steps
    np.save(staging / "train_predictions.npy", population.predict(train.x).numpy())
    if test is not None:
        table["test_error"] = population.errors(test.x, test.y).numpy()
        np.save(staging / "test_predictions.npy", population.predict(test.x).numpy())
        summary["test_error_mean"] = float(table["test_error"].mean()) if len(table) else None
    table.to_csv(staging / "networks.csv", index=False)
    if ran.sampler == "smc":
        pd.DataFrame(list(ran.diagnostics)).to_csv(staging / "diagnostics.csv", index=False)
    population.save(staging / "population.pt")
    write_json(staging / "summary.json", summary)


@app.command("bound")
def bound(
    student_widths: Annotated[
        str,
        typer.Option(help="student hidden widths (fcn, sfcn) or channels per conv layer (cnn, scnn), e.g. 16 or 16,16"),
    ],
    teacher_widths: Annotated[
        str | None,
        typer.Option(help="teacher widths, one per student layer, e.g. 2 or 2,2 (default: those of --teacher)"),
    ] = None,
    arch: Annotated[str, typer.Option(help="fcn, sfcn, cnn or scnn (teacher and student)")] = "fcn",
    in_dim: Annotated[int | None, typer.Option(help="fcn/sfcn: input dimension")] = None,
    in_shape: Annotated[str | None, typer.Option(help="cnn/scnn: input shape C,L or C,H,W")] = None,
    kernel_size: Annotated[str, typer.Option(help="cnn/scnn: kernel size, one or one per layer")] = "3",
    stride: Annotated[str, typer.Option(help="cnn/scnn: stride, one or one per layer")] = "1",
    pool: Annotated[str, typer.Option(help="cnn/scnn: max-pool size (1 = none), one or one per layer")] = "1",
    bias: Annotated[bool, typer.Option(help="biases in every layer")] = True,
    prior: Annotated[
        str, typer.Option(help="quantized:Q, quantized:L1,L2,..., or uniform:A / gaussian:S with --margin")
    ] = "quantized:3",
    zero_prob: Annotated[
        float | None,
        typer.Option(
            help="quantized: prior probability q0 of the level 0 (default 1/Q); the other levels share 1 - q0"
        ),
    ] = None,
    margin: Annotated[
        float | None, typer.Option(help="uniform/gaussian: angular margin alpha in radians, in (0, pi/2]")
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="population.pt holding one teacher network: the bound "
            "uses its weights (the student copies its settings)"
        ),
    ] = None,
    placements: Annotated[
        bool | None,
        typer.Option(
            "--placements/--no-placements",
            help="subtract the placement term: by default only where its condition is proven for --teacher; "
            "--placements without --teacher assumes a teacher that meets it",
        ),
    ] = None,
    n: Annotated[int | None, typer.Option(help="training examples: also report epsilon = (C~ + ln(1/delta))/n")] = None,
    delta: Annotated[float, typer.Option(help="failure probability delta")] = 0.05,
    epsilon: Annotated[float | None, typer.Option(help="target error: also report the n_required for it")] = None,
    plot: Annotated[Path | None, typer.Option(help="draw epsilon against n into this .png/.pdf/.svg")] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="print exactly one JSON object instead of a table")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing --plot file")] = False,
) -> None:
    """Upper bound on the effective complexity C~ = -ln p~ of a narrow teacher in a wider student.

    Prints C~ in nats and bits with its terms (derivations: typicalnets.theory), and with --n or
    --epsilon the error bound (C~ + ln(1/delta))/n or the sample size that reaches epsilon.
    """
    teacher_arch, student, teacher_net = _bound_models(
        arch, student_widths, teacher_widths, teacher, in_dim, in_shape, kernel_size, stride, pool, bias
    )
    prior_obj = parse_prior(prior)
    result = c_tilde_for(teacher_arch, student, prior_obj, teacher_net, zero_prob, placements, margin)
    report = bound_report(result, prior_obj, delta, n, epsilon)
    if plot is not None:
        _check_plot(plot, overwrite)
    report = {**_bound_inputs(arch, teacher_arch, student, teacher), **report, "plot": str(plot) if plot else None}
    if plot is not None:
        title = f"{teacher_arch.describe()} teacher in {student.describe()}, {prior_obj.spec()}"
        _write_plot(plot, result.nats, delta, n, epsilon, title)
    if json_output:
        typer.echo(json.dumps(report, allow_nan=False))
        return
    Console(soft_wrap=True).print(
        _bound_table(result, report, teacher_arch, student, prior_obj, n, delta, epsilon, plot)
    )


def _bound_models(
    arch: str,
    student_widths: str,
    teacher_widths: str | None,
    teacher: Path | None,
    in_dim: int | None,
    in_shape: str | None,
    kernel_size: str,
    stride: str,
    pool: str,
    bias: bool,
):
    """(teacher architecture, student architecture, teacher network or None) from ``bound``'s options."""
    if arch not in ("fcn", "sfcn", "cnn", "scnn"):
        raise TypicalnetsError(f"--arch {arch!r} has no C~ bound; use fcn, sfcn, cnn or scnn")
    convolutional = arch in ("cnn", "scnn")
    teacher_net = Population.load(teacher) if teacher else None
    if teacher_net is not None and (len(teacher_net) != 1 or (teacher_net.arch.family == "cnn") != convolutional):
        raise TypicalnetsError(
            f"--teacher {teacher} holds {len(teacher_net)} {teacher_net.arch.name} network(s); give one network "
            f"of the --arch {arch} family"
        )
    if convolutional and in_dim is not None:
        raise TypicalnetsError(f"--in-dim is for fcn/sfcn; give --arch {arch} inputs as --in-shape C,L or C,H,W")
    if not convolutional and in_shape is not None:
        raise TypicalnetsError(f"--in-shape is for cnn/scnn; give --arch {arch} inputs as --in-dim D")
    widths = _ints(student_widths, "--student-widths")
    if teacher_net is not None:
        teacher_arch = teacher_net.arch
        if teacher_widths is not None and _ints(teacher_widths, "--teacher-widths") != tuple(teacher_arch.widths):
            raise TypicalnetsError(
                f"--teacher-widths {teacher_widths} differ from the --teacher network's {list(teacher_arch.widths)}; "
                "drop --teacher-widths or fix it"
            )
        given_shape = (in_dim,) if in_dim is not None else _ints(in_shape, "--in-shape") if in_shape else None
        if given_shape is not None and given_shape != tuple(teacher_arch.input_shape):
            raise TypicalnetsError(
                f"the input shape {given_shape} differs from the --teacher network's {teacher_arch.input_shape}; "
                "drop it or fix it"
            )
        student = replace(teacher_arch.with_widths(widths), scaled=arch in ("sfcn", "scnn"))
    else:
        if teacher_widths is None:
            raise TypicalnetsError("--teacher-widths is missing; give e.g. --teacher-widths 2, or --teacher FILE")
        if convolutional and in_shape is None:
            raise TypicalnetsError(f"--in-shape is missing; give --arch {arch} inputs as --in-shape C,L or C,H,W")
        if not convolutional and in_dim is None:
            raise TypicalnetsError(f"--in-dim is missing; give --arch {arch} the input size, e.g. --in-dim 4")
        input_shape = _ints(in_shape, "--in-shape") if convolutional else (in_dim,)
        conv = (_ints(kernel_size, "--kernel-size"), _ints(stride, "--stride"), _ints(pool, "--pool"))
        student = build_arch(arch, input_shape, widths, "relu", bias, *conv)
        teacher_arch = build_arch(arch, input_shape, _ints(teacher_widths, "--teacher-widths"), "relu", bias, *conv)
    return teacher_arch, student, teacher_net


def _check_plot(plot: Path, overwrite: bool) -> None:
    if plot.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise TypicalnetsError(f"--plot {plot} needs a .png, .pdf or .svg name; rename it")
    if not plot.parent.is_dir():
        raise TypicalnetsError(f"the folder of --plot {plot} does not exist; create it or choose another path")
    if plot.exists() and not (overwrite and plot.is_file()):
        raise TypicalnetsError(f"--plot {plot} already exists; pass --overwrite to replace it or choose another path")


def _bound_inputs(arch: str, teacher_arch, student, teacher: Path | None) -> dict[str, Any]:
    """The report's description of the teacher and student."""
    inputs: dict[str, Any] = {
        "arch": arch,
        "student_widths": list(student.widths),
        "teacher_widths": list(teacher_arch.widths),
        "bias": student.bias,
        "teacher": str(teacher) if teacher else None,
    }
    if arch in ("cnn", "scnn"):
        inputs.update(
            in_shape=list(student.in_shape),
            kernel_size=list(student.kernel_size),
            stride=list(student.stride),
            pool=list(student.pool),
        )
    else:
        inputs.update(in_dim=student.in_dim)
    return inputs


def _write_plot(plot: Path, nats: float, delta: float, n: int | None, epsilon: float | None, title: str) -> None:
    # Drawn beside the target and renamed over it, so an interrupted run leaves no half-written plot.
    staging = plot.with_name(f".{plot.stem}.partial-{os.getpid()}{plot.suffix}")
    try:
        plot_epsilon_vs_n(nats, delta, staging, n, epsilon, title)
        staging.replace(plot)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _bound_table(result, report: dict[str, Any], teacher_arch, student, prior_obj, n, delta, epsilon, plot) -> Table:
    """The human-readable report: C~ with its terms and counts, and the requested bounds."""
    table = Table(
        title=f"C~ bound: {teacher_arch.describe()} teacher in {student.describe()} student, "
        f"prior {prior_obj.spec()} ({result.variant})"
    )
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("C~ (nats)", f"{result.nats:.4f}")
    table.add_row("C~ (bits)", f"{result.bits:.4f}")
    for name, value in result.terms.items():
        if value or name == "teacher_params":  # terms that do not apply to this family are 0
            table.add_row(f"  {name.replace('_', ' ')} (nats)", f"{value:.4f}")
    for name, value in result.counts.items():
        if value or name in ("teacher_params", "student_params"):
            table.add_row(name.replace("_", " "), f"{value:,}")
    table.add_row("placements", f"{'used' if result.placements_used else 'not used'}: {result.placement_condition}")
    if "c_tilde_all_params" in report:
        table.add_row("naive bound, every student parameter (nats)", f"{report['c_tilde_all_params']:.4f}")
    if n is not None:
        table.add_row(f"epsilon at n = {n}, delta = {delta:g}", f"{report['epsilon']:.4g}")
    if epsilon is not None:
        table.add_row(f"n for epsilon = {epsilon:g}, delta = {delta:g}", f"{report['n_required']:,}")
    for note in result.notes:
        table.add_row("note", note)
    if plot is not None:
        table.add_row("plot", str(plot))
    return table


def as_flags(message: str, argv: list[str] | None) -> str:
    """A library message with the invoked command's parameter names as its flags: every name with an
    underscore (``max_draws`` -> ``--max-draws``), any name followed by a comparison, ``=`` or "must"
    (``count = 0``, ``count must be >= 1``), names after a verb of advice ("raise particles or
    repeats"); ``name=False`` becomes ``--no-name``."""
    words = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    sub = command.commands.get(words[0]) if words and hasattr(command, "commands") else None
    names = sorted({param.name for param in sub.params if param.name} if sub else set(), key=len, reverse=True)

    def advised(match: re.Match) -> str:
        verb, first, joiner, second = match.groups()
        flags = [f"--{word.replace('_', '-')}" if word in names else word for word in (first, second) if word]
        return f"{verb} {flags[0]}" + (f" {joiner} {flags[1]}" if second else "")

    message = re.sub(r"\b(raise|lower|set|give|pass|drop) ([a-z_]+)(?: (or|and) ([a-z_]+))?\b", advised, message)
    for name in names:
        flag = "--" + name.replace("_", "-")
        message = re.sub(rf"\b{name}=False\b", f"--no-{name.replace('_', '-')}", message)
        pattern = rf"(?<![-\w]){name}\b" if "_" in name else rf"(?<![-\w]){name}\b(?= ?(?:[<>!]?=|[<>]| must\b))"
        message = re.sub(pattern, flag, message)
    return message


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that staging directories are cleaned up on the way out."""


def _terminate(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
    raise Terminated


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors with exit code 2 for bad input; 130 after Ctrl-C and 143 after
    SIGTERM, once the staging directory is removed (nothing is half-written)."""
    in_main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous_term = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    previous_warning = warnings.showwarning
    warnings.showwarning = _one_line_warning
    interrupted = "interrupted; no results were written"
    try:
        code = app(args=argv, standalone_mode=False, prog_name="typicalnets")
    except TypicalnetsError as exc:
        console.print(f"error: {as_flags(str(exc), argv)}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        console.print(f"error: {interrupted}", markup=False)
        return 130
    except Terminated:
        console.print(f"error: terminated; {interrupted.split('; ')[1]}", markup=False)
        return 143
    except typer.TyperException as exc:  # usage errors: unknown option, bad value type, missing option
        command = getattr(getattr(exc, "ctx", None), "command_path", "typicalnets")
        console.print(
            f"error: {exc.format_message()}; see {command} --help", markup=False, highlight=False, soft_wrap=True
        )
        return exc.exit_code
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_term)
        warnings.showwarning = previous_warning
    if code == 130:  # typer turns KeyboardInterrupt into exit code 130
        console.print(f"error: {interrupted}", markup=False)
    return code if isinstance(code, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
