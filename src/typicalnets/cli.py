"""The ``typicalnets`` command line: ``run`` (the main teacher-student job), ``sample`` and ``bound``.

Bad input ends with one line on stderr, ``error: <problem>; <fix>``, exit code 2, and no output
directory left behind.

Each command reads as parse, validate, compute, render. Its options are the fields of a dataclass
(``RunOptions``, ``SampleOptions``, ``BoundOptions``) that ``_options_from`` shows to typer as the
command's parameters and hands to the command as one object.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import signal
import sys
import threading
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, make_dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_origin, get_type_hints

import numpy as np
import pandas as pd
import torch
import typer
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.table import Table

from typicalnets.data import Dataset, require_both_classes
from typicalnets.errors import TypicalnetsError, build_model
from typicalnets.experiments import RunConfig, experiment_inputs, load_teacher, run_experiment
from typicalnets.methods import MethodResult, MethodSpec, run_method
from typicalnets.nets import ARCH_NAMES, DEFAULT_WIDTH_FACTOR, Architecture, Population, build_arch
from typicalnets.nets.population import DEFAULT_CHUNK, Blocks, PopulationWriter
from typicalnets.priors import Prior, parse_prior
from typicalnets.resources import check_device, check_memory, check_seed
from typicalnets.store import NpyRows, check_free_space, check_output_dir, staged_output, write_json
from typicalnets.theory import CTildeBound, bound_report, c_tilde_for, plot_epsilon_vs_n

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Typical interpolating neural networks: sample, train, compare, bound.",
)
console = Console(stderr=True)
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


def _csv(values: list[Any]) -> str:
    return ",".join(str(v) for v in values)


def _options_from(options_type: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator for a command whose last parameter is an ``options_type`` dataclass: typer (which reads
    ``inspect.signature``) sees each field as an option, its annotation holding the ``typer.Option`` and its
    default the default, and the command receives them gathered into one instance."""
    hints = get_type_hints(options_type, include_extras=True)
    options = [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if field.default is MISSING else field.default,
            annotation=hints[field.name],
        )
        for field in fields(options_type)
    ]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        *own, _ = inspect.signature(command, eval_str=True).parameters.values()  # e.g. the typer.Context

        @functools.wraps(command)
        def with_options(**values: Any) -> None:
            own_values = [values.pop(parameter.name) for parameter in own]
            command(*own_values, options_type(**values))

        with_options.__signature__ = inspect.Signature([*own, *options])
        return with_options

    return decorate


# Options that several commands share.
Overwrite = Annotated[bool, typer.Option(help="replace an output directory that already holds results")]
Bias = Annotated[bool, typer.Option(help="biases in every layer")]
KernelSize = Annotated[str, typer.Option(help="cnn/scnn: kernel size, one or one per layer")]
Stride = Annotated[str, typer.Option(help="cnn/scnn: stride, one or one per layer")]
Pool = Annotated[str, typer.Option(help="cnn/scnn: max-pool size (1 = none), one or one per layer")]

# The help of run's options whose RunConfig field has no description, or one that says less.
RUN_HELP = {
    "input": "input distribution: gaussian, uniform or boolean",
    "activation": "relu, sign, leaky-relu or tanh",
    "bias": "biases in every layer",
    "sgd_init": "SGD initialisation: prior or standard",
    "sgd_loss": "SGD loss: logistic or hinge",
    "sgd_lr": "SGD learning rate [default: scaled to the init]",
    "sgd_max_steps": "SGD step budget per network",
}


def _config_option(name: str, field: FieldInfo) -> tuple[str, Any, Any]:
    """``run``'s option for a RunConfig field, as (name, annotation, default): lists are given as comma-separated
    text and choices as text, which RunConfig checks (its message names the choices)."""
    listed = isinstance(field.default, list)
    kind = str if listed or get_origin(field.annotation) is Literal else field.annotation
    option = typer.Option(help=RUN_HELP.get(name, field.description))
    return name, Annotated[kind, option], _csv(field.default) if listed else field.default


