"""Populations: indexing, concatenation, save/load, predictions, mistakes and chunking."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from typicalnets.errors import TypicalnetsError
from typicalnets.nets import CNN, FCN, DiagonalLinear, Population
from typicalnets.priors import Gaussian, QuantizedUniform, Uniform

ARCHS = [
    FCN(4, (3,)),
    FCN(3, (2, 3), activation="tanh", bias=False, scaled=True),
    CNN((1, 6), (2,), kernel_size=3),
    CNN((2, 4, 4), (2, 1), kernel_size=2, scaled=True),
    DiagonalLinear(4, 3),
]
PRIORS = [QuantizedUniform.evenly_spaced(3), QuantizedUniform((-1.5, 2.0)), Uniform(0.5), Gaussian(2.0)]
Q3 = QuantizedUniform((-1.0, 0.0, 1.0))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@st.composite
def populations(draw, min_size=0, max_size=6):
    arch = draw(st.sampled_from(ARCHS))
    prior = draw(st.sampled_from(PRIORS))
    size = draw(st.integers(min_size, max_size))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    return Population.draw(arch, prior, size, gen(seed), dtype=dtype)


def assert_same(a: Population, b: Population) -> None:
    assert a.arch == b.arch
    assert a.prior == b.prior
    assert list(a.params) == list(b.params) == list(a.arch.param_shapes())
    for name in a.params:
        assert a.params[name].dtype == b.params[name].dtype
        assert torch.equal(a.params[name], b.params[name]), name
    assert len(a) == len(b)


def assert_params(pop: Population, expected: dict[str, torch.Tensor]) -> None:
    for name, value in expected.items():
        assert torch.equal(pop.params[name], value), name


# --------------------------------------------------------------------------- construction


def test_draw_shapes_and_reproducibility():
    arch = FCN(4, (3, 2), scaled=True)
    pop = Population.draw(arch, Gaussian(), 5, gen(9))
    assert len(pop) == 5 and pop.dtype == torch.float32 and pop.device == torch.device("cpu")
    for name, shape in arch.param_shapes().items():
        assert pop.params[name].shape == (5, *shape)
    assert_same(pop, Population.draw(arch, Gaussian(), 5, gen(9)))
    assert Population.draw(arch, Gaussian(), 5, gen(9), dtype=torch.float64).dtype == torch.float64
    assert "size=5" in repr(pop)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.describe())
def test_empty(arch):
    pop = Population.empty(arch, Gaussian())
    assert len(pop) == 0
    x = torch.zeros(3, *arch.input_shape)
    assert pop.forward(x).shape == (0, 3)
    assert pop.predict(x).shape == (0, 3)
    assert pop.mistakes(x, torch.ones(3)).shape == (0,)
    assert len(Population.concat([pop, pop])) == 0


def test_constructor_validates_params():
    arch = FCN(2, (3,))
    good = Population.draw(arch, Q3, 4, gen(0)).params
    with pytest.raises(TypicalnetsError):  # missing a parameter
        Population(arch, Q3, {k: v for k, v in good.items() if k != "b2"})
    with pytest.raises(TypicalnetsError):  # an extra parameter
        Population(arch, Q3, {**good, "s1": torch.zeros(4, 3)})
    with pytest.raises(TypicalnetsError):  # population sizes disagree
        Population(arch, Q3, {**good, "w1": torch.zeros(5, 3, 2)})
    with pytest.raises(TypicalnetsError):  # wrong per-network shape
        Population(arch, Q3, {**good, "w1": torch.zeros(4, 2, 3)})
    # params are kept in the architecture's order regardless of the dict's
    shuffled = dict(reversed(list(good.items())))
    assert list(Population(arch, Q3, shuffled).params) == list(arch.param_shapes())


# --------------------------------------------------------------------------- indexing


@given(populations(min_size=1), st.data())
def test_int_index(pop, data):
    i = data.draw(st.integers(-len(pop), len(pop) - 1))
    sub = pop[i]
    assert len(sub) == 1
    assert sub.arch == pop.arch and sub.prior == pop.prior
    assert_params(sub, {k: v[i].unsqueeze(0) for k, v in pop.params.items()})
    j = i % len(pop)
    assert_same(Population.concat([pop[:j], pop[i], pop[j + 1 :]]), pop)


@given(populations(), st.data())
def test_slice_index(pop, data):
    m = len(pop)
    start = data.draw(st.none() | st.integers(-m - 2, m + 2))
    stop = data.draw(st.none() | st.integers(-m - 2, m + 2))
    step = data.draw(st.none() | st.integers(1, 3))
    sub = pop[start:stop:step]
    expected = list(range(m))[start:stop:step]
    assert len(sub) == len(expected)
    assert_params(sub, {k: v[expected] for k, v in pop.params.items()})
    cut = data.draw(st.integers(0, m))
    assert_same(Population.concat([pop[:cut], pop[cut:]]), pop)


@given(populations(), st.data())
def test_bool_mask_index(pop, data):
    mask = data.draw(st.lists(st.booleans(), min_size=len(pop), max_size=len(pop)))
    as_tensor = torch.tensor(mask, dtype=torch.bool)
    # (an empty Python list hits the empty-index bug, see test_empty_index_list_gives_empty_population)
    for index in (mask, as_tensor) if mask else (as_tensor,):
        sub = pop[index]
        assert len(sub) == sum(mask)
        assert_params(sub, {k: v[as_tensor] for k, v in pop.params.items()})
    # the kept and the dropped networks together are the population, reordered
    order = torch.cat([torch.nonzero(as_tensor)[:, 0], torch.nonzero(~as_tensor)[:, 0]])
    assert_same(Population.concat([pop[as_tensor], pop[~as_tensor]]), pop[order])


@given(populations(min_size=1), st.data())
def test_index_list(pop, data):
    m = len(pop)
    idx = data.draw(st.lists(st.integers(-m, m - 1), min_size=1, max_size=8))
    for index in (idx, torch.tensor(idx), np.array(idx)):
        sub = pop[index]
        assert len(sub) == len(idx)
        assert_params(sub, {k: v[torch.tensor(idx)] for k, v in pop.params.items()})
    # permutation round trip
    perm = torch.randperm(m, generator=gen(m))
    assert_same(pop[perm][torch.argsort(perm)], pop)


@pytest.mark.parametrize("index", [np.int64(1), torch.tensor(1)], ids=["numpy-int", "0d-tensor"])
def test_scalar_like_index_acts_like_int(index):
    pop = Population.draw(FCN(3, (4,)), Gaussian(), 5, gen(0))
    sub = pop[index]
    assert len(sub) == 1
    assert_params(sub, {k: v[1:2] for k, v in pop.params.items()})


def test_empty_index_list_gives_empty_population():
    pop = Population.draw(FCN(3, (4,)), Gaussian(), 5, gen(0))
    assert len(pop[[]]) == 0


def test_out_of_range_int_index_raises():
    pop = Population.draw(FCN(3, (4,)), Gaussian(), 5, gen(0))
    with pytest.raises((IndexError, TypicalnetsError)):
        pop[5]


# --------------------------------------------------------------------------- concat


@given(st.lists(populations(), min_size=1, max_size=4), st.data())
def test_concat(pops, data):
    # give every part the first part's arch, prior and dtype by re-drawing
    first = pops[0]
    parts = [Population.draw(first.arch, first.prior, len(p), gen(i), dtype=first.dtype) for i, p in enumerate(pops)]
    joined = Population.concat(parts)
    assert len(joined) == sum(len(p) for p in parts)
    start = 0
    for part in parts:
        assert_same(joined[start : start + len(part)], part)
        start += len(part)


def test_concat_errors():
    a = Population.draw(FCN(3, (4,)), Q3, 2, gen(0))
    with pytest.raises(TypicalnetsError):
        Population.concat([])
    with pytest.raises(TypicalnetsError):
        Population.concat([a, Population.draw(FCN(3, (5,)), Q3, 2, gen(0))])
    with pytest.raises(TypicalnetsError):
        Population.concat([a, Population.draw(FCN(3, (4,)), Gaussian(), 2, gen(0))])
    with pytest.raises(TypicalnetsError):
        Population.concat([a, Population.draw(FCN(3, (4,), activation="tanh"), Q3, 2, gen(0))])


# --------------------------------------------------------------------------- save / load


@given(populations())
def test_save_load_round_trip(pop):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pop.pt")
        pop.save(path)
        loaded = Population.load(path)
        assert_same(loaded, pop)
        header = torch.load(path, weights_only=True)["header"]
        assert header["size"] == len(pop) and header["arch"] == pop.arch.to_dict()
        assert header["prior"] == pop.prior.to_dict()


def test_save_load_of_a_slice_is_compact(tmp_path):
    pop = Population.draw(FCN(3, (4,)), Gaussian(), 50, gen(0))
    pop[3:5].save(tmp_path / "two.pt")
    assert_same(Population.load(tmp_path / "two.pt"), pop[3:5])
    assert (tmp_path / "two.pt").stat().st_size < 20_000  # the slice, not the 50-network storage


def test_load_missing_file(tmp_path):
    with pytest.raises(TypicalnetsError):
        Population.load(tmp_path / "nope.pt")
    with pytest.raises(TypicalnetsError):
        Population.load(tmp_path)  # a directory


@pytest.mark.parametrize("seed", range(3))
def test_load_random_bytes(tmp_path, seed):
    path = tmp_path / "junk.pt"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size=1000, dtype=np.uint8).tobytes())
    with pytest.raises(TypicalnetsError):
        Population.load(path)


def test_load_empty_and_truncated_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(TypicalnetsError):
        Population.load(tmp_path / "empty.pt")
    Population.draw(FCN(3, (4,)), Gaussian(), 4, gen(0)).save(tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(TypicalnetsError):
        Population.load(tmp_path / "cut.pt")


@pytest.mark.parametrize(
    "payload",
    [
        {"params": {"w1": torch.zeros(1, 4, 3)}},  # no header
        torch.zeros(3),  # a bare tensor
        [1, 2, 3],
        {"header": {"format": "something.else"}, "params": {}},
        {"header": "typicalnets.population", "params": {}},
    ],
    ids=["no-header", "tensor", "list", "wrong-format", "header-not-dict"],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns when a tensor is indexed by a str
def test_load_valid_torch_file_without_a_usable_header(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(TypicalnetsError):
        Population.load(path)


def test_load_header_inconsistent_with_params(tmp_path):
    pop = Population.draw(FCN(3, (4,)), Gaussian(), 2, gen(0))
    header = pop.header()
    for bad_header, params in [
        ({**header, "arch": FCN(3, (5,)).to_dict()}, pop.params),  # shapes disagree
        ({**header, "arch": {"family": "rnn"}}, pop.params),  # unknown family
        ({**header, "prior": {"kind": "laplace"}}, pop.params),  # unknown prior
        (header, {k: v for k, v in pop.params.items() if k != "w1"}),  # a parameter missing
        ({k: v for k, v in header.items() if k != "arch"}, pop.params),  # no arch
    ]:
        path = tmp_path / "bad.pt"
        torch.save({"header": bad_header, "params": params}, path)
        with pytest.raises(TypicalnetsError):
            Population.load(path)


# --------------------------------------------------------------------------- predict / mistakes / chunks


def boolean_inputs(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return 2.0 * torch.randint(0, 2, (n, *shape), generator=gen(seed)).float() - 1.0


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.describe())
def test_predict_int8_with_exact_zeros(arch):
    # Quantized {-1,0,1} weights on Boolean inputs make f == 0 common (and exact).
    pop = Population.draw(arch, Q3, 40, gen(1))
    zeros = Population(arch, Q3, {k: torch.zeros(2, *s) for k, s in arch.param_shapes().items()})
    pop = Population.concat([pop, zeros])
    x = boolean_inputs(30, arch.input_shape, 2)
    f = pop.forward(x)
    pred = pop.predict(x)
    assert pred.dtype == torch.int8 and pred.shape == (42, 30)
    assert torch.equal(pred == 0, f == 0)
    assert torch.equal(pred[f > 0], torch.ones_like(pred[f > 0]))
    assert torch.equal(pred[f < 0], -torch.ones_like(pred[f < 0]))
    assert (f == 0).any() and (f != 0).any()  # the test exercises both cases
    assert (pred[-2:] == 0).all()


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.describe())
def test_mistakes_count_zero_as_mistake(arch):
    pop = Population.draw(arch, Q3, 30, gen(3))
    zeros = Population(arch, Q3, {k: torch.zeros(1, *s) for k, s in arch.param_shapes().items()})
    pop = Population.concat([pop, zeros])
    x = boolean_inputs(25, arch.input_shape, 4)
    y = torch.where(torch.rand(25, generator=gen(5)) < 0.5, -1, 1).to(torch.int8)
    f = pop.forward(x)
    expected = ((f * y) <= 0).sum(1)  # wrong sign or exactly zero
    mistakes = pop.mistakes(x, y)
    assert torch.equal(mistakes, expected)
    assert mistakes[-1].item() == 25  # the all-zero network is wrong everywhere, for either label
    assert torch.equal(pop.mistakes(x, -y)[-1], torch.tensor(25))
    assert torch.equal(pop.errors(x, y), expected.double() / 25)
    # labels given as float +-1 or int64 work the same
    assert torch.equal(pop.mistakes(x, y.float()), expected)
    assert torch.equal(pop.mistakes(x, y.long()), expected)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.describe())
@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_chunked_equals_unchunked(arch, chunk):
    # Exact case: integer weights and Boolean inputs, so any summation order gives the same bits.
    pop = Population.draw(arch, QuantizedUniform((-2.0, -1.0, 0.0, 1.0, 2.0)), 11, gen(6))
    x = boolean_inputs(9, arch.input_shape, 7)
    y = torch.where(torch.rand(9, generator=gen(8)) < 0.5, -1, 1).to(torch.int8)
    assert torch.equal(pop.forward(x, chunk_size=chunk), pop.forward(x))
    assert torch.equal(pop.predict(x, chunk_size=chunk), pop.predict(x))
    assert torch.equal(pop.mistakes(x, y, chunk_size=chunk), pop.mistakes(x, y))
    # Gaussian weights: chunking changes batch shapes, so only rounding-level agreement is
    # guaranteed (see test_nets for the float32 tolerance argument).
    popg = Population.draw(arch, Gaussian(), 11, gen(9))
    xg = torch.randn(9, *arch.input_shape, generator=gen(10))
    torch.testing.assert_close(popg.forward(xg, chunk_size=chunk), popg.forward(xg), atol=1e-5, rtol=1e-5)


def test_forward_of_each_network_equals_its_slice():
    arch = CNN((1, 7), (3, 2), kernel_size=2, scaled=True)
    pop = Population.draw(arch, Q3, 6, gen(11))
    x = boolean_inputs(10, arch.input_shape, 12)
    full = pop.forward(x)
    for i in range(len(pop)):
        assert torch.equal(pop[i].forward(x), full[i : i + 1])


def test_to_dtype():
    pop = Population.draw(FCN(3, (2,)), Q3, 3, gen(0))
    pop64 = pop.to(dtype=torch.float64)
    assert pop64.dtype == torch.float64 and pop.dtype == torch.float32
    assert all(torch.equal(pop64.params[k], v.double()) for k, v in pop.params.items())
