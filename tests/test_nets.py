"""Architectures: the batched population forward equals a per-network reference; shapes; errors.

The references below are written independently of the package: plain per-network matmuls for the
FCN and sliding windows (``Tensor.unfold`` + einsum) for convolution and max-pooling, with
activations spelt out by hand.

Tolerances. With Gaussian parameters in float32 the batched forward and the reference add the
same products in a different order (batched BLAS vs one matmul / einsum per network), so they
agree only up to rounding: a few float32 ulps (eps = 1.2e-7) of sums of at most ~100 terms of
size O(1-10), i.e. ~1e-5. We use atol = rtol = 1e-5 (rtol 1e-4 for the deeper nets whose outputs
reach O(100)). The same comparison in float64 holds to 1e-10. With integer-valued parameters
(quantized levels) on Boolean inputs and relu/sign every intermediate value is a small integer,
exactly representable, so there we require exact equality; that is also how ``sign`` (which is
discontinuous, so rounding near 0 could flip it) is tested.
"""

from __future__ import annotations

import math

import pytest
import torch

from typicalnets.certificate import forward_with_scale
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import (
    ARCH_NAMES,
    CNN,
    FCN,
    DiagonalLinear,
    LeNet,
    Population,
    arch_from_dict,
    build_arch,
)
from typicalnets.nets.base import LEAKY_RELU_SLOPE
from typicalnets.priors import Gaussian, QuantizedUniform

