"""The fast Guess & Check engines decide exactly what the straightforward method decides."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from typicalnets import native
from typicalnets.certificate import certified_interpolates
from typicalnets.data import Dataset, class_interleaved_order
from typicalnets.engines import CudaEngine, NativeEngine, TorchEngine
from typicalnets.engines.drawing import can_mirror, draw_batch
from typicalnets.native import cuda as cuda_kernel
from typicalnets.nets import CNN, FCN, DiagonalLinear, LeNet, Population
from typicalnets.priors import Gaussian, QuantizedUniform, Uniform, quantized_codes
from typicalnets.samplers import sample
from typicalnets.samplers.gc import GuessAndCheck, normalized_cross_entropy

Q3, Q5 = QuantizedUniform.evenly_spaced(3), QuantizedUniform.evenly_spaced(5)
KERNEL = native.load()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="no C compiler: the native kernel cannot be built")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

ARCHS = [
    FCN(5, (6,)),
    FCN(5, (6, 4), scaled=True, activation="tanh"),
    FCN(5, (4,), activation="sign", bias=False),
    FCN(5, (5,), activation="leaky-relu", scaled=True),
    CNN((2, 9), (3, 2), kernel_size=(3, 2), stride=(1, 2), pool=(2, 1)),
    CNN((1, 8, 8), (2, 3), kernel_size=3, pool=(2, 1), scaled=True),
    CNN((1, 7, 7), (2,), kernel_size=2, stride=2),
    LeNet.with_width_factor(0.25),
    LeNet.with_width_factor(0.25, (1, 20, 18), head="scalar"),
    LeNet.with_width_factor(0.5, (3, 32, 32)),
    DiagonalLinear(5, 3),
]
PRIORS = [Q3, Q5, Uniform(1.0), Gaussian(1.0)]


def baseline_accepts(population: Population, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The straightforward method: fp32 forward on all examples, accepted networks re-checked in float64."""
    keep = population.mistakes(x, y) == 0
    candidates = keep.nonzero().flatten()
    keep[candidates[~certified_interpolates(population[candidates], x, y)]] = False
    return keep


def task(arch, n: int, seed: int) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *arch.input_shape, generator=gen)
    y = (2 * torch.randint(0, 2, (n,), generator=gen) - 1).to(torch.int8)
    return Dataset(x, y)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    arch=st.sampled_from(ARCHS),
    prior=st.sampled_from(PRIORS),
    n=st.integers(1, 6),
    seed=st.integers(0, 10**6),
    grouped=st.booleans(),
    mirror=st.booleans(),
)
def test_torch_engine_accepts_exactly_the_baseline_set(arch, prior, n, seed, grouped, mirror):
    data = task(arch, n, seed)
    mirror = mirror and can_mirror(arch, prior)
    population = draw_batch(
        arch, prior, 3000 if not isinstance(arch, LeNet) else 400, torch.Generator().manual_seed(seed), mirror=mirror
    )
    accepted, stats = TorchEngine(arch, prior, data, grouped=grouped).check(population, mirrored=mirror)
    assert torch.equal(accepted, baseline_accepts(population, data.x, data.y))
    assert stats.network_examples <= len(population) * n
    if mirror:
        assert not accepted.view(-1, 2).all(dim=1).any()  # at most one of a mirrored pair


@needs_kernel
@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    arch=st.sampled_from([a for a in ARCHS if NativeEngine.supports(a, Q3)]),
    prior=st.sampled_from([Q3, Q5, Uniform(1.0), Uniform(0.5)]),
    n=st.integers(1, 6),
    seed=st.integers(0, 10**6),
)
def test_native_engine_accepts_exactly_the_baseline_set(arch, prior, n, seed):
    data = task(arch, n, seed)
    engine = NativeEngine(KERNEL, arch, prior, data)
    count = 2000 if not isinstance(arch, LeNet) else 300
    status, evaluated = engine.check(seed, count)
    population = engine.draw(seed, range(count))  # the very networks the kernel judged
    candidates = torch.from_numpy(status != 0)
    native_accepts = torch.zeros(count, dtype=torch.bool)
    native_accepts[candidates] = certified_interpolates(population[candidates], data.x, data.y)
    assert torch.equal(native_accepts, baseline_accepts(population, data.x, data.y))
    assert count // engine.draws_per_trial <= evaluated <= count * n


