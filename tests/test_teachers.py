"""Teachers: balanced narrow teachers, tasks with label noise, exact embeddings, sparse teachers."""

from __future__ import annotations

import math

import pytest
import torch

from typicalnets.data import sample_inputs
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import CNN, FCN, DiagonalLinear, Population
from typicalnets.priors import Gaussian, QuantizedUniform, Uniform
from typicalnets.teachers import (
    PROBE_SIZE,
    check_narrower,
    embed,
    label_balance,
    make_task,
    narrow_teacher,
    sparse_linear_teacher,
)

Q3 = QuantizedUniform((-1.0, 0.0, 1.0))
Z = 5.0  # standard deviations allowed in the binomial checks (two-sided ~6e-7 for a correct sampler)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- narrow_teacher


@pytest.mark.parametrize(
    "arch, prior, kind",
    [
        (FCN(10, (3,)), Q3, "gaussian"),
        (FCN(8, (2, 2), activation="sign"), Q3, "boolean"),
        (FCN(6, (4,), scaled=True), Gaussian(), "uniform"),
        (CNN((1, 12), (2,), kernel_size=3), Q3, "boolean"),
    ],
    ids=["fcn-q3-gaussian", "fcn2-sign-boolean", "sfcn-gauss-uniform", "cnn-q3-boolean"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_narrow_teacher_is_balanced_on_fresh_inputs(arch, prior, kind, seed):
    max_majority, max_zero = 0.7, 0.3
    teacher = narrow_teacher(
        arch, prior, gen(seed), input_kind=kind, max_majority=max_majority, max_zero_fraction=max_zero
    )
    assert len(teacher) == 1 and teacher.arch == arch and teacher.prior == prior
    n = 20_000
    fresh = sample_inputs(kind, n, arch.input_shape, gen(1000 + seed))
    zero_fraction, majority = label_balance(teacher.forward(fresh)[0])
    # The constraint holds exactly on the 2000-point probe; on fresh points each fraction differs
    # from the probe's by sampling error only: sd <= sqrt(0.25/2000 + 0.25/20000) ~ 0.0117, so
    # 0.06 is > 5 sd (the majority fraction is over nonzero points, at least 1400 of the probe).
    assert majority <= max_majority + 0.06
    assert zero_fraction <= max_zero + 0.06
    assert 0.5 <= majority <= 1.0


def test_narrow_teacher_reproducible_and_errors():
    arch = FCN(5, (2,))
    a = narrow_teacher(arch, Q3, gen(3))
    b = narrow_teacher(arch, Q3, gen(3))
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    for bad in (0.4, 1.5, -1.0):
        with pytest.raises(TypicalnetsError):
            narrow_teacher(arch, Q3, gen(0), max_majority=bad)
    # an exactly balanced teacher on a 2000-point probe is (essentially) never drawn in 3 tries
    with pytest.raises(TypicalnetsError):
        narrow_teacher(arch, Q3, gen(0), max_majority=0.5, max_zero_fraction=0.0, max_tries=3)
    with pytest.raises(TypicalnetsError):
        narrow_teacher(arch, Q3, gen(0), input_kind="cauchy")


def test_label_balance():
    assert label_balance(torch.tensor([1.0, -2.0, 0.0, 3.0])) == (0.25, pytest.approx(2 / 3))
    assert label_balance(torch.zeros(4)) == (1.0, 1.0)
    assert label_balance(torch.tensor([-1.0, -1.0])) == (0.0, 1.0)


# --------------------------------------------------------------------------- check_narrower


def test_check_narrower_accepts_narrower_or_equal():
    check_narrower(FCN(5, (2, 3)), FCN(5, (4, 3)))
    check_narrower(FCN(5, (4, 3)), FCN(5, (4, 3)))
    check_narrower(CNN((1, 10), (1,)), CNN((1, 10), (3,)))


@pytest.mark.parametrize(
    "teacher, student",
    [
        (FCN(5, (5,)), FCN(5, (4,))),  # wider
        (FCN(5, (2, 5)), FCN(5, (4, 4))),  # wider in the second layer
        (FCN(5, (2,)), FCN(5, (4, 4))),  # shallower
        (FCN(5, (2, 2, 2)), FCN(5, (4, 4))),  # deeper
        (FCN(6, (2,)), FCN(5, (4,))),  # other input
        (CNN((1, 10), (4,)), CNN((1, 10), (2,))),  # wider CNN
        (CNN((1, 10), (1,)), CNN((2, 10), (2,))),  # other input channels
        (CNN((1, 10), (1,)), FCN(10, (2,))),  # other family
        (DiagonalLinear(4, 1), DiagonalLinear(4, 3)),  # other depth
    ],
)
def test_check_narrower_raises(teacher, student):
    with pytest.raises(TypicalnetsError):
        check_narrower(teacher, student)


# --------------------------------------------------------------------------- make_task


@pytest.mark.parametrize("kind", ["gaussian", "boolean", "uniform"])
def test_make_task_labels_follow_teacher(kind):
    arch = FCN(8, (3,), activation="sign")
    teacher = narrow_teacher(arch, Q3, gen(5), input_kind=kind)
    task = make_task(teacher, 300, 400, gen(6), input_kind=kind)
    assert task.teacher is teacher
    assert task.train.n == 300 and task.test.n == 400 and task.flipped.shape == (300,)
    assert task.train.y.dtype == torch.int8 and task.test.y.dtype == torch.int8
    for data in (task.train, task.test):
        f = teacher.forward(data.x)[0]
        assert (f != 0).all()  # points where the teacher outputs exactly 0 are excluded
        assert data.input_shape == arch.input_shape
    assert not task.flipped.any()
    assert torch.equal(task.train.y, torch.sign(teacher.forward(task.train.x)[0]).to(torch.int8))
    assert torch.equal(task.test.y, torch.sign(teacher.forward(task.test.x)[0]).to(torch.int8))
    if kind == "boolean":
        assert set(task.train.x.unique().tolist()) <= {-1.0, 1.0}


def test_make_task_excludes_zero_outputs_even_when_common():
    # Boolean inputs with a {-1,0,1} teacher whose readout often sums to 0.
    arch = FCN(4, (2,), activation="sign", bias=False)
    params = {"w1": torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]]), "w2": torch.tensor([[[1.0, 1.0]]])}
    teacher = Population(arch, Q3, params)
    cube = sample_inputs("boolean", 4000, (4,), gen(0))
    assert (teacher.forward(cube)[0] == 0).double().mean() > 0.3
    task = make_task(teacher, 500, 500, gen(1), input_kind="boolean")
    assert (teacher.forward(task.train.x)[0] != 0).all() and (teacher.forward(task.test.x)[0] != 0).all()