ACTS = ("relu", "sign", "leaky-relu", "tanh")
INT_LEVELS = QuantizedUniform((-2.0, -1.0, 0.0, 1.0, 2.0))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ref_act(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.where(z > 0, z, torch.zeros_like(z))
    if name == "sign":
        return (z > 0).to(z.dtype) - (z < 0).to(z.dtype)
    if name == "leaky-relu":
        return torch.where(z > 0, z, LEAKY_RELU_SLOPE * z)
    if name == "tanh":
        return torch.tanh(z)
    raise AssertionError(name)


def one(params: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: v[i] for k, v in params.items()}


def fcn_reference(arch: FCN, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """f for one network (params without the leading M) on inputs x (n, d)."""
    h = x.to(p["w1"].dtype)
    for layer in range(1, arch.depth + 1):
        z = h @ p[f"w{layer}"].T
        if arch.bias:
            z = z + p[f"b{layer}"]
        if layer == arch.depth:
            return z[:, 0]
        h = ref_act(arch.activation, z)
        if arch.scaled:
            h = h * p[f"s{layer}"]
    raise AssertionError


def conv_ref(h: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    k = w.shape[-1]
    if h.ndim == 3:  # (n, c, L)
        windows = h.unfold(2, k, stride)  # (n, c, L', k)
        return torch.einsum("nclk,ock->nol", windows, w)
    windows = h.unfold(2, k, stride).unfold(3, k, stride)  # (n, c, H', W', k, k)
    return torch.einsum("nchwij,ocij->nohw", windows, w)


def pool_ref(h: torch.Tensor, p: int) -> torch.Tensor:
    if h.ndim == 3:
        return h.unfold(2, p, p).amax(-1)
    return h.unfold(2, p, p).unfold(3, p, p).amax((-1, -2))


def cnn_reference(arch: CNN, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = x.to(p["w1"].dtype)
    spatial = (1,) * arch.dims
    for layer, (s, pool) in enumerate(zip(arch.stride, arch.pool), start=1):
        h = conv_ref(h, p[f"w{layer}"], s)
        if arch.bias:
            h = h + p[f"b{layer}"].reshape(-1, *spatial)
        h = ref_act(arch.activation, h)
        if pool > 1:
            h = pool_ref(h, pool)
        if arch.scaled:
            h = h * p[f"s{layer}"].reshape(-1, *spatial)
    f = h.reshape(h.shape[0], -1) @ p[f"w{arch.depth}"][0]
    return f + p[f"b{arch.depth}"][0] if arch.bias else f


def reference(arch, params, x):
    refs = []
    for i in range(params["w1"].shape[0]):
        p = one(params, i)
        if isinstance(arch, FCN):
            refs.append(fcn_reference(arch, p, x))
        elif isinstance(arch, CNN):
            refs.append(cnn_reference(arch, p, x))
        else:
            beta = p["w1"].clone()
            for layer in range(2, arch.depth + 1):
                beta = beta * p[f"w{layer}"]
            refs.append(torch.stack([(beta * xi.to(beta.dtype)).sum() for xi in x]))
    return torch.stack(refs)


def check_forward(arch, seed: int, m: int = 4, n: int = 12, rtol: float = 1e-5):
    """Compare Population.forward to the reference: float32, float64 (Gaussian), exact (integer)."""
    g = gen(seed)
    x = torch.randn(n, *arch.input_shape, generator=g)
    pop = Population.draw(arch, Gaussian(1.0), m, g)
    activation = getattr(arch, "activation", "relu")  # DiagonalLinear has none
    if activation != "sign":
        out = pop.forward(x)
        assert out.shape == (m, n) and out.dtype == torch.float32
        torch.testing.assert_close(out, reference(arch, pop.params, x), atol=1e-5, rtol=rtol)
        pop64 = pop.to(dtype=torch.float64)
        out64 = pop64.forward(x)
        assert out64.dtype == torch.float64
        torch.testing.assert_close(out64, reference(arch, pop64.params, x.double()), atol=1e-10, rtol=1e-10)
    if activation in ("relu", "sign"):
        xb = 2.0 * torch.randint(0, 2, (n, *arch.input_shape), generator=g).float() - 1.0
        popq = Population.draw(arch, INT_LEVELS, m, g)
        assert torch.equal(popq.forward(xb), reference(arch, popq.params, xb))


# --------------------------------------------------------------------------- FCN


@pytest.mark.parametrize("hidden", [(5,), (4, 3), (3, 6, 2)], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("scaled", [False, True], ids=["fcn", "sfcn"])
def test_fcn_forward_matches_reference(scaled, activation, bias, hidden):
    arch = FCN(in_dim=6, hidden=hidden, activation=activation, bias=bias, scaled=scaled)
    check_forward(
        arch,
        seed=len(hidden) * 100 + ACTS.index(activation) * 10 + 2 * bias + scaled,
        rtol=1e-5 if len(hidden) < 3 else 1e-4,
    )


def test_fcn_forward_single_network_and_single_input():
    arch = FCN(in_dim=3, hidden=(2,))
    pop = Population.draw(arch, Gaussian(), 1, gen(0))
    x = torch.randn(1, 3, generator=gen(1))
    torch.testing.assert_close(pop.forward(x), reference(arch, pop.params, x), atol=1e-6, rtol=1e-6)


def test_fcn_hand_computed():
    arch = FCN(in_dim=2, hidden=(2,), activation="relu", bias=True, scaled=True)
    params = {
        "w1": torch.tensor([[[1.0, -1.0], [2.0, 0.5]]]),
        "b1": torch.tensor([[0.5, -1.0]]),
        "s1": torch.tensor([[2.0, -3.0]]),
        "w2": torch.tensor([[[1.0, 1.0]]]),
        "b2": torch.tensor([[0.25]]),
    }
    pop = Population(arch, QuantizedUniform((-1.0, 0.0, 1.0)), params)
    x = torch.tensor([[1.0, 2.0], [3.0, -2.0]])
    # x1: z = (-1+0.5, 2+1-1) = (-0.5, 2) -> relu (0, 2) -> scaled (0, -6) -> f = -6 + 0.25
    # x2: z = (5+0.5, 6-1-1) = (5.5, 4) -> (11, -12) -> f = -1 + 0.25
    assert torch.equal(pop.forward(x), torch.tensor([[-5.75, -0.75]]))


def test_fcn_param_shapes_and_counts():
    arch = FCN(in_dim=5, hidden=(4, 3), bias=True, scaled=True)
    assert arch.param_shapes() == {
        "w1": (4, 5),
        "b1": (4,),
        "s1": (4,),
        "w2": (3, 4),
        "b2": (3,),
        "s2": (3,),
        "w3": (1, 3),
        "b3": (1,),
    }
    assert list(arch.param_shapes()) == ["w1", "b1", "s1", "w2", "b2", "s2", "w3", "b3"]
    assert arch.num_params() == (20 + 4 + 4) + (12 + 3 + 3) + (3 + 1)
    for scaled in (False, True):
        for bias in (False, True):
            for hidden in [(7,), (2, 9), (3, 1, 4)]:
                a = FCN(in_dim=6, hidden=hidden, bias=bias, scaled=scaled)
                sizes = (6, *hidden, 1)
                expected = sum(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
                expected += bias * sum(sizes[1:]) + scaled * sum(hidden)
                assert a.num_params() == expected
                assert a.num_params() == sum(math.prod(s) for s in a.param_shapes().values())
                assert a.depth == len(hidden) + 1 and a.widths == hidden and a.input_shape == (6,)
    assert arch.fan_in("w1") == 5 and arch.fan_in("b2") == 4 and arch.fan_in("w3") == 3 and arch.fan_in("s1") == 1


# --------------------------------------------------------------------------- CNN

CNN_CONFIGS = [
    # (in_shape, channels, kernel, stride, pool, activation, bias)
    ((2, 11), (3,), 3, 1, 1, "relu", True),
    ((1, 16), (3, 2), 3, 2, 1, "tanh", True),
    ((2, 17), (4, 3), (3, 2), 1, 2, "relu", False),
    ((1, 20), (2, 3), 2, (2, 1), (1, 2), "sign", True),
    ((3, 9), (2,), 4, 2, 2, "leaky-relu", True),
    ((1, 6, 6), (2,), 3, 1, 1, "relu", True),
    ((2, 7, 7), (3, 2), 2, 1, 2, "tanh", False),
    ((1, 9, 8), (2, 2), 3, 2, 1, "relu", True),
    ((2, 8, 8), (3,), 3, 1, 2, "sign", True),
    ((1, 10, 10), (2, 2), (3, 2), (1, 2), (2, 1), "leaky-relu", True),
]


@pytest.mark.parametrize("scaled", [False, True], ids=["cnn", "scnn"])
@pytest.mark.parametrize("config", CNN_CONFIGS, ids=[f"{len(c[0]) - 1}d-{i}" for i, c in enumerate(CNN_CONFIGS)])
def test_cnn_forward_matches_reference(config, scaled):
    in_shape, channels, k, s, p, act, bias = config
    arch = CNN(
        in_shape=in_shape, channels=channels, kernel_size=k, stride=s, pool=p, activation=act, bias=bias, scaled=scaled
    )
    check_forward(arch, seed=CNN_CONFIGS.index(config) * 2 + scaled, m=3, n=7)


def test_cnn_spatial_sizes_and_param_counts():
    # layer 1: conv (20-3)//2+1 = 9, pool 4; layer 2: conv (4-3)//2+1 = 1, pool 2 would leave 0
    with pytest.raises(TypicalnetsError):
        CNN(in_shape=(2, 20), channels=(3, 4), kernel_size=3, stride=2, pool=2)
    arch = CNN(in_shape=(2, 20), channels=(3, 4), kernel_size=3, stride=2, pool=(2, 1), scaled=True)
    assert arch.spatial_sizes() == [(20,), (4,), (1,)]
    assert arch.readout_features == 4
    assert arch.param_shapes() == {
        "w1": (3, 2, 3),
        "b1": (3,),
        "s1": (3,),
        "w2": (4, 3, 3),
        "b2": (4,),
        "s2": (4,),
        "w3": (1, 4),
        "b3": (1,),
    }
    assert arch.num_params() == (18 + 3 + 3) + (36 + 4 + 4) + (4 + 1)
    arch2 = CNN(in_shape=(3, 9, 7), channels=(2,), kernel_size=2, stride=1, pool=2, bias=False)
    # conv (8, 6), pool (4, 3): readout 2 * 12
    assert arch2.spatial_sizes() == [(9, 7), (4, 3)]
    assert arch2.param_shapes() == {"w1": (2, 3, 2, 2), "w2": (1, 24)}
    assert arch2.num_params() == 24 + 24
    assert arch2.dims == 2 and arch2.depth == 2 and arch2.widths == (2,) and arch2.input_shape == (3, 9, 7)
    assert arch2.fan_in("w1") == 3 * 4 and arch2.fan_in("w2") == 24
    assert arch.fan_in("w2") == 3 * 3 and arch.fan_in("s1") == 1


def test_cnn_per_layer_arguments_normalised():
    arch = CNN(in_shape=[1, 12], channels=[2, 2], kernel_size=[3], stride=1, pool=(1, 2))
    assert arch.kernel_size == (3, 3) and arch.stride == (1, 1) and arch.pool == (1, 2)
    assert arch.in_shape == (1, 12) and arch.channels == (2, 2)
    assert arch == CNN(in_shape=(1, 12), channels=(2, 2), kernel_size=3, stride=(1, 1), pool=(1, 2))


# --------------------------------------------------------------------------- diagonal


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_diagonal_forward_matches_reference(depth):
    arch = DiagonalLinear(in_dim=7, depth=depth)
    g = gen(depth)
    x = torch.randn(9, 7, generator=g)
    pop = Population.draw(arch, Gaussian(), 5, g)
    torch.testing.assert_close(pop.forward(x), reference(arch, pop.params, x), atol=1e-5, rtol=1e-5)
    beta = arch.effective_weights(pop.params)
    assert beta.shape == (5, 7)
    popq = Population.draw(arch, INT_LEVELS, 5, g)
    xb = 2.0 * torch.randint(0, 2, (9, 7), generator=g).float() - 1.0
    assert torch.equal(popq.forward(xb), reference(arch, popq.params, xb))
    assert arch.num_params() == 7 * depth
    assert arch.param_shapes() == {f"w{layer}": (7,) for layer in range(1, depth + 1)}
    assert arch.widths == (7,) * (depth - 1)


def test_diagonal_with_widths():
    arch = DiagonalLinear(4, 3)
    assert arch.with_widths((4,)) == DiagonalLinear(4, 2)
    with pytest.raises(TypicalnetsError):
        arch.with_widths((2, 4))


@pytest.mark.parametrize("in_dim, depth", [(0, 2), (-1, 2), (3, 0), (3, -1)])
def test_diagonal_rejects_bad_sizes(in_dim, depth):
    with pytest.raises(TypicalnetsError):
        DiagonalLinear(in_dim, depth)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_shape=(1, 4), channels=(2,), kernel_size=5),  # kernel longer than the input
        dict(in_shape=(1, 4, 9), channels=(2,), kernel_size=5),  # one spatial side too short
        dict(in_shape=(1, 5), channels=(2,), kernel_size=3, pool=4),  # pooling leaves nothing
        dict(in_shape=(1, 8), channels=(2, 2), kernel_size=3, pool=2),  # second layer: conv 1, pool 0
        dict(in_shape=(1, 6), channels=(2, 2, 2), kernel_size=3),  # 6 -> 4 -> 2 -> nothing
        dict(in_shape=(1, 6, 6), channels=(2, 2), kernel_size=3, stride=3),  # 6 -> 2 -> nothing
    ],
)
def test_cnn_kernel_that_does_not_fit_raises(kwargs):
    with pytest.raises(TypicalnetsError):
        CNN(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(channels=(0,)),
        dict(channels=(-2,)),
        dict(channels=(2, 0)),
        dict(channels=()),
        dict(kernel_size=0),
        dict(kernel_size=(3, -1), channels=(2, 2)),
        dict(stride=0),
        dict(pool=0),
        dict(kernel_size=(3, 3, 3), channels=(2, 2)),  # one per layer, not three
        dict(activation="gelu"),
        dict(activation="ReLU"),
        dict(in_shape=(5,)),
        dict(in_shape=(1, 2, 3, 4)),
        dict(in_shape=(0, 8)),
    ],
)
def test_cnn_bad_arguments_raise(kwargs):
    base = dict(in_shape=(1, 8), channels=(2,), kernel_size=3)
    with pytest.raises(TypicalnetsError):
        CNN(**{**base, **kwargs})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(hidden=()),
        dict(hidden=(0,)),
        dict(hidden=(-3,)),
        dict(hidden=(4, 0)),
        dict(in_dim=0),
        dict(in_dim=-2),
        dict(activation="softplus"),
        dict(activation=""),
    ],
)
def test_fcn_bad_arguments_raise(kwargs):
    base = dict(in_dim=3, hidden=(4,))
    with pytest.raises(TypicalnetsError):
        FCN(**{**base, **kwargs})