@needs_kernel
def test_native_draws_follow_the_prior():
    arch = FCN(50, (40,))
    engine = NativeEngine(KERNEL, arch, Q5, task(arch, 2, 0))
    values = engine.draw(7, range(200)).params["w1"].flatten().numpy()  # 400,000 draws
    counts = np.array([(values == level).sum() for level in Q5.levels])
    assert counts.sum() == values.size
    # Tolerance: chi-square against uniform over the 5 levels at the 1% level (fixed key).
    assert chisquare(counts).pvalue > 0.01
    uniform = NativeEngine(KERNEL, arch, Uniform(2.0), task(arch, 2, 0)).draw(7, range(200)).params["w1"].flatten()
    assert uniform.min() >= -2.0 and uniform.max() < 2.0
    # Tolerance: mean 0 and variance a^2 / 3 within 5 standard errors of 400,000 draws.
    se = math.sqrt(4 / 3 / uniform.numel())
    assert abs(float(uniform.mean())) < 5 * se
    assert abs(float(uniform.var()) - 4 / 3) < 5 * math.sqrt(
        float(((uniform**2 - 4 / 3) ** 2).mean()) / uniform.numel()
    )
    fresh = NativeEngine(KERNEL, arch, Uniform(2.0), task(arch, 2, 1))
    pair, alone = fresh.draw(7, [3, 4]).params["w1"], fresh.draw(7, [3]).params["w1"]
    assert torch.equal(pair[0], alone[0])  # network (key, id) is the same whatever else is drawn
    assert not torch.equal(pair[0], pair[1])


MIRRORED = [
    (LeNet.with_width_factor(0.25), Uniform(1.0)),
    (LeNet.with_width_factor(0.25, (1, 20, 18), head="scalar"), Q5),
    (FCN(5, (6,)), Uniform(0.5)),
    (FCN(5, (5,), scaled=True, activation="tanh"), Q3),
    (FCN(5, (4,), activation="sign", bias=False), Uniform(1.0)),
]


@needs_kernel
@pytest.mark.parametrize(("arch", "prior"), MIRRORED)
def test_mirrored_pairs_negate_the_output_and_never_both_interpolate(arch, prior):
    data = task(arch, 3, 0)
    engine = NativeEngine(KERNEL, arch, prior, data)
    assert engine.mirror and engine.draws_per_trial == 2
    count = 400 if isinstance(arch, LeNet) else 4000
    population = engine.draw(5, range(count))
    base, mirror = population[torch.arange(0, count, 2)], population[torch.arange(1, count, 2)]
    head = ("w5", "b5") if isinstance(arch, LeNet) else (f"w{arch.depth}", f"b{arch.depth}")
    swapped = isinstance(arch, LeNet) and arch.outputs == 2
    for name in population.params:
        ours, theirs = base.params[name], mirror.params[name]
        if name not in head:
            assert torch.equal(ours, theirs)
        elif swapped:
            assert torch.equal(ours, theirs.flip(1))  # the two logits swapped
        else:
            assert torch.equal(ours, -theirs)
    # The mirror's output is exactly -f: IEEE rounding is symmetric, and the summation order is the same.
    assert torch.equal(mirror.forward(data.x), -base.forward(data.x))
    status, evaluated = engine.check(5, count)
    pairs = torch.from_numpy(status).view(-1, 2)
    assert not ((pairs == 1).all(dim=1)).any()  # at most one of a pair interpolates
    assert evaluated >= count // 2  # the first example costs one forward pass per pair
    candidates = torch.from_numpy(status != 0)
    accepted = torch.zeros(count, dtype=torch.bool)
    accepted[candidates] = certified_interpolates(population[candidates], data.x, data.y)
    assert torch.equal(accepted, baseline_accepts(population, data.x, data.y))