@pytest.mark.parametrize("rho", [0.1, 0.3])
def test_make_task_label_noise(rho):
    teacher = narrow_teacher(FCN(6, (3,)), Gaussian(), gen(7))
    n = 20_000
    task = make_task(teacher, n, 2000, gen(8), label_noise=rho)
    clean = torch.sign(teacher.forward(task.train.x)[0]).to(torch.int8)
    assert torch.equal(task.train.y[task.flipped], -clean[task.flipped])
    assert torch.equal(task.train.y[~task.flipped], clean[~task.flipped])
    # flips are Bernoulli(rho): the rate is within Z binomial sd of rho (sd = sqrt(rho(1-rho)/n) ~ 0.003)
    rate = task.flipped.double().mean().item()
    assert abs(rate - rho) < Z * math.sqrt(rho * (1 - rho) / n)
    # test labels stay clean
    assert torch.equal(task.test.y, torch.sign(teacher.forward(task.test.x)[0]).to(torch.int8))


def test_make_task_reproducible_and_errors():
    teacher = narrow_teacher(FCN(4, (2,)), Q3, gen(0))
    a = make_task(teacher, 20, 30, gen(2), label_noise=0.2)
    b = make_task(teacher, 20, 30, gen(2), label_noise=0.2)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.flipped, b.flipped)
    for kwargs in [dict(label_noise=0.5), dict(label_noise=-0.1), dict(label_noise=0.7)]:
        with pytest.raises(TypicalnetsError):
            make_task(teacher, 10, 10, gen(0), **kwargs)
    for n_train, n_test in [(0, 10), (10, 0), (-1, 5)]:
        with pytest.raises(TypicalnetsError):
            make_task(teacher, n_train, n_test, gen(0))
    zero = Population(teacher.arch, Q3, {k: torch.zeros_like(v) for k, v in teacher.params.items()})
    with pytest.raises(TypicalnetsError):
        make_task(zero, 5, 5, gen(0))


# --------------------------------------------------------------------------- embed