def test_build_arch():
    assert build_arch("fcn", (5,), (4, 3), activation="tanh", bias=False) == FCN(5, (4, 3), "tanh", False, False)
    assert build_arch("sfcn", (5,), (4,)) == FCN(5, (4,), scaled=True)
    assert build_arch("diag", (5,), depth=3) == DiagonalLinear(5, 3)
    assert build_arch("cnn", (2, 10), (3,), kernel_size=3, stride=2, pool=1) == CNN((2, 10), (3,), 3, 2, 1)
    assert build_arch("scnn", (1, 6, 6), (2, 2), kernel_size=2) == CNN((1, 6, 6), (2, 2), 2, scaled=True)
    assert build_arch("lenet", (1, 28, 28), width_factor=0.5, head="scalar") == LeNet(
        (1, 28, 28), (3, 8, 60, 42), "scalar"
    )
    assert set(ARCH_NAMES) == {"fcn", "sfcn", "cnn", "scnn", "diag", "lenet"}


@pytest.mark.parametrize(
    "name, shape, widths",
    [
        ("mlp", (5,), (3,)),
        ("FCN", (5,), (3,)),
        ("", (5,), (3,)),
        ("fcn", (2, 5), (3,)),  # images to an FCN
        ("sfcn", (1, 4, 4), (3,)),
        ("diag", (2, 3), ()),
        ("cnn", (5,), (3,)),  # flat inputs to a CNN
        ("scnn", (1, 2, 3, 4), (3,)),
        ("fcn", (5,), ()),  # no hidden layer
        ("fcn", (5,), (0,)),
        ("fcn", (5,), (-1, 3)),
        ("cnn", (1, 8), ()),
        ("cnn", (1, 8), (0,)),
        ("cnn", (1, 2), (3,)),  # default kernel 3 does not fit length 2
        ("lenet", (784,), ()),  # flat inputs to LeNet
        ("lenet", (1, 12, 12), ()),  # too small for two 5x5 convolutions and pools
    ],
)
def test_build_arch_errors(name, shape, widths):
    with pytest.raises(TypicalnetsError):
        build_arch(name, shape, widths)