@pytest.mark.parametrize("arch", ARCHS)
def test_torch_mirrored_pairs_negate_the_output(arch):
    population = draw_batch(arch, Gaussian(1.0), 200, torch.Generator().manual_seed(0), mirror=True)
    x = task(arch, 4, 1).x
    f = population.forward(x)
    assert torch.equal(f[1::2], -f[::2])
    for name in population.params:
        if name not in arch.head_names():
            assert torch.equal(population.params[name][::2], population.params[name][1::2])


@needs_kernel
def test_mirroring_needs_a_symmetric_prior_for_scalar_heads():
    lopsided = QuantizedUniform(levels=(-1.0, 0.0, 0.5))
    fcn, lenet = FCN(5, (6,)), LeNet.with_width_factor(0.25)
    assert not can_mirror(fcn, lopsided) and can_mirror(fcn, Gaussian(2.0)) and can_mirror(lenet, lopsided)
    assert not NativeEngine(KERNEL, fcn, lopsided, task(fcn, 2, 0)).mirror
    assert NativeEngine(KERNEL, lenet, lopsided, task(lenet, 2, 0)).mirror  # swapping two logits needs nothing
    assert not NativeEngine(KERNEL, fcn, Q3, task(fcn, 2, 0), mirror=False).mirror
    # The uniform grid is symmetric: every value is an odd multiple of a 2^-24.
    values = NativeEngine(KERNEL, fcn, Uniform(0.5), task(fcn, 2, 0)).draw(3, range(50)).params["w1"].double()
    codes = values / 0.5 * 2**24
    assert torch.equal(codes, codes.round()) and (codes.remainder(2) == 1).all()


@needs_kernel
def test_mirrored_pairs_spend_draw_budgets_in_whole_pairs():
    arch = FCN(2, (1,), bias=False)
    train = Dataset(torch.ones(2, 2), torch.tensor([1, -1], dtype=torch.int8))  # nobody interpolates
    sampler = GuessAndCheck(arch, Q3, train, batch_size=400, engine="native")
    result = sample(sampler, torch.Generator().manual_seed(0), 5, max_draws=1001, progress=False)
    assert result.draws == 1000 and result.stop_reason == "max_draws" and result.draws_per_trial == 2


def test_raw_bit_quantized_codes_are_uniform():
    codes = quantized_codes(3, 300_000, torch.Generator().manual_seed(0))
    counts = torch.bincount(codes, minlength=3).numpy()
    assert counts.sum() == 300_000 and len(counts) == 3
    # Tolerance: chi-square against uniform at the 1% level (fixed seed).
    assert chisquare(counts).pvalue > 0.01
    population = draw_batch(FCN(10, (10,)), Uniform(0.5), 1000, torch.Generator().manual_seed(1))
    values = torch.cat([v.flatten() for v in population.params.values()])
    assert values.min() > -0.5 and values.max() < 0.5
    codes = values.double() / 0.5 * 2**24  # odd multiples of a 2^-24: a grid symmetric about 0
    assert torch.equal(codes, codes.round()) and (codes.remainder(2) == 1).all()


def test_class_interleaved_order():
    order = class_interleaved_order(torch.tensor([1, 1, 1, -1, -1], dtype=torch.int8))
    assert order.tolist() == [0, 3, 1, 4, 2]


def test_certified_check_treats_exact_ties_as_mistakes():
    # Two identical hidden units with opposite readout weights: f = 0 exactly in real arithmetic.
    arch = FCN(3, (2,), bias=False)
    w1 = torch.tensor([[[0.3, -1.7, 2.9], [0.3, -1.7, 2.9]]])
    population = Population(arch, Uniform(3.0), {"w1": w1, "w2": torch.tensor([[[1.0, -1.0]]])})
    x = torch.tensor([[1.0, 0.2, 0.7]])
    assert not certified_interpolates(population, x, torch.tensor([1], dtype=torch.int8)).item()
    assert not certified_interpolates(population, x, torch.tensor([-1], dtype=torch.int8)).item()