EMBED_CASES = [
    # (teacher, student)
    (FCN(6, (2,)), FCN(6, (5,))),
    (FCN(6, (2,), scaled=True), FCN(6, (5,), scaled=True)),
    (FCN(5, (2, 3), activation="sign"), FCN(5, (4, 6), activation="sign")),
    (FCN(5, (1, 2), bias=False, scaled=True), FCN(5, (3, 2), bias=False, scaled=True)),
    (FCN(5, (3, 1)), FCN(5, (3, 4))),  # only the second layer grows
    (FCN(5, (2, 1)), FCN(5, (3, 4), scaled=True)),  # a vanilla teacher inside a scaled student
    (CNN((1, 7), (1,), kernel_size=2), CNN((1, 7), (3,), kernel_size=2, scaled=True)),
    (CNN((2, 12), (2,), kernel_size=3), CNN((2, 12), (4,), kernel_size=3)),
    (
        CNN((1, 14), (1, 2), kernel_size=3, stride=(2, 1), pool=(1, 2), scaled=True),
        CNN((1, 14), (3, 3), kernel_size=3, stride=(2, 1), pool=(1, 2), scaled=True),
    ),
    (CNN((1, 6, 6), (1, 2), kernel_size=2, pool=(2, 1)), CNN((1, 6, 6), (2, 3), kernel_size=2, pool=(2, 1))),
    (
        CNN((2, 5, 5), (2,), kernel_size=3, activation="sign", bias=False, scaled=True),
        CNN((2, 5, 5), (4,), kernel_size=3, activation="sign", bias=False, scaled=True),
    ),
]
EMBED_IDS = [f"{t.name}{list(t.widths)}->{list(s.widths)}-{len(t.input_shape)}" for t, s in EMBED_CASES]


@pytest.mark.parametrize("use_generator", [False, True], ids=["zeros", "drawn"])
@pytest.mark.parametrize("teacher_arch, student_arch", EMBED_CASES, ids=EMBED_IDS)
def test_embed_exact_on_boolean_inputs(teacher_arch, student_arch, use_generator):
    # Integer weights on Boolean inputs with relu/sign: every value is a small integer, exact in
    # float32, so the student must reproduce the teacher bit for bit.
    teacher = Population.draw(teacher_arch, Q3, 6, gen(20))
    students = embed(teacher, student_arch, gen(21) if use_generator else None)
    assert len(students) == 6 and students.arch == student_arch and students.prior == Q3
    x = sample_inputs("boolean", 64, teacher_arch.input_shape, gen(22))
    assert torch.equal(students.forward(x), teacher.forward(x))
    # every teacher parameter sits, copied, in the student's leading block
    for name, value in teacher.params.items():
        if name.startswith("w") and int(name[1:]) == student_arch.depth:
            continue  # the readout is laid out over (units, positions); checked through outputs
        block = students.params[name][tuple(slice(0, s) for s in value.shape)]
        assert torch.equal(block, value), name