@pytest.mark.parametrize(
    "arch, bad_shape",
    [
        (FCN(4, (3,)), (2, 5)),
        (FCN(4, (3,)), (2, 4, 1)),
        (CNN((1, 8), (2,)), (2, 8)),
        (CNN((1, 8), (2,)), (2, 2, 8)),
        (CNN((2, 5, 5), (2,)), (2, 2, 5, 6)),
        (DiagonalLinear(3, 2), (2, 4)),
    ],
)
def test_check_input_mismatch(arch, bad_shape):
    x = torch.zeros(bad_shape)
    with pytest.raises(TypicalnetsError):
        arch.check_input(x)
    with pytest.raises(TypicalnetsError):
        Population.draw(arch, Gaussian(), 2, gen(0)).forward(x)
    arch.check_input(torch.zeros(2, *arch.input_shape))  # the right shape passes


@pytest.mark.parametrize(
    "arch",
    [
        FCN(4, (3, 2), "sign", False, True),
        CNN((2, 9), (3, 2), (3, 2), 1, (2, 1), "tanh", True, True),
        CNN((1, 6, 6), (2,), 3),
        DiagonalLinear(5, 3),
    ],
    ids=lambda a: a.describe(),
)
def test_arch_dict_round_trip(arch):
    assert arch_from_dict(arch.to_dict()) == arch
    assert arch.with_widths(arch.widths) == arch