# typicalnets run's options: its own four, then one per RunConfig field, named alike.
RunOptions = make_dataclass(
    "RunOptions",
    [
        ("config", Annotated[Path | None, typer.Option(help="TOML file whose keys are these options' names")], None),
        ("out", Annotated[Path | None, typer.Option(help="results directory [default: results/run-TIMESTAMP]")], None),
        ("overwrite", Overwrite, False),
        ("progress", Annotated[bool, typer.Option(help="show progress bars")], True),
        *(_config_option(name, field) for name, field in RunConfig.model_fields.items()),
    ],
    frozen=True,
)


@app.command()
@_options_from(RunOptions)
def run(ctx: typer.Context, options: RunOptions) -> None:
    """Experiment: typical interpolators (G&C, SMC) and SGD against n.

    A narrow teacher labels the data (or --dataset picks a class pair of an offline data set);
    Guess & Check / SMC sample typical interpolators of the students and SGD trains them. Writes
    results.csv, cells.csv, accuracy.csv, manifest.json and plots (test error with the C~ bound,
    test accuracy, and -ln P(L_S = 0) against C~).
    """
    settings = _run_settings(ctx, options)
    out = options.out or Path("results") / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    inputs = [options.config] if options.config else []
    check_output_dir(out, options.overwrite, inputs + experiment_inputs(settings))
    if settings.teacher:
        load_teacher(settings)  # a bad teacher file fails here, before any work
    run_experiment(settings, out, options.overwrite, options.progress, console, inputs)


def _run_settings(ctx: typer.Context, options: RunOptions) -> RunConfig:
    """The validated RunConfig: the --config file's values, where the command line does not give them, over the
    defaults."""
    values = _read_config(options.config) if options.config else {}
    for name in RunConfig.model_fields:
        if _from_command_line(ctx, name) or name not in values:
            values[name] = getattr(options, name)
    return RunConfig.build(values, strict=True)  # a config file's values must have their exact types


@dataclass(frozen=True)
class SampleOptions:
    """``typicalnets sample``'s options, in --help order; the sampler settings are named like MethodSpec's fields
    and take its defaults."""

    train: Annotated[Path, typer.Option(help=".npz with x (n, d) or (n, c, h, w) and y in {-1,+1} or {0,1}")]
    out: Annotated[Path, typer.Option(help="output directory")]
    test: Annotated[Path | None, typer.Option(help=".npz test set, same format")] = None
    arch: Annotated[str, typer.Option(help=f"architecture: {', '.join(ARCH_NAMES)}")] = "fcn"
    widths: Annotated[
        str,
        typer.Option(
            help="hidden widths (fcn, sfcn) or channels per conv layer (cnn, scnn); lenet uses --width-factor"
        ),
    ] = "4"
    activation: Annotated[str, typer.Option(help="relu, sign, leaky-relu or tanh")] = "relu"
    bias: Bias = True
    prior: Annotated[str, typer.Option(help="quantized:Q, quantized:L1,L2,..., uniform:A or gaussian:SIGMA")] = (
        "quantized:3"
    )
    sampler: Annotated[str, typer.Option(help="gc (Guess & Check), smc (sequential Monte Carlo) or sgd")] = SPEC.sampler
    count: Annotated[int, typer.Option(help="networks to sample")] = 100
    seed: Annotated[int, typer.Option(help="random seed")] = 0
    n: Annotated[int | None, typer.Option(help="use only the first n training examples")] = None
    max_draws: Annotated[int | None, typer.Option(help="G&C budget: networks drawn at most")] = None
    time_limit: Annotated[float | None, typer.Option(help="budget: seconds at most (gc, smc, sgd)")] = None
    batch_size: Annotated[int, typer.Option(help="G&C networks per batch")] = SPEC.batch_size
    kernel_size: KernelSize = "3"
    stride: Stride = "1"
    pool: Pool = "1"
    depth: Annotated[int, typer.Option(help="diag: number of diagonal layers")] = 2
    width_factor: Annotated[float, typer.Option(help="lenet: width factor (0.5 = 3, 8, 60, 42 channels/units)")] = (
        DEFAULT_WIDTH_FACTOR
    )
    head: Annotated[str, typer.Option(help="lenet: logits (2, argmax) or scalar (sign)")] = "logits"
    engine: Annotated[str, typer.Option(help="gc: fast (native or torch), native, torch or baseline")] = SPEC.engine
    # LOW,HIGH text: None means no bin, as MethodSpec's default.
    loss_bin: Annotated[str | None, typer.Option(help="gc: also require LOW <= normalized cross-entropy < HIGH")] = None
    mirror: Annotated[
        bool,
        typer.Option(
            help="gc: draw mirrored pairs where the prior allows (--no-mirror: unpaired "
            "draws; both give i.i.d. posterior samples)"
        ),
    ] = SPEC.mirror
    particles: Annotated[int | None, typer.Option(help="smc: particles per run [default: from --count]")] = (
        SPEC.particles
    )
    repeats: Annotated[
        int | None, typer.Option(help="smc: independent runs (>= 2 gives an interval for ln P(L_S = 0)) [default: 2]")
    ] = SPEC.repeats
    block: Annotated[int, typer.Option(help="smc: training examples added per step")] = SPEC.block
    max_moves: Annotated[int, typer.Option(help="smc: most MCMC sweeps per step")] = SPEC.max_moves
    sgd_init: Annotated[str, typer.Option(help="sgd: prior or standard")] = SPEC.sgd_init
    sgd_loss: Annotated[str, typer.Option(help="sgd: logistic or hinge")] = SPEC.sgd_loss
    sgd_lr: Annotated[float | None, typer.Option(help="sgd: learning rate [default: scaled to the init]")] = SPEC.sgd_lr
    sgd_batch_size: Annotated[
        int | None, typer.Option(help="sgd: mini-batch size, 0 = full batch [default: full batch]")
    ] = SPEC.sgd_batch_size
    sgd_max_steps: Annotated[int, typer.Option(help="sgd: step budget")] = SPEC.sgd_max_steps
    sgd_epochs: Annotated[int | None, typer.Option(help="sgd: passes over the data (replaces --sgd-max-steps)")] = (
        SPEC.sgd_epochs
    )
    sgd_momentum: Annotated[float, typer.Option(help="sgd: momentum in [0, 1)")] = SPEC.sgd_momentum
    sgd_stop: Annotated[
        bool,
        typer.Option(
            help="sgd: freeze each network at zero training error "
            "(--no-sgd-stop trains every network for the whole budget)"
        ),
    ] = SPEC.sgd_stop
    device: Annotated[str, typer.Option(help="cpu or cuda")] = SPEC.device
    overwrite: Overwrite = False
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True

    @property
    def input_files(self) -> list[Path]:
        """The files read, which the output directory may not hold."""
        return [self.train] + ([self.test] if self.test else [])


