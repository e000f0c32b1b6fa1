"""Narrow teachers, sparse linear teachers, teacher-student tasks, label noise, and embedding.

A teacher is a ``Population`` of size 1. Its labels are y = sign(f*(x)); inputs where f*(x) = 0
exactly are excluded from the input distribution (they can arise with quantized weights on the
Boolean cube), so the teacher itself, and every student that equals it, interpolates every
noiseless sample, as the theory (P(L_S = 0) >= p~) assumes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from typicalnets.data import Dataset, sample_inputs
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import CNN, FCN, Architecture, DiagonalLinear, Population
from typicalnets.priors import Prior, QuantizedUniform

PROBE_SIZE = 2000


def check_narrower(teacher: Architecture, student: Architecture) -> None:
    """The teacher must be the student's family and input, with no layer wider than the student's."""
    same_shape = type(teacher) is type(student) and teacher.input_shape == student.input_shape
    if not same_shape or len(teacher.widths) != len(student.widths):
        raise TypicalnetsError(
            f"teacher {teacher.describe()} and student {student.describe()} must share family, input and depth; "
            "give teacher widths with one entry per student layer"
        )
    if any(t > s for t, s in zip(teacher.widths, student.widths)):
        raise TypicalnetsError(
            f"teacher widths {list(teacher.widths)} exceed student widths {list(student.widths)}; "
            "use a narrower teacher or a wider student"
        )


def label_balance(f: torch.Tensor) -> tuple[float, float]:
    """(fraction of f == 0, majority-label fraction among the rest) for teacher outputs f."""
    nonzero = f[f != 0]
    zero_fraction = 1.0 - nonzero.numel() / max(f.numel(), 1)
    if nonzero.numel() == 0:
        return zero_fraction, 1.0
    positive = (nonzero > 0).double().mean().item()
    return zero_fraction, max(positive, 1.0 - positive)


def narrow_teacher(
    arch: Architecture,
    prior: Prior,
    generator: torch.Generator,
    input_kind: str = "gaussian",
    max_majority: float = 0.75,
    max_zero_fraction: float = 0.5,
    max_tries: int = 10_000,
) -> Population:
    """Draw a teacher of architecture ``arch`` from ``prior`` until its labels are balanced enough.

    Redraws until, on a probe sample of ``PROBE_SIZE`` inputs, the majority label covers at most
    ``max_majority`` of the points and f* = 0 on at most ``max_zero_fraction`` of them.
    """
    if not 0.5 <= max_majority <= 1.0:
        raise TypicalnetsError(f"max_majority must lie in [0.5, 1], got {max_majority}; give e.g. 0.75")
    probe = sample_inputs(input_kind, PROBE_SIZE, arch.input_shape, generator)
    for _ in range(max_tries):
        teacher = Population.draw(arch, prior, 1, generator)
        zero_fraction, majority = label_balance(teacher.forward(probe)[0])
        if zero_fraction <= max_zero_fraction and majority <= max_majority:
            return teacher
    raise TypicalnetsError(
        f"no {arch.describe()} teacher with majority label <= {max_majority:.2f} in {max_tries} draws; "
        "raise --max-majority or change the teacher"
    )


def sparse_linear_teacher(in_dim: int, k: int, generator: torch.Generator) -> Population:
    """A linear teacher f*(x) = <w*, x> with k nonzero entries of random sign (a depth-1 diagonal net)."""
    if not 1 <= k <= in_dim:
        raise TypicalnetsError(f"a sparse teacher needs 1 <= k <= d = {in_dim}, got k = {k}; choose k in that range")
    w = torch.zeros(1, in_dim)
    support = torch.randperm(in_dim, generator=generator)[:k]
    w[0, support] = 2.0 * torch.randint(0, 2, (k,), generator=generator).float() - 1.0
    return Population(DiagonalLinear(in_dim, 1), QuantizedUniform((-1.0, 0.0, 1.0)), {"w1": w})


@dataclass(frozen=True)
class Task:
    """A task: train and test data, the teacher that labelled them (None for a real data set) and,
    for data sets, their description. ``flipped`` marks the training labels that label noise flipped."""

    teacher: Population | None
    train: Dataset
    test: Dataset
    flipped: torch.Tensor
    info: dict | None = None


def _labelled_inputs(teacher: Population, kind: str, n: int, generator: torch.Generator) -> Dataset:
    xs, ys, have = [], [], 0
    for _ in range(1000):
        x = sample_inputs(kind, max(2 * (n - have), 64), teacher.arch.input_shape, generator)
        f = teacher.forward(x)[0]
        keep = f != 0
        xs.append(x[keep])
        ys.append(torch.sign(f[keep]).to(torch.int8))
        have += int(keep.sum())
        if have >= n:
            return Dataset(torch.cat(xs)[:n], torch.cat(ys)[:n])
    raise TypicalnetsError("the teacher outputs 0 on almost every input; draw another teacher")


def make_task(
    teacher: Population,
    n_train: int,
    n_test: int,
    generator: torch.Generator,
    input_kind: str = "gaussian",
    label_noise: float = 0.0,
) -> Task:
    """Draw i.i.d. train and test sets labelled by ``teacher``; flip each train label w.p. ``label_noise``.

    Test labels stay clean: test error measures disagreement with the teacher.
    """
    if not 0.0 <= label_noise < 0.5:
        raise TypicalnetsError(f"label noise must lie in [0, 0.5), got {label_noise}; give e.g. 0.1")
    if n_train < 1 or n_test < 1:
        raise TypicalnetsError(
            f"need n_train >= 1 and n_test >= 1, got {n_train} and {n_test}; ask for at least one of each"
        )
    train = _labelled_inputs(teacher, input_kind, n_train, generator)
    test = _labelled_inputs(teacher, input_kind, n_test, generator)
    flipped = torch.rand(n_train, generator=generator) < label_noise
    noisy = torch.where(flipped, -train.y, train.y).to(torch.int8)
    return Task(teacher, Dataset(train.x, noisy), test, flipped)


def embed(teacher: Population, student: Architecture, generator: torch.Generator | None = None) -> Population:
    """Students that compute exactly the teacher's function (one per teacher network).

    Teacher neuron (channel) j of layer l sits at student neuron j. Every parameter the teacher
    constrains is copied (a vanilla teacher inside a scaled student gets scale 1); the extras are
    silenced by zeroing their outgoing weights (vanilla) or their scales (scaled). All other
    parameters are free: drawn from the prior with ``generator``, or 0 when no generator is given.
    """
    t_arch = teacher.arch
    check_narrower(t_arch, student)
    if not isinstance(student, (FCN, CNN)):
        raise TypicalnetsError(
            f"embedding is defined for FCN and CNN students, not {student.family}; use an fcn or cnn student"
        )
    if t_arch.scaled and not student.scaled:
        raise TypicalnetsError("a scaled teacher needs a scaled student; use --arch sfcn/scnn for the student")
    if replace(t_arch.with_widths(student.widths), scaled=student.scaled) != student:
        raise TypicalnetsError(
            "teacher and student differ in more than their widths (activation, bias, kernels...); give both the same "
            "settings"
        )
    m = len(teacher)
    if generator is None:
        params = {k: torch.zeros(m, *s, dtype=teacher.dtype) for k, s in student.param_shapes().items()}
    else:
        params = Population.draw(student, teacher.prior, m, generator, dtype=teacher.dtype).params
    params = {k: v.to(teacher.device) for k, v in params.items()}
    t_widths, s_widths = (t_arch.input_shape[0], *t_arch.widths), (student.input_shape[0], *student.widths)
    for layer in range(1, student.depth + 1):
        t_params = teacher.params
        if layer < student.depth:
            t_out, t_in = t_widths[layer], t_widths[layer - 1]
            params[f"w{layer}"][:, :t_out, :t_in] = t_params[f"w{layer}"]
            if not student.scaled:
                params[f"w{layer}"][:, :t_out, t_in:] = 0  # extras below cannot reach teacher neurons
            if f"b{layer}" in t_params:
                params[f"b{layer}"][:, :t_out] = t_params[f"b{layer}"]
            if student.scaled:
                # A vanilla teacher's neurons have scale 1; a zero scale silences an extra neuron entirely.
                params[f"s{layer}"][:, :t_out] = t_params[f"s{layer}"] if t_arch.scaled else 1
                params[f"s{layer}"][:, t_out:] = 0
        else:
            t_in, s_in = t_widths[-1], s_widths[-1]
            readout = params[f"w{layer}"].view(m, s_in, -1)  # channel-major: (M, units, positions)
            readout[:, :t_in] = t_params[f"w{layer}"].view(m, t_in, -1)
            if not student.scaled:
                readout[:, t_in:] = 0
            if f"b{layer}" in t_params:
                params[f"b{layer}"][:] = t_params[f"b{layer}"]
    return Population(student, teacher.prior, params)