@pytest.mark.parametrize("data", [{"family": "rnn"}, {}, {"family": None}])
def test_arch_from_dict_unknown_family(data):
    with pytest.raises(TypicalnetsError):
        arch_from_dict(data)


def test_with_widths_and_describe():
    fcn = FCN(4, (8, 8), "tanh", False, True)
    assert fcn.with_widths((2, 3)) == FCN(4, (2, 3), "tanh", False, True)
    assert fcn.describe().endswith("[8,8]") and fcn.name == "sfcn"
    cnn = CNN((1, 10), (4,), 3)
    assert cnn.with_widths((2,)).channels == (2,) and cnn.name == "cnn"
    with pytest.raises(TypicalnetsError):
        fcn.with_widths((0, 3))


PLAN_FAMILIES = [
    FCN(6, (5,)),
    FCN(6, (5, 4, 3), activation="tanh", bias=False, scaled=True),
    FCN(6, (4, 4), activation="leaky-relu", scaled=True),
    CNN((2, 12), (3, 2), kernel_size=(3, 2), stride=(1, 2), pool=(2, 1), scaled=True),
    CNN((1, 10, 9), (2, 3), kernel_size=3, pool=(2, 1), activation="tanh", bias=False),
    LeNet.with_width_factor(0.25, (1, 18, 16)),
    LeNet.with_width_factor(0.25, (2, 16, 16), "scalar"),
    DiagonalLinear(6, depth=3),
]


@pytest.mark.parametrize("arch", PLAN_FAMILIES, ids=lambda arch: arch.describe())
@pytest.mark.parametrize("grouped", [True, False])
def test_the_certificates_scaled_forward_reads_the_layer_plan_as_the_family_computes(arch, grouped):
    """``certificate.forward_with_scale`` runs any family from its ``layer_plan``; in float64 it must
    give the family's own forward to 1e-10 (the same sums in another order), and each output's scale
    sum |w_i h_i| + |b| bounds |f|."""
    gen = torch.Generator().manual_seed(3)
    population = Population.draw(arch, Gaussian(1.0), 5, gen).to(dtype=torch.float64)
    x = torch.randn(7, *arch.input_shape, generator=gen, dtype=torch.float64)
    f, scale = forward_with_scale(arch, population.params, x, grouped=grouped)
    assert torch.allclose(f, population.forward(x), rtol=1e-10, atol=1e-10)
    assert bool((f.abs() <= scale * (1 + 1e-12)).all())