class SampleInputs(NamedTuple):
    """What ``sample`` works on, every option checked."""

    train: Dataset
    test: Dataset | None
    network: Architecture
    prior: Prior
    spec: MethodSpec


@app.command("sample")
@_options_from(SampleOptions)
def sample_command(options: SampleOptions) -> None:
    """Sample typical interpolators (or train SGD networks) on your data.

    Writes summary.json, networks.csv, train_predictions.npy and test_predictions.npy (int8, K x n,
    +1/-1, and 0 only where f = 0 exactly, which counts as a mistake) and population.pt (beyond 64 MiB of
    parameters: shards population-00000.pt, ... listed in population-shards.json), all as the networks come.
    """
    inputs = _sample_inputs(options)
    # staged_output creates the staging folder now: an unwritable --out fails here, before sampling.
    with staged_output(options.out, options.overwrite, options.input_files) as staging:
        _check_output_size(options, inputs)
        with SampleFiles(staging, inputs.network, inputs.prior, inputs.train, inputs.test) as files:
            ran = _sample(options, inputs, files.add)
            _write_sample(files, ran, _sample_summary(options, inputs, ran))
    console.print(ran.message(), soft_wrap=True)
    console.print(f"results in {options.out}")


def _sample_inputs(options: SampleOptions) -> SampleInputs:
    """The data, network, prior and sampler settings that ``options`` give, checked in this order before any work
    (the first problem is the one reported)."""
    check_output_dir(options.out, options.overwrite, options.input_files)
    device = check_device(options.device, "--device")
    check_seed(options.seed, "--seed")
    train, test = _sample_data(options)
    network = _sample_network(options, train.input_shape)
    bin_edges = _loss_bin(options.loss_bin) if options.loss_bin else None
    if test is not None and test.input_shape != train.input_shape:
        raise TypicalnetsError(
            f"test examples have shape {test.input_shape} but training examples {train.input_shape}; use matching data"
        )
    prior = parse_prior(options.prior)
    settings = {name: getattr(options, name) for name in MethodSpec.model_fields if hasattr(options, name)}
    settings.update(device=device, loss_bin=bin_edges, sgd_batch_size=options.sgd_batch_size or None)  # 0: full batch
    return SampleInputs(train, test, network, prior, build_model(MethodSpec, settings))


