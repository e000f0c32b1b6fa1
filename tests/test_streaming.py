"""Streaming: blocks of networks, shard files, .npy files written row by row, and the driver's streams."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import FCN, Population
from typicalnets.nets import population as population_module
from typicalnets.nets.population import SHARD_INDEX, SINGLE_FILE, Blocks, PopulationWriter
from typicalnets.priors import QuantizedUniform, Uniform
from typicalnets.samplers import GuessAndCheck, SequentialMonteCarlo, StreamingSampler, iter_samples, sample
from typicalnets.store import NpyRows

ARCH = FCN(3, (2,))
PRIOR = Uniform(1.0)


def drawn(size: int, seed: int = 0) -> Population:
    return Population.draw(ARCH, PRIOR, size, torch.Generator().manual_seed(seed))


def cut(population: Population, sizes: list[int]) -> list[Population]:
    """``population`` as consecutive parts of ``sizes`` (the rest in one more part)."""
    parts, start = [], 0
    for size in sizes:
        parts.append(population[start : start + size])
        start += size
    return [*parts, population[start:]]


def same(a: Population, b: Population) -> bool:
    return len(a) == len(b) and all(torch.equal(a.params[k], b.params[k]) for k in a.params)


@given(parts=st.lists(st.integers(0, 9), max_size=8), block=st.integers(1, 7))
def test_blocks_regroup_parts_in_order(parts, block):
    whole = drawn(sum(parts) + 3, seed=len(parts))
    blocks = Blocks()
    taken = []
    for part in cut(whole, parts):
        blocks.add(part)
        while len(blocks) >= block:
            taken.append(Population.concat(blocks.take(block)))
    rest = blocks.take(block)
    assert len(blocks) == 0 and all(len(b) == block for b in taken) and sum(len(p) for p in rest) < block
    assert same(Population.concat([*taken, *rest]), whole)


@given(parts=st.lists(st.integers(0, 12), max_size=6), shard_size=st.integers(1, 10))
def test_shards_round_trip(tmp_path_factory, parts, shard_size):
    folder = tmp_path_factory.mktemp("shards")
    whole = drawn(sum(parts), seed=shard_size)
    writer = PopulationWriter(folder, ARCH, PRIOR, shard_size)
    for part in cut(whole, parts):
        writer.add(part)
    writer.close()
    shards = list(Population.iter_shards(folder))
    assert same(Population.load(folder), whole) and same(Population.concat(shards), whole)
    if len(whole) <= shard_size:  # one shard: the population file Population.save writes
        assert sorted(p.name for p in folder.iterdir()) == [SINGLE_FILE]
        assert same(Population.load(folder / SINGLE_FILE), whole)
    else:
        index = json.loads((folder / SHARD_INDEX).read_text())
        assert [len(s) for s in shards] == [e["size"] for e in index["shards"]] and index["size"] == len(whole)
        assert all(len(s) == shard_size for s in shards[:-1]) and 0 < len(shards[-1]) <= shard_size
        assert not (folder / SINGLE_FILE).exists()


def test_a_writer_holds_at_most_one_shard(tmp_path):
    writer = PopulationWriter(tmp_path, ARCH, PRIOR, shard_size=10)
    for seed in range(30):
        writer.add(drawn(7, seed))
        assert len(writer.pending) <= 10
    writer.close()
    assert len(list(tmp_path.glob("population-*.pt"))) == 21  # 210 networks


def test_shards_default_to_64_mib():
    assert population_module.networks_per_shard(FCN(1000, (1000,))) == 2**26 // (4 * 1_002_001)
    assert population_module.networks_per_shard(FCN(100_000, (1000,))) == 1  # a network larger than a shard


def test_damaged_shard_folders_are_one_line_errors(tmp_path):
    writer = PopulationWriter(tmp_path, ARCH, PRIOR, shard_size=4)
    writer.add(drawn(10))
    writer.close()
    index = json.loads((tmp_path / SHARD_INDEX).read_text())
    index["shards"][1]["size"] = 3
    (tmp_path / SHARD_INDEX).write_text(json.dumps(index))
    with pytest.raises(TypicalnetsError, match="not the 3 networks"):
        Population.load(tmp_path)
    index["shards"][1] = {"file": "../elsewhere.pt", "size": 4}
    (tmp_path / SHARD_INDEX).write_text(json.dumps(index))
    with pytest.raises(TypicalnetsError, match="not a readable shard index"):
        Population.load(tmp_path)
    (tmp_path / SHARD_INDEX).write_text("{")
    with pytest.raises(TypicalnetsError, match="not a readable shard index"):
        Population.load(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TypicalnetsError, match="holds neither"):
        Population.load(tmp_path / "empty")


@given(rows=st.lists(st.integers(0, 40), max_size=5), width=st.integers(0, 9), signed=st.booleans())
def test_npy_rows_are_what_np_save_writes(tmp_path_factory, rows, width, signed):
    folder = tmp_path_factory.mktemp("npy")
    dtype = np.int8 if signed else np.float64
    whole = np.random.default_rng(len(rows)).integers(-1, 2, size=(sum(rows), width)).astype(dtype)
    writer = NpyRows(folder / "rows.npy", width, dtype)
    start = 0
    for size in rows:
        writer.add(whole[start : start + size])
        start += size
    writer.close()
    np.save(folder / "whole.npy", whole)
    assert (folder / "rows.npy").read_bytes() == (folder / "whole.npy").read_bytes()


def test_npy_rows_refuse_rows_of_another_width(tmp_path):
    writer = NpyRows(tmp_path / "rows.npy", 3)
    with pytest.raises(TypicalnetsError, match="width 3"):
        writer.add(np.zeros((2, 4), dtype=np.int8))
    writer.close()


def test_a_sampler_that_holds_its_samples_streams_them_once_at_the_end():
    """SMC is no StreamingSampler: its stream yields its samples as one chunk when it finishes, and its result
    holds them too."""
    q3 = QuantizedUniform.evenly_spaced(3)
    train = Dataset(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([1, -1, 1]))
    smc = SequentialMonteCarlo(FCN(3, (4,)), q3, train, particles=50)
    assert not isinstance(smc, StreamingSampler) and isinstance(
        GuessAndCheck(FCN(3, (4,)), q3, train), StreamingSampler
    )
    stream = iter_samples(smc, torch.Generator().manual_seed(0), 50, progress=False)
    (chunk,) = list(stream)
    assert stream.result.streamed == 0 and same(chunk, stream.result.population) and len(chunk) == 50
    sunk = []
    result = sample(smc, torch.Generator().manual_seed(0), 50, progress=False, sink=sunk.append)
    assert len(sunk) == 1 and same(sunk[0], result.population) and same(sunk[0], chunk)
