"""The SGD baseline: populations trained in one batch, frozen at zero training error, reproducible."""

from __future__ import annotations

import pytest
import torch

from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import CNN, FCN, DiagonalLinear
from typicalnets.priors import Gaussian, QuantizedUniform, Uniform
from typicalnets.samplers import SampleResult, sample
from typicalnets.samplers.sgd import SGDState, SGDTrainer, standard_init, train_sgd
from typicalnets.teachers import make_task, narrow_teacher, sparse_linear_teacher

Q3 = QuantizedUniform.evenly_spaced(3)
STUDENT = FCN(8, (16,))


def teacher_task(student, n_train: int = 32, seed: int = 0):
    """A task labelled by a teacher narrower than ``student``, so the student class can interpolate it."""
    gen = torch.Generator().manual_seed(seed)
    narrow = tuple(max(1, w // 8) for w in student.widths)
    return make_task(narrow_teacher(student.with_widths(narrow), Q3, gen), n_train, 200, gen)


@pytest.fixture(scope="module")
def task():
    return teacher_task(STUDENT)


def assert_interpolators(result, train: Dataset) -> None:
    mistakes = result.population.mistakes(train.x, train.y)
    assert (mistakes[result.converged] == 0).all()
    assert (mistakes[~result.converged] > 0).all()


@pytest.mark.parametrize("loss", ["logistic", "hinge"])
def test_both_losses_reach_zero_training_error(task, loss):
    result = train_sgd(
        STUDENT,
        Uniform(1.0),
        task.train,
        24,
        torch.Generator().manual_seed(1),
        loss=loss,
        max_steps=3000,
        progress=False,
    )
    # Tolerance: the labels come from a narrower teacher that the student contains, so the data is
    # separable by the student class; with lr 0.1 every network got there in < 300 steps during
    # development, so a 3000-step budget leaves 10x slack and we require all of them to converge.
    assert result.stop_reason == "converged" and result.converged.all()
    assert_interpolators(result, task.train)
    assert result.message() == f"24/24 networks reached zero training error in {result.step_count} steps"
    assert result.step_count == int(result.steps.max())
    assert result.population.prior == Uniform(1.0)
    assert all(not p.requires_grad for p in result.population.params.values())


def test_frozen_networks_never_change_and_steps_count_updates(task):
    trainer = SGDTrainer(STUDENT, Gaussian(1.0), task.train, 16, lr=0.3, batch_size=8, momentum=0.5)
    rng = torch.Generator().manual_seed(2)
    state = trainer.init(rng)
    while not state.converged.all():
        new_state, info = trainer.step(rng, state)
        frozen = state.converged
        for name, p in state.population.params.items():
            assert torch.equal(new_state.population.params[name][frozen], p[frozen])
            assert not torch.equal(new_state.population.params[name][~frozen], p[~frozen])
        assert torch.equal(new_state.steps, state.steps + (~frozen).long())
        assert info.updated == int((~frozen).sum()) and info.converged == int(new_state.converged.sum())
        state = new_state
    assert (state.accepted.mistakes(task.train.x, task.train.y) == 0).all()
    assert len(state.accepted) == state.draws == 16


def test_same_seed_is_bit_identical(task):
    def run():
        return train_sgd(
            STUDENT,
            Q3,
            task.train,
            12,
            torch.Generator().manual_seed(3),
            batch_size=10,
            momentum=0.9,
            lr=0.05,
            progress=False,
        )

    first, second = run(), run()
    assert torch.equal(first.steps, second.steps) and torch.equal(first.converged, second.converged)
    for name, p in first.population.params.items():
        assert torch.equal(p, second.population.params[name])


def test_minibatch_training_interpolates(task):
    result = train_sgd(
        STUDENT,
        Uniform(1.0),
        task.train,
        16,
        torch.Generator().manual_seed(4),
        batch_size=5,
        momentum=0.9,
        lr=0.02,
        max_steps=5000,
        progress=False,
    )
    assert result.stop_reason == "converged"
    assert_interpolators(result, task.train)


def test_each_network_trains_as_if_alone(task):
    trainer = SGDTrainer(STUDENT, Uniform(1.0), task.train, 6)
    together = trainer.init(torch.Generator().manual_seed(5))
    assert not together.converged.any()  # so the kept forward's rows are every network's
    alone = SGDState(
        together.population[:1],
        {k: v[:1] for k, v in together.velocity.items()},
        together.converged[:1],
        together.steps[:1],
        0,
        together.order,
        together.outputs[:1],
        together.saved.rows(slice(0, 1)),
    )
    rng = torch.Generator()
    for _ in range(20):
        together, _ = trainer.step(rng, together)
        alone, _ = trainer.step(rng, alone)
    for name, p in alone.population.params.items():
        torch.testing.assert_close(together.population.params[name][:1], p)


@pytest.mark.parametrize("arch", [FCN(8, (16, 8), scaled=True), CNN((2, 6), (3,), kernel_size=3), FCN(8, (16,))])
def test_standard_init_bounds(arch):
    params = standard_init(arch, 500, torch.Generator().manual_seed(6))
    for name, p in params.items():
        if name.startswith("s"):
            assert (p == 1.0).all()
        else:
            bound = arch.fan_in(name) ** -0.5
            assert p.abs().max() <= bound and p.abs().max() > 0.95 * bound
    trainer = SGDTrainer(
        arch, Q3, Dataset(torch.randn(4, *arch.input_shape), torch.tensor([1, -1, 1, -1])), 500, init="standard"
    )
    drawn = trainer.init(torch.Generator().manual_seed(6)).population
    assert all(torch.equal(drawn.params[name], p) for name, p in params.items())
    assert drawn.prior == Q3


def test_networks_interpolating_at_init_take_no_steps():
    train = Dataset(torch.ones(1, 8), torch.tensor([1], dtype=torch.int8))
    trainer = SGDTrainer(STUDENT, Uniform(1.0), train, 20)
    start = trainer.init(torch.Generator().manual_seed(7))
    result = train_sgd(STUDENT, Uniform(1.0), train, 20, torch.Generator().manual_seed(7), progress=False)
    already = start.converged
    assert already.any() and (result.steps[already] == 0).all() and (result.steps[~already] > 0).all()
    for name, p in start.population.params.items():
        assert torch.equal(result.population.params[name][already], p[already])


def test_step_budget_exhaustion(task):
    result = train_sgd(
        STUDENT, Uniform(1.0), task.train, 10, torch.Generator().manual_seed(8), lr=1e-3, max_steps=5, progress=True
    )
    assert result.stop_reason == "max_steps" and result.step_count == 5
    assert result.converged_count < result.count
    assert (result.steps[~result.converged] == 5).all()
    assert_interpolators(result, task.train)
    message = result.message()
    assert message.endswith(f"; {result.count - result.converged_count} stopped by the step budget")
    assert message.startswith(f"{result.converged_count}/10 networks") and "\n" not in message


def test_the_driver_runs_sgd_under_a_time_limit():
    # The same input with both labels: no network can interpolate, so only a budget ends training.
    contradictory = Dataset(torch.ones(2, 8), torch.tensor([1, -1], dtype=torch.int8))
    trainer = SGDTrainer(STUDENT, Uniform(1.0), contradictory, 6, max_steps=10**9)
    result = sample(trainer, torch.Generator().manual_seed(11), trainer.count, time_limit=0.2, progress=False)
    assert isinstance(result, SampleResult) and result.sampler == "sgd" and result.requested == 6
    assert result.stop_reason == "time_limit" and result.seconds >= 0.2 and 0 < result.step_count < 10**9
    assert result.converged_count == 0 and (result.steps == result.step_count).all()
    assert len(result.history) == result.step_count and result.history[-1].updated == 6
    assert_interpolators(result, contradictory)
    assert result.message() == (
        f"0/6 networks reached zero training error in {result.step_count} steps; 6 stopped by the time limit"
    )


def test_sgd_says_when_its_run_is_over(task):
    trainer = SGDTrainer(STUDENT, Uniform(1.0), task.train, 4, lr=1e-3, epochs=2, batch_size=12)
    assert trainer.max_steps == 6  # 2 passes of 3 mini-batches (12, 12, 8)
    rng = torch.Generator().manual_seed(12)
    state = trainer.init(rng)
    for _ in range(6):
        assert trainer.stopped(state, 4) is None
        state, _ = trainer.step(rng, state)
    assert trainer.stopped(state, 4) == "max_steps"
    assert trainer.stopped(state._replace(converged=torch.ones(4, dtype=torch.bool)), 4) == "converged"
    assert trainer.progress(state, 4) == (int(state.converged.sum()), 4, "converged, step 6")


@pytest.mark.parametrize(
    "student",
    [
        CNN((1, 12), (8,), kernel_size=3, pool=2),
        CNN((1, 6, 6), (8,), kernel_size=3),
        FCN(8, (16,), activation="tanh", scaled=True),
    ],
)
def test_other_architectures(student):
    task = teacher_task(student, n_train=24)
    result = train_sgd(
        student,
        Uniform(1.0),
        task.train,
        8,
        torch.Generator().manual_seed(9),
        init="standard",
        max_steps=3000,
        progress=False,
    )
    assert result.stop_reason == "converged"
    assert_interpolators(result, task.train)


def test_diagonal_network_learns_sparse_teacher():
    gen = torch.Generator().manual_seed(10)
    task = make_task(sparse_linear_teacher(8, 2, gen), 24, 100, gen)
    result = train_sgd(DiagonalLinear(8, depth=2), Uniform(1.0), task.train, 8, gen, max_steps=3000, progress=False)
    assert result.stop_reason == "converged"
    assert_interpolators(result, task.train)


ONE = Dataset(torch.ones(1, 8), torch.tensor([1], dtype=torch.int8))


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        (FCN(8, (4,), activation="sign"), {}),
        (STUDENT, {"count": 0}),
        (STUDENT, {"lr": 0.0}),
        (STUDENT, {"max_steps": 0}),
        (STUDENT, {"batch_size": 0}),
        (STUDENT, {"momentum": 1.0}),
        (STUDENT, {"loss": "mse"}),
        (STUDENT, {"init": "xavier"}),
    ],
)
def test_bad_settings_are_refused_in_one_line(arch, kwargs):
    kwargs = {"count": 2, **kwargs}
    with pytest.raises(TypicalnetsError) as error:
        train_sgd(arch, Q3, ONE, rng=torch.Generator(), progress=False, **kwargs)
    assert "\n" not in str(error.value) and "; " in str(error.value)


def test_sign_activation_error_names_the_fix():
    with pytest.raises(TypicalnetsError, match="use relu, leaky-relu or tanh"):
        SGDTrainer(FCN(8, (4,), activation="sign"), Q3, ONE, 2)