def _sample_data(options: SampleOptions) -> tuple[Dataset, Dataset | None]:
    """The training set (its first --n examples, with both classes) and the test set, if one is given."""
    train = Dataset.load_npz(options.train)
    n = options.n
    if n is not None:
        if n < 1:
            raise TypicalnetsError(f"--n must be >= 1, got {n}; give a positive number of examples")
        train = train.head(n)
    require_both_classes(train, str(options.train) + (f" (first {n} examples)" if n is not None else ""))
    return train, Dataset.load_npz(options.test) if options.test else None


def _sample_network(options: SampleOptions, input_shape: tuple[int, ...]) -> Architecture:
    """The architecture of --arch and its options for inputs of ``input_shape``."""
    return build_arch(
        options.arch,
        input_shape,
        _ints(options.widths, "--widths"),
        options.activation,
        options.bias,
        _ints(options.kernel_size, "--kernel-size"),
        _ints(options.stride, "--stride"),
        _ints(options.pool, "--pool"),
        options.depth,
        options.width_factor,
        options.head,
    )


def _sample(
    options: SampleOptions, inputs: SampleInputs, sink: Callable[[Population], None] | None = None
) -> MethodResult:
    """The networks, sampled (or trained) from --seed under the --count, --max-draws and --time-limit budgets.
    G&C hands its networks to ``sink`` as it finds them (``run_method``), and its result holds none."""
    rng = torch.Generator(device=inputs.spec.device).manual_seed(options.seed)
    budgets = (options.count, options.max_draws, options.time_limit)
    return run_method(
        inputs.spec, inputs.network, inputs.prior, inputs.train, rng, *budgets, options.progress, sink=sink
    )


def _sample_summary(options: SampleOptions, inputs: SampleInputs, ran: MethodResult) -> dict[str, Any]:
    """summary.json's fields (``SampleFiles.finish`` adds the mean test error)."""
    return {
        "sampler": options.sampler,
        **ran.summary,
        "arch": inputs.network.to_dict(),
        "prior": inputs.prior.spec(),
        "seed": options.seed,
        "n_train": inputs.train.n,
        "n_test": inputs.test.n if inputs.test else None,
        "device": inputs.spec.device,
    }


# About the most bytes a networks.csv row takes (its index, errors and SGD's flags).
CSV_ROW_BYTES = 64


def _check_output_size(options: SampleOptions, inputs: SampleInputs) -> None:
    """Refuse, before sampling, a network too large for any run, then a --count whose files the disk under --out
    cannot hold (they are never all held in memory, so the disk is what bounds them)."""
    check_memory(inputs.network.num_params(), 1, "a network", fix="use smaller widths")
    held = options.count if options.max_draws is None else min(options.count, options.max_draws)
    n_test = inputs.test.n if inputs.test else 0
    per_network = 4 * inputs.network.num_params() + inputs.train.n + n_test + CSV_ROW_BYTES
    what = f"count = {held:,} networks of {inputs.network.num_params():,} parameters each"
    check_free_space(options.out, held * per_network, what, "lower count or the widths, or choose another --out")


def _write_sample(files: SampleFiles, ran: MethodResult, summary: dict[str, Any]) -> None:
    """The networks ``ran`` holds (SMC's, SGD's with their flags; G&C's came to ``files.add`` as they were found)
    and SMC's diagnostics, then the summary: the contract files are complete."""
    columns = {"converged": ran.converged, "steps": ran.steps} if ran.sampler == "sgd" else {}
    files.add(ran.population, **columns)
    if ran.sampler == "smc":
        pd.DataFrame(list(ran.diagnostics)).to_csv(files.staging / "diagnostics.csv", index=False)
    files.finish(summary)


# Activations (floats) of one prediction block's forward at most: with its copies, well under 1 GB.
PREDICTION_ACTIVATIONS = 1 << 24