@pytest.mark.parametrize("teacher_arch, student_arch", EMBED_CASES, ids=EMBED_IDS)
def test_embed_gaussian_prior_gaussian_inputs(teacher_arch, student_arch):
    # Real-valued weights: the student adds the teacher's terms plus exact zeros, possibly in
    # another order, so agreement is up to float32 rounding (same argument as in test_nets).
    teacher = Population.draw(teacher_arch, Gaussian(), 4, gen(30))
    students = embed(teacher, student_arch, gen(31))
    x = sample_inputs("gaussian", 50, teacher_arch.input_shape, gen(32))
    f_teacher, f_student = teacher.forward(x), students.forward(x)
    if getattr(teacher_arch, "activation", "") == "sign":
        # sign could in principle flip on a rounding-level preactivation; require almost all equal
        assert (f_teacher - f_student).abs().le(1e-4).double().mean() >= 0.99
    else:
        torch.testing.assert_close(f_student, f_teacher, atol=1e-5, rtol=1e-5)
    t64, s64 = teacher.to(dtype=torch.float64), embed(teacher.to(dtype=torch.float64), student_arch, gen(31))
    torch.testing.assert_close(s64.forward(x), t64.forward(x), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("teacher_arch, student_arch", EMBED_CASES, ids=EMBED_IDS)
def test_embed_free_parameters_vary_with_generator(teacher_arch, student_arch):
    teacher = Population.draw(teacher_arch, Uniform(1.0), 2, gen(40))
    g = gen(41)
    a, b = embed(teacher, student_arch, g), embed(teacher, student_arch, g)
    differing = [name for name in a.params if not torch.equal(a.params[name], b.params[name])]
    assert differing  # the free parameters were re-drawn
    x = sample_inputs("gaussian", 20, teacher_arch.input_shape, gen(42))
    torch.testing.assert_close(a.forward(x), b.forward(x), atol=1e-5, rtol=1e-5)
    # the free parameters are draws from the prior (U[-1, 1], almost surely nonzero); without a
    # generator they are all zero
    zeros = embed(teacher, student_arch)
    free = a.params["w1"][:, teacher_arch.widths[0] :]
    assert free.numel() == 0 or (free.abs() <= 1.0).all() and (free != 0).all()
    assert zeros.params["w1"][:, teacher_arch.widths[0] :].eq(0).all()
    # same generator seed -> same students
    c = embed(teacher, student_arch, gen(41))
    assert all(torch.equal(a.params[k], c.params[k]) for k in a.params)


def test_embed_silences_extras_in_vanilla_and_scaled():
    t, s = FCN(4, (1, 1)), FCN(4, (3, 2))
    teacher = Population.draw(t, Q3, 1, gen(0))
    st = embed(teacher, s, gen(1))
    assert st.params["w2"][:, :1, 1:].eq(0).all()  # extras of layer 1 do not feed teacher neuron
    assert st.params["w3"][:, :, 1:].eq(0).all()  # extras of layer 2 do not feed the readout
    ts, ss = FCN(4, (1, 1), scaled=True), FCN(4, (3, 2), scaled=True)
    teacher_s = Population.draw(ts, Gaussian(), 1, gen(0))
    st_s = embed(teacher_s, ss, gen(1))
    assert st_s.params["s1"][:, 1:].eq(0).all() and st_s.params["s2"][:, 1:].eq(0).all()


@pytest.mark.parametrize(
    "teacher_arch, student_arch",
    [
        (FCN(4, (2,), activation="relu"), FCN(4, (3,), activation="tanh")),  # activation differs
        (FCN(4, (2,), bias=True), FCN(4, (3,), bias=False)),
        (FCN(4, (2,), scaled=True), FCN(4, (3,), scaled=False)),  # a scaled teacher in a vanilla student
        (CNN((1, 9), (1,), kernel_size=3), CNN((1, 9), (2,), kernel_size=2)),  # kernels differ
        (FCN(4, (3,)), FCN(4, (2,))),  # teacher wider
        (FCN(4, (2,)), FCN(4, (2, 2))),  # depth differs
        (DiagonalLinear(4, 2), DiagonalLinear(4, 2)),  # not an FCN/CNN student
    ],
)
def test_embed_errors(teacher_arch, student_arch):
    teacher = Population.draw(teacher_arch, Q3, 1, gen(0))
    with pytest.raises(TypicalnetsError):
        embed(teacher, student_arch)


# --------------------------------------------------------------------------- sparse teacher


@pytest.mark.parametrize("d, k", [(10, 1), (10, 3), (10, 10), (50, 7)])
def test_sparse_linear_teacher(d, k):
    for seed in range(3):
        teacher = sparse_linear_teacher(d, k, gen(seed))
        w = teacher.params["w1"]
        assert w.shape == (1, d) and len(teacher) == 1
        assert int((w != 0).sum()) == k
        assert set(w[w != 0].tolist()) <= {-1.0, 1.0}
        assert teacher.arch == DiagonalLinear(d, 1)
        x = torch.randn(5, d, generator=gen(seed + 100))
        torch.testing.assert_close(teacher.forward(x)[0], x @ w[0])
    a, b = sparse_linear_teacher(d, k, gen(0)), sparse_linear_teacher(d, k, gen(0))
    assert torch.equal(a.params["w1"], b.params["w1"])


def test_sparse_linear_teacher_supports_vary():
    supports = {
        tuple(torch.nonzero(sparse_linear_teacher(20, 3, gen(s)).params["w1"][0]).flatten().tolist()) for s in range(10)
    }
    assert len(supports) > 1


@pytest.mark.parametrize("d, k", [(10, 0), (10, 11), (5, -1)])
def test_sparse_linear_teacher_errors(d, k):
    with pytest.raises(TypicalnetsError):
        sparse_linear_teacher(d, k, gen(0))


def test_probe_size_is_positive():
    assert PROBE_SIZE >= 1000