def test_lenet_matches_the_published_size():
    lenet = LeNet.with_width_factor(0.5)
    assert lenet.layer_widths == (3, 8, 60, 42)
    assert lenet.num_params() == 11_074 and lenet.flops_per_example() == 183_768
    assert FCN(784, (32,)).flops_per_example() == 2 * (784 * 32 + 32)
    assert LeNet.with_width_factor(0.5, (3, 32, 32)).flat_features == 200


def test_normalized_cross_entropy_and_loss_bin():
    arch = LeNet.with_width_factor(0.25, head="logits")
    population = Population.draw(arch, Uniform(1.0), 6, torch.Generator().manual_seed(0))
    data = task(arch, 4, 1)
    loss = normalized_cross_entropy(population, data.x, data.y)
    norm = torch.ones(6, dtype=torch.float64)
    for name in ("w1", "w2", "w3", "w4", "w5"):
        norm *= population.params[name].double().flatten(1).norm(dim=1) / 3
    z = (
        population.arch.logits({k: v.double() for k, v in population.params.items()}, data.x.double())
        / norm[:, None, None]
    )
    target = (data.y.long() + 1) // 2
    expected = torch.stack([torch.nn.functional.cross_entropy(z[i], target) for i in range(6)])
    assert torch.allclose(loss, expected, rtol=1e-6)
    gen = torch.Generator().manual_seed(3)
    easy = Dataset(data.x[:1], data.y[:1])
    unbinned = GuessAndCheck(arch, Uniform(1.0), easy, batch_size=500, engine="baseline")
    binned = GuessAndCheck(arch, Uniform(1.0), easy, batch_size=500, engine="baseline", loss_bin=(0.0, 0.6))
    state, info = binned.step(gen, binned.init())
    assert (normalized_cross_entropy(state.accepted, easy.x, easy.y) < 0.6).all()
    state_all, _ = unbinned.step(torch.Generator().manual_seed(3), unbinned.init())
    assert 0 < len(state.accepted) < len(state_all.accepted)


@needs_cuda
@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("arch", [FCN(5, (6,)), LeNet.with_width_factor(0.5), CNN((1, 8, 8), (2, 3), 3, 1, (2, 1))])
def test_cuda_torch_engine_accepts_exactly_the_baseline_set(arch, mirror):
    data = task(arch, 6, 0)
    population = draw_batch(arch, Uniform(1.0), 5000, torch.Generator(device="cuda").manual_seed(0), mirror=mirror)
    accepted, _ = TorchEngine(arch, Uniform(1.0), data, device="cuda").check(population, mirrored=mirror)
    x, y = data.x.cuda(), data.y.cuda()
    assert torch.equal(accepted.cpu(), baseline_accepts(population, x, y).cpu())


# The CUDA LeNet kernel: its CPU emulation (the same source, compiled as C++) runs everywhere; the
# GPU build needs nvcc and a device.
CUDA_ARCHS = [
    LeNet.with_width_factor(0.5),
    LeNet.with_width_factor(0.25, (1, 20, 18), head="scalar"),
    LeNet.with_width_factor(0.5, (3, 32, 32)),
]
needs_emulator = pytest.mark.skipif(
    cuda_kernel.emulator(CUDA_ARCHS[0]) is None, reason="no C++ compiler: the CUDA kernel's emulation cannot be built"
)


@needs_kernel
@needs_emulator
@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    arch=st.sampled_from(CUDA_ARCHS),
    prior=st.sampled_from([Q3, Q5, Uniform(1.0), Uniform(0.5)]),
    n=st.integers(1, 6),
    seed=st.integers(0, 10**6),
    mirror=st.booleans(),
)
def test_cuda_kernel_emulation_decides_and_draws_as_the_native_kernel(arch, prior, n, seed, mirror):
    """Same stream, same order of every conv and hidden-layer sum: the same verdicts (uncertain
    ones included), the same forwards evaluated, bitwise the same parameters."""
    data = task(arch, n, seed)
    cpu = NativeEngine(KERNEL, arch, prior, data, mirror=mirror)
    emulated = CudaEngine(cuda_kernel.emulator(arch), arch, prior, data, mirror=mirror)
    status, evaluated = emulated.check(seed, 200)
    expected_status, expected_evaluated = cpu.check(seed, 200)
    np.testing.assert_array_equal(status, expected_status)
    assert evaluated == expected_evaluated
    ids = np.concatenate([np.arange(6), np.flatnonzero(status)])
    drawn, expected = emulated.draw(seed, ids), cpu.draw(seed, ids)
    for name, value in expected.params.items():
        assert torch.equal(drawn.params[name], value), name