@dataclass(frozen=True)
class _Networks:
    """Networks and their values besides the errors (SGD: converged, steps), sliced together."""

    population: Population
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.population)

    def __getitem__(self, part: slice) -> _Networks:
        return _Networks(self.population[part], {name: values[part] for name, values in self.columns.items()})


class SampleFiles:
    """The files of ``typicalnets sample`` (the README's contract), written as the networks come, so that a run of
    any count holds one block of them: ``add`` networks in order, as often as they come, then ``finish``. Use it
    as a context manager, which closes the files also when the run fails (the staging folder is then deleted).

    The networks are handled in blocks of ``block`` networks, counted from the first network (``Blocks``), so the
    files do not depend on how the networks arrived and equal what one call with all of them writes (predictions
    are computed per block, like ``Population.predict``'s chunks). A block's predictions are appended to
    train_predictions.npy and test_predictions.npy (``store.NpyRows``), its rows, with the errors counted from
    those predictions, to networks.csv, and its networks to a ``PopulationWriter``: population.pt, or beyond one
    shard (``SHARD_BYTES``) shards and their index. Besides one block and one shard, it keeps each network's test
    error (8 bytes; 4 MB for 500,000 networks), whose mean summary.json gives as pandas computes it."""

    def __init__(
        self,
        staging: Path,
        arch: Architecture,
        prior: Prior,
        train: Dataset,
        test: Dataset | None,
        shard_size: int | None = None,
    ):
        self.staging, self.arch, self.prior = staging, arch, prior
        self.data = {"train": train} | ({"test": test} if test is not None else {})
        activations = max(data.n for data in self.data.values()) * arch.widest_activation()
        self.block = max(1, min(DEFAULT_CHUNK, PREDICTION_ACTIVATIONS // activations))
        self.pending = Blocks()
        self.networks = PopulationWriter(staging, arch, prior, shard_size)
        self.predictions = {
            name: NpyRows(staging / f"{name}_predictions.npy", data.n) for name, data in self.data.items()
        }
        self.table = (staging / "networks.csv").open("w", newline="")  # as pandas opens a path: no translation
        self.rows = 0
        self.test_errors: list[np.ndarray] = []

    def __enter__(self) -> SampleFiles:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.table.close()
        for rows in self.predictions.values():
            rows.close()

    def add(self, population: Population, **columns: np.ndarray) -> None:
        """Networks that follow those added before; ``columns``: a value per network for networks.csv."""
        self.pending.add(_Networks(population.to("cpu"), columns))
        while len(self.pending) >= self.block:
            self._write(self.pending.take(self.block))

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the last block, the population and ``summary`` (with the mean test error) as summary.json."""
        if len(self.pending) or not self.rows:  # no networks at all: the files still have their headers
            self._write(self.pending.take(self.block))
        self.networks.close()
        if "test" in self.data:
            summary["test_error_mean"] = (
                float(pd.Series(np.concatenate(self.test_errors)).mean()) if self.rows else None
            )
        write_json(self.staging / "summary.json", summary)

    def _write(self, parts: list[_Networks]) -> None:
        population = (
            Population.concat([part.population for part in parts]) if parts else Population.empty(self.arch, self.prior)
        )
        table = pd.DataFrame({"network": np.arange(self.rows, self.rows + len(population))})
        mistakes = {}
        for name, data in self.data.items():
            predictions = population.predict(data.x, chunk_size=self.block)
            mistakes[name] = (predictions != data.y.to(torch.int8)).sum(dim=1)
            self.predictions[name].add(predictions.numpy())
        table["train_error"] = (mistakes["train"].double() / self.data["train"].n).numpy()
        for name in parts[0].columns if parts else ():
            table[name] = np.concatenate([part.columns[name] for part in parts])
        if "test" in mistakes:
            table["test_error"] = (mistakes["test"].double() / self.data["test"].n).numpy()
            self.test_errors.append(table["test_error"].to_numpy())
        table.to_csv(self.table, index=False, header=self.rows == 0)
        self.networks.add(population)
        self.rows += len(population)


@dataclass(frozen=True)
class BoundOptions:
    """``typicalnets bound``'s options, in --help order."""

    student_widths: Annotated[
        str,
        typer.Option(help="student hidden widths (fcn, sfcn) or channels per conv layer (cnn, scnn), e.g. 16 or 16,16"),
    ]
    teacher_widths: Annotated[
        str | None,
        typer.Option(help="teacher widths, one per student layer, e.g. 2 or 2,2 (default: those of --teacher)"),
    ] = None
    arch: Annotated[str, typer.Option(help="fcn, sfcn, cnn or scnn (teacher and student)")] = "fcn"
    in_dim: Annotated[int | None, typer.Option(help="fcn/sfcn: input dimension")] = None
    in_shape: Annotated[str | None, typer.Option(help="cnn/scnn: input shape C,L or C,H,W")] = None
    kernel_size: KernelSize = "3"
    stride: Stride = "1"
    pool: Pool = "1"
    bias: Bias = True
    prior: Annotated[
        str, typer.Option(help="quantized:Q, quantized:L1,L2,..., or uniform:A / gaussian:S with --margin")
    ] = "quantized:3"
    zero_prob: Annotated[
        float | None,
        typer.Option(
            help="quantized: prior probability q0 of the level 0 (default 1/Q); the other levels share 1 - q0"
        ),
    ] = None
    margin: Annotated[
        float | None, typer.Option(help="uniform/gaussian: angular margin alpha in radians, in (0, pi/2]")
    ] = None
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="population.pt holding one teacher network: the bound "
            "uses its weights (the student copies its settings)"
        ),
    ] = None
    placements: Annotated[
        bool | None,
        typer.Option(
            "--placements/--no-placements",
            help="subtract the placement term: by default only where its condition is proven for --teacher; "
            "--placements without --teacher assumes a teacher that meets it",
        ),
    ] = None
    n: Annotated[int | None, typer.Option(help="training examples: also report epsilon = (C~ + ln(1/delta))/n")] = None
    delta: Annotated[float, typer.Option(help="failure probability delta")] = 0.05
    epsilon: Annotated[float | None, typer.Option(help="target error: also report the n_required for it")] = None
    plot: Annotated[Path | None, typer.Option(help="draw epsilon against n into this .png/.pdf/.svg")] = None
    json_output: Annotated[bool, typer.Option("--json", help="print exactly one JSON object instead of a table")] = (
        False
    )
    overwrite: Annotated[bool, typer.Option(help="replace an existing --plot file")] = False


