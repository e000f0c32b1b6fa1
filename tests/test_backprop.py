"""SGD's forward and backward (typicalnets.nets.backprop) against autograd through each family's own forward,
and the default recipe (the learning rate scaled to the init) on every family."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from typicalnets.data import Dataset
from typicalnets.nets import CNN, FCN, DiagonalLinear, LeNet, Population, backprop
from typicalnets.priors import QuantizedUniform, Uniform
from typicalnets.samplers.sgd import LOSSES, LR_STEP, init_scaled_lr, train_sgd
from typicalnets.teachers import make_task, narrow_teacher

FAMILIES = [
    FCN(5, (7,)),
    FCN(5, (7, 3), activation="tanh", scaled=True),
    FCN(5, (6,), activation="leaky-relu", bias=False),
    CNN((2, 9), (3, 4), kernel_size=(3, 2), stride=(2, 1), pool=(1, 2)),
    CNN((1, 9, 8), (3,), kernel_size=3, pool=2, scaled=True),
    # Strides and pools that leave rows and columns unread, so the input gradient must be padded.
    CNN((2, 11, 10), (3, 2), kernel_size=(3, 2), stride=(2, 1), pool=(2, 1), activation="tanh", bias=False),
    LeNet.with_width_factor(0.5, (1, 17, 18)),
    LeNet.with_width_factor(0.5, (1, 16, 16), head="scalar"),
    DiagonalLinear(6, depth=3),
]


def autograd_reference(arch, params, x, y):
    """f and the gradient of the mean logistic loss per network, by autograd through ``arch.forward``."""
    leaves = {name: p.clone().requires_grad_() for name, p in params.items()}
    f = arch.forward(leaves, x)
    grads = torch.autograd.grad(F.softplus(-f * y).mean(1).sum(), list(leaves.values()))
    return f.detach(), dict(zip(leaves, grads))


def backprop_gradients(arch, params, x, y):
    f, saved = backprop.forward(arch, params, x)
    outputs = f.detach().requires_grad_()
    (d_outputs,) = torch.autograd.grad(F.softplus(-outputs * y).mean(1).sum(), outputs)
    return f, backprop.backward(arch, params, saved, d_outputs)


def assert_matches_autograd(arch, x, generator, count=5):
    params = {k: v.double() for k, v in Population.draw(arch, Uniform(1.0), count, generator).params.items()}
    x = x.double()
    y = torch.randint(0, 2, (len(x),), generator=generator).double() * 2 - 1
    f_ref, ref = autograd_reference(arch, params, x, y)
    f, grads = backprop_gradients(arch, params, x, y)
    # float64: the two forwards differ only in summation order, ~1e-16 of the output's terms; 1e-10 of the
    # largest value leaves a millionfold margin and still catches any wrong term (order 1 of the scale).
    torch.testing.assert_close(f, f_ref, rtol=0, atol=1e-10 * float(f_ref.abs().max()))
    assert set(grads) == set(ref)
    for name, g in ref.items():
        torch.testing.assert_close(grads[name], g, rtol=0, atol=1e-10 * float(g.abs().max()) + 1e-300)


@pytest.mark.parametrize("arch", FAMILIES, ids=lambda a: a.describe())
def test_forward_and_gradients_match_autograd_through_the_family_forward(arch):
    generator = torch.Generator().manual_seed(0)
    assert_matches_autograd(arch, torch.randn(7, *arch.input_shape, generator=generator), generator)


def test_pooling_ties_route_the_gradient_as_autograd_does():
    # Constant image regions (a standardised background) make exact ties in every pooling window there;
    # torch's max_pool2d sends a tied window's gradient to its first maximum, and so must the backward.
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 16, 16, generator=generator)
    x[:, :, :9] = -0.4
    assert_matches_autograd(LeNet.with_width_factor(0.5, (1, 16, 16)), x, generator)


@given(
    dims=st.sampled_from([1, 2]),
    layers=st.lists(
        st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2)), min_size=1, max_size=2
    ),
    scaled=st.booleans(),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_cnn_matches_autograd(dims, layers, scaled, bias, seed):
    channels, kernels, strides, pools = (tuple(layer[i] for layer in layers) for i in range(4))
    size = 12
    arch = CNN((2,) + (size,) * dims, channels, kernels, strides, pools, "relu", bias, scaled)
    generator = torch.Generator().manual_seed(seed)
    assert_matches_autograd(arch, torch.randn(4, *arch.input_shape, generator=generator), generator, count=3)


@pytest.mark.parametrize("arch", FAMILIES, ids=lambda a: a.describe())
def test_float32_forward_agrees_with_the_family_forward(arch):
    generator = torch.Generator().manual_seed(2)
    population = Population.draw(arch, Uniform(1.0), 16, generator)
    x = torch.randn(9, *arch.input_shape, generator=generator)
    f, _ = backprop.forward(arch, population.params, x)
    # fp32 rounding of sums of at most a few hundred terms: ~1e-6 of the output scale; allow 1e-4 of it.
    reference = population.forward(x)
    torch.testing.assert_close(f, reference, rtol=0, atol=1e-4 * float(reference.abs().max()))


def test_init_scaled_lr_moves_the_median_network_by_lr_step():
    # Recompute the rule with autograd: the first full-batch step, lr * g, changes the most-moved parameter
    # tensor of the median (non-interpolating) network by LR_STEP times the RMS of the initial weights.
    arch, prior = FCN(6, (10, 5)), QuantizedUniform.evenly_spaced(3)
    generator = torch.Generator().manual_seed(3)
    train = Dataset(torch.randn(12, 6, generator=generator), torch.tensor([1, -1] * 6, dtype=torch.int8))
    lr = init_scaled_lr(arch, prior, train)
    probe = Population.draw(arch, prior, 32, torch.Generator().manual_seed(0))
    f, grads = autograd_reference(arch, probe.params, train.x, train.y.float())
    moved = torch.stack([(lr * g).flatten(1).pow(2).mean(1).sqrt() for g in grads.values()]).amax(0)
    moved = moved[~(f * train.y > 0).all(1)]
    scale = torch.cat([p.flatten() for p in probe.params.values()]).pow(2).mean().sqrt()
    assert math.isclose(float(moved.median()), LR_STEP * float(scale), rel_tol=1e-4)  # fp32 gradients
    assert init_scaled_lr(arch, prior, train) == lr  # its own seed: the same rate every time
    # The loss enters through dL/df; the hinge loss's is larger (1 rather than sigmoid(-m) <= 1), so its rate smaller.
    assert init_scaled_lr(arch, prior, train, loss="hinge") < lr and "hinge" in LOSSES


def images_task(n: int, generator: torch.Generator) -> Dataset:
    """16x16 images whose label says which half is brighter, with a constant background band."""
    x = torch.randn(n, 1, 16, 16, generator=generator)
    x[:, :, :3] = -0.5
    y = torch.where(x[:, 0, :, :8].mean((1, 2)) > x[:, 0, :, 8:].mean((1, 2)), 1, -1).to(torch.int8)
    return Dataset(x, y)


def test_defaults_interpolate_lenet_with_a_uniform_prior_where_lr_01_diverges():
    # The issue: LeNet with U[-1, 1] outputs ~1e3, and the old default rate 0.1 sent every weight to inf.
    train = images_task(16, torch.Generator().manual_seed(4))
    arch, prior = LeNet.with_width_factor(0.5, (1, 16, 16)), Uniform(1.0)
    old = train_sgd(arch, prior, train, 8, torch.Generator().manual_seed(5), lr=0.1, max_steps=30, progress=False)
    assert old.converged_count == 0
    result = train_sgd(arch, prior, train, 20, torch.Generator().manual_seed(5), progress=False)
    # With the scaled rate every network interpolated within 20 steps in development; 10,000 steps is the budget.
    assert result.stop_reason == "converged" and result.converged.all()
    assert (result.population.mistakes(train.x, train.y) == 0).all()


@pytest.mark.parametrize(
    "student",
    [FCN(4, (16,)), FCN(4, (16,), scaled=True), CNN((1, 4), (8,), kernel_size=2), CNN((1, 4), (8,), 2, scaled=True)],
    ids=lambda a: a.describe(),
)
def test_defaults_interpolate_teacher_labels(student):
    # The teacher is narrower than the student (a sub-network of it), so the student class interpolates
    # the labels; the defaults must find an interpolator for every start.
    gen = torch.Generator().manual_seed(6)
    teacher_arch = student.with_widths(tuple(max(1, w // 8) for w in student.widths))
    task = make_task(narrow_teacher(teacher_arch, QuantizedUniform.evenly_spaced(3), gen), 32, 10, gen)
    result = train_sgd(student, QuantizedUniform.evenly_spaced(3), task.train, 20, gen, progress=False)
    assert result.stop_reason == "converged" and result.converged.all()