@needs_emulator
@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    arch=st.sampled_from(CUDA_ARCHS[:2]),
    prior=st.sampled_from([Q3, Uniform(1.0)]),
    n=st.integers(1, 6),
    seed=st.integers(0, 10**6),
)
def test_cuda_kernel_emulation_accepts_exactly_the_baseline_set(arch, prior, n, seed):
    data = task(arch, n, seed)
    engine = CudaEngine(cuda_kernel.emulator(arch), arch, prior, data)
    status, evaluated = engine.check(seed, 300)
    population = engine.draw(seed, range(300))
    candidates = torch.from_numpy(status != 0)
    accepts = torch.zeros(300, dtype=torch.bool)
    accepts[candidates] = certified_interpolates(population[candidates], data.x, data.y)
    assert torch.equal(accepts, baseline_accepts(population, data.x, data.y))
    assert not accepts.view(-1, 2).all(dim=1).any()  # at most one of a mirrored pair
    assert 150 <= evaluated <= 300 * n


def test_cuda_kernel_takes_lenets_with_wide_fc_layers_only():
    assert cuda_kernel.supports(LeNet.with_width_factor(0.5))
    assert not cuda_kernel.supports(LeNet.with_width_factor(0.1))  # fc layers of 12 and 8 units
    assert not cuda_kernel.supports(FCN(5, (6,)))
    assert cuda_kernel.kernel(LeNet.with_width_factor(0.5), "cpu") is None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_cuda_kernel_compiles_for_hopper_without_spilling_much():
    """The GPU build compiles (here without a GPU: sm_90, as on an H100/H200)."""
    arch = LeNet.with_width_factor(0.5)
    flags = [*cuda_kernel.NVCC_FLAGS, "-arch=sm_90", "-Xptxas", "-v"]
    result = subprocess.run(
        ["nvcc", *flags, *cuda_kernel.shape_defines(arch), str(cuda_kernel.SOURCE), "-o", os.devnull],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill stores", result.stderr)]
    assert spills and max(spills) <= 256, result.stderr


@needs_cuda
@needs_kernel
@pytest.mark.parametrize("prior", [Uniform(1.0), Q3])
@pytest.mark.parametrize("arch", CUDA_ARCHS)
def test_cuda_kernel_on_the_gpu_decides_and_draws_as_the_native_kernel(arch, prior):
    gpu = cuda_kernel.kernel(arch, "cuda")
    if gpu is None:
        pytest.skip("no nvcc or CUDA driver: the CUDA kernel cannot be built")
    data = task(arch, 6, 1)
    engine = CudaEngine(gpu, arch, prior, data, device="cuda")
    status, evaluated = engine.check(5, 20_000)
    expected_status, expected_evaluated = NativeEngine(KERNEL, arch, prior, data).check(5, 20_000)
    np.testing.assert_array_equal(status, expected_status)
    assert evaluated == expected_evaluated
    ids = np.flatnonzero(status)
    drawn = engine.draw(5, ids)
    for name, value in NativeEngine(KERNEL, arch, prior, data).draw(5, ids).params.items():
        assert torch.equal(drawn.params[name].cpu(), value), name
    # The sampler's native engine on a GPU: every accepted network interpolates, checked on the CPU.
    sampler = GuessAndCheck(arch, prior, data, batch_size=20_000, device="cuda", engine="native")
    state, info = sampler.step(torch.Generator().manual_seed(0), sampler.init())
    assert sampler.engine == "native" and info.draws == 20_000 and info.accepted == len(state.accepted) > 0
    assert bool(certified_interpolates(state.accepted.to("cpu"), data.x, data.y).all())