@app.command("bound")
@_options_from(BoundOptions)
def bound(options: BoundOptions) -> None:
    """Upper bound on the effective complexity C~ = -ln p~ of a narrow teacher in a wider student.

    Prints C~ in nats and bits with its terms (derivations: typicalnets.theory), and with --n or
    --epsilon the error bound (C~ + ln(1/delta))/n or the sample size that reaches epsilon.
    """
    teacher_arch, student, teacher_net = _bound_models(options)
    prior = parse_prior(options.prior)
    result = c_tilde_for(
        teacher_arch, student, prior, teacher_net, options.zero_prob, options.placements, options.margin
    )
    report = bound_report(result, prior, options.delta, options.n, options.epsilon)
    if options.plot is not None:
        _check_plot(options.plot, options.overwrite)
        title = f"{teacher_arch.describe()} teacher in {student.describe()}, {prior.spec()}"
        _write_plot(options.plot, result.nats, options.delta, options.n, options.epsilon, title)
    report = {
        **_bound_inputs(options, teacher_arch, student),
        **report,
        "plot": str(options.plot) if options.plot else None,
    }
    if options.json_output:
        typer.echo(json.dumps(report, allow_nan=False))
        return
    Console(soft_wrap=True).print(_bound_table(result, report, teacher_arch, student, prior, options))


def _bound_models(options: BoundOptions) -> tuple[Architecture, Architecture, Population | None]:
    """(teacher architecture, student architecture, teacher network or None) from ``bound``'s options."""
    arch = options.arch
    if arch not in ("fcn", "sfcn", "cnn", "scnn"):
        raise TypicalnetsError(f"--arch {arch!r} has no C~ bound; use fcn, sfcn, cnn or scnn")
    convolutional = arch in ("cnn", "scnn")
    teacher_net = Population.load(options.teacher) if options.teacher else None
    if teacher_net is not None and (len(teacher_net) != 1 or (teacher_net.arch.family == "cnn") != convolutional):
        raise TypicalnetsError(
            f"--teacher {options.teacher} holds {len(teacher_net)} {teacher_net.arch.name} network(s); give one "
            f"network of the --arch {arch} family"
        )
    if convolutional and options.in_dim is not None:
        raise TypicalnetsError(f"--in-dim is for fcn/sfcn; give --arch {arch} inputs as --in-shape C,L or C,H,W")
    if not convolutional and options.in_shape is not None:
        raise TypicalnetsError(f"--in-shape is for cnn/scnn; give --arch {arch} inputs as --in-dim D")
    widths = _ints(options.student_widths, "--student-widths")
    if teacher_net is not None:
        return teacher_net.arch, _student_of_teacher(options, teacher_net.arch, widths), teacher_net
    return *_models_from_widths(options, widths), None


def _student_of_teacher(options: BoundOptions, teacher_arch: Architecture, widths: tuple[int, ...]) -> Architecture:
    """The student of ``widths`` that copies the --teacher network's settings, which the options may not contradict."""
    teacher_widths, in_dim, in_shape = options.teacher_widths, options.in_dim, options.in_shape
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
    return replace(teacher_arch.with_widths(widths), scaled=options.arch in ("sfcn", "scnn"))


def _models_from_widths(options: BoundOptions, widths: tuple[int, ...]) -> tuple[Architecture, Architecture]:
    """(teacher, student) architectures of --teacher-widths and ``widths`` with the options' inputs and layers."""
    arch, teacher_widths, in_dim, in_shape = options.arch, options.teacher_widths, options.in_dim, options.in_shape
    convolutional = arch in ("cnn", "scnn")
    if teacher_widths is None:
        raise TypicalnetsError("--teacher-widths is missing; give e.g. --teacher-widths 2, or --teacher FILE")
    if convolutional and in_shape is None:
        raise TypicalnetsError(f"--in-shape is missing; give --arch {arch} inputs as --in-shape C,L or C,H,W")
    if not convolutional and in_dim is None:
        raise TypicalnetsError(f"--in-dim is missing; give --arch {arch} the input size, e.g. --in-dim 4")
    input_shape = _ints(in_shape, "--in-shape") if convolutional else (in_dim,)
    layers = (
        _ints(options.kernel_size, "--kernel-size"),
        _ints(options.stride, "--stride"),
        _ints(options.pool, "--pool"),
    )
    student = build_arch(arch, input_shape, widths, "relu", options.bias, *layers)
    teacher = build_arch(arch, input_shape, _ints(teacher_widths, "--teacher-widths"), "relu", options.bias, *layers)
    return teacher, student


def _check_plot(plot: Path, overwrite: bool) -> None:
    if plot.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise TypicalnetsError(f"--plot {plot} needs a .png, .pdf or .svg name; rename it")
    if not plot.parent.is_dir():
        raise TypicalnetsError(f"the folder of --plot {plot} does not exist; create it or choose another path")
    if plot.exists() and not (overwrite and plot.is_file()):
        raise TypicalnetsError(f"--plot {plot} already exists; pass --overwrite to replace it or choose another path")


def _bound_inputs(options: BoundOptions, teacher_arch: Architecture, student: Architecture) -> dict[str, Any]:
    """The report's description of the teacher and student."""
    inputs: dict[str, Any] = {
        "arch": options.arch,
        "student_widths": list(student.widths),
        "teacher_widths": list(teacher_arch.widths),
        "bias": student.bias,
        "teacher": str(options.teacher) if options.teacher else None,
    }
    if options.arch in ("cnn", "scnn"):
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


def _bound_table(
    result: CTildeBound,
    report: dict[str, Any],
    teacher_arch: Architecture,
    student: Architecture,
    prior: Prior,
    options: BoundOptions,
) -> Table:
    """The human-readable report: C~ with its terms and counts, and the requested bounds."""
    n, delta, epsilon = options.n, options.delta, options.epsilon
    table = Table(
        title=f"C~ bound: {teacher_arch.describe()} teacher in {student.describe()} student, "
        f"prior {prior.spec()} ({result.variant})"
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
    if options.plot is not None:
        table.add_row("plot", str(options.plot))
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
