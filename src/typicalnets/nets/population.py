"""Populations: M networks of one architecture held as stacked tensors (leading dimension M).

A population is saved as one torch file (``Population.save``). Networks that arrive one batch at a
time, more than fit in memory, are saved by a ``PopulationWriter``: as that one file
(``population.pt``) while they fit in one shard, else as shards ``population-00000.pt``, ... (each a
saved population) listed in ``population-shards.json``. ``Population.load`` reads a file or such a
folder whole; ``Population.iter_shards`` reads a folder one shard at a time.
"""

from __future__ import annotations

import json
import math
import operator
import os
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from typicalnets.errors import TypicalnetsError
from typicalnets.nets.base import Architecture
from typicalnets.priors import Prior, prior_from_dict

FORMAT = "typicalnets.population"
FORMAT_VERSION = 1
# Networks and examples per forward chunk: at most ~1M (network, example) pairs live at once.
DEFAULT_CHUNK = 1024
SINGLE_FILE = "population.pt"  # what a PopulationWriter writes while its networks fit in one shard
SHARD_INDEX = "population-shards.json"
SHARD_FORMAT = "typicalnets.population-shards"
# Parameter bytes per shard at most: a writer holds one shard (64 MiB), a reader of shards one at a time.
SHARD_BYTES = 1 << 26


def split_flat(arch: Architecture, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of a (M, P) tensor, one row of all P parameters per network, as named (M, *shape) tensors."""
    params, start = {}, 0
    for name, shape in arch.param_shapes().items():
        size = math.prod(shape)
        params[name] = flat[:, start : start + size].reshape(len(flat), *shape)
        start += size
    return params


class Population:
    """M networks of ``arch`` whose parameters were drawn from ``prior``.

    ``params[name]`` has shape (M, *arch.param_shapes()[name]). Indexing with an int, a slice, a
    boolean mask or an index tensor returns a new Population; ``Population.concat`` joins several.
    """

    def __init__(self, arch: Architecture, prior: Prior, params: dict[str, torch.Tensor]):
        shapes = arch.param_shapes()
        if set(params) != set(shapes):
            raise TypicalnetsError(
                f"parameters {sorted(params)} do not match the {arch.describe()} parameters {sorted(shapes)}; save "
                "the population with this architecture"
            )
        sizes = {t.shape[0] for t in params.values()}
        if len(sizes) != 1:
            raise TypicalnetsError(
                f"parameter tensors disagree on the population size: {sorted(sizes)}; stack the same number of "
                "networks in each"
            )
        for name, shape in shapes.items():
            if tuple(params[name].shape[1:]) != shape:
                raise TypicalnetsError(
                    f"parameter {name} has shape {tuple(params[name].shape[1:])}, expected {shape}; give parameters "
                    "of the architecture's shapes"
                )
        self.arch = arch
        self.prior = prior
        self.params = {name: params[name] for name in shapes}  # the architecture's order

    @classmethod
    def draw(
        cls,
        arch: Architecture,
        prior: Prior,
        size: int,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Population:
        """Draw ``size`` networks with every parameter i.i.d. from ``prior``."""
        device = generator.device if device is None else device
        params = {
            name: prior.sample((size, *shape), generator, dtype=dtype, device=device)
            for name, shape in arch.param_shapes().items()
        }
        return cls(arch, prior, params)

    @classmethod
    def empty(cls, arch: Architecture, prior: Prior, dtype: torch.dtype = torch.float32, device="cpu") -> Population:
        shapes = arch.param_shapes().items()
        return cls(arch, prior, {name: torch.empty(0, *shape, dtype=dtype, device=device) for name, shape in shapes})

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def __getitem__(self, index: int | slice | torch.Tensor | Sequence[int]) -> Population:
        if getattr(index, "ndim", None) == 0 or (isinstance(index, int) and not isinstance(index, bool)):
            position = operator.index(index)
            if not -len(self) <= position < len(self):
                raise IndexError(f"network {position} is out of range for a population of {len(self)}")
            position %= len(self)
            index = slice(position, position + 1)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, device=self.device)
            if index.numel() == 0 and index.dtype != torch.bool:
                index = index.long()
        return Population(self.arch, self.prior, {k: v[index] for k, v in self.params.items()})

    @staticmethod
    def concat(populations: Sequence[Population]) -> Population:
        if not populations:
            raise TypicalnetsError("cannot concatenate an empty list of populations; pass at least one")
        first = populations[0]
        for other in populations[1:]:
            if other.arch != first.arch or other.prior != first.prior:
                raise TypicalnetsError(
                    f"cannot concatenate {other.arch.describe()} with {first.arch.describe()}: architectures or "
                    "priors differ; concatenate populations of one kind"
                )
        params = {name: torch.cat([p.params[name] for p in populations]) for name in first.params}
        return Population(first.arch, first.prior, params)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Population:
        return Population(self.arch, self.prior, {k: v.to(device=device, dtype=dtype) for k, v in self.params.items()})

    def forward(self, x: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Outputs f, shape (M, n), computed in chunks of networks to bound memory."""
        self.arch.check_input(x)
        x = x.to(self.device)
        outs = [
            self.arch.forward({k: v[start : start + chunk_size] for k, v in self.params.items()}, x)
            for start in range(0, len(self), chunk_size)
        ]
        return torch.cat(outs) if outs else torch.empty(0, x.shape[0], device=self.device, dtype=self.dtype)

    def predict(self, x: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """sign(f) as int8 of shape (M, n): +1, -1, or 0 where f = 0 exactly (always a mistake)."""
        return torch.sign(self.forward(x, chunk_size)).to(torch.int8)

    def mistakes(self, x: torch.Tensor, y: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Per-network count of misclassified examples (f = 0 counts as a mistake), shape (M,)."""
        y = y.to(self.device, torch.int8)
        counts = [
            (self.predict(x[start : start + chunk_size], chunk_size) != y[start : start + chunk_size]).sum(dim=1)
            for start in range(0, x.shape[0], chunk_size)
        ]
        return torch.stack(counts).sum(0) if counts else torch.zeros(len(self), dtype=torch.long, device=self.device)

    def errors(self, x: torch.Tensor, y: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Per-network 0-1 error rate on (x, y), shape (M,), float64."""
        return self.mistakes(x, y, chunk_size).double() / max(int(x.shape[0]), 1)

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "arch": self.arch.to_dict(),
            "prior": self.prior.to_dict(),
            "size": len(self),
            "dtype": str(self.dtype).removeprefix("torch."),
            "params": {name: list(shape) for name, shape in self.arch.param_shapes().items()},
        }

    def save(self, path: str | os.PathLike) -> None:
        """Save to ``path`` (a torch file whose ``header`` describes architecture and prior)."""
        payload = {
            "header": self.header(),
            "params": {k: v.detach().cpu().contiguous() for k, v in self.params.items()},
        }
        torch.save(payload, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> Population:
        """The population saved at ``path``: a file of ``save``, or a folder of a ``PopulationWriter`` (such as
        the output of ``typicalnets sample``), whose shards are joined (``iter_shards`` reads them one by one)."""
        from typicalnets.nets import arch_from_dict

        path = Path(path)
        if path.is_dir():
            return Population.concat(list(cls.iter_shards(path, device)))
        if not path.is_file():
            raise TypicalnetsError(f"population file {path} does not exist; give the path of a saved population")
        try:
            payload = torch.load(path, map_location=device, weights_only=True)
            header = payload["header"]
            if header.get("format") != FORMAT:
                raise ValueError("wrong format tag")
            arch = arch_from_dict(header["arch"])
            prior = prior_from_dict(header["prior"])
            return cls(arch, prior, dict(payload["params"]))
        except TypicalnetsError:
            raise
        except Exception as exc:  # any unpickling or schema failure means the file is not usable
            raise TypicalnetsError(
                f"{path} is not a readable typicalnets population ({type(exc).__name__}); re-create it with "
                "`typicalnets sample`"
            ) from None

    @classmethod
    def iter_shards(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> Iterator[Population]:
        """The networks saved at ``path`` one shard at a time, in order: a folder's ``population.pt`` or the shards
        its ``population-shards.json`` lists (each checked against the index), or a population file."""
        path = Path(path)
        if not path.is_dir() or (path / SINGLE_FILE).is_file():
            yield cls.load(path / SINGLE_FILE if path.is_dir() else path, device)
            return
        index = _read_index(path)
        for entry in index["shards"]:
            shard = cls.load(path / entry["file"], device)
            header = shard.header()
            if (len(shard), header["arch"], header["prior"]) != (entry["size"], index["arch"], index["prior"]):
                raise TypicalnetsError(
                    f"shard {entry['file']} in {path} holds {len(shard)} {shard.arch.describe()} networks, not the "
                    f"{entry['size']} networks {SHARD_INDEX} lists; re-create the folder with `typicalnets sample`"
                )
            yield shard

    def __repr__(self) -> str:
        return f"Population({self.arch.describe()}, prior={self.prior.spec()}, size={len(self)})"


def _read_index(folder: Path) -> dict[str, Any]:
    """A folder's shard index, checked to list shards as a PopulationWriter writes them."""
    path = folder / SHARD_INDEX
    if not path.is_file():
        raise TypicalnetsError(
            f"folder {folder} holds neither {SINGLE_FILE} nor {SHARD_INDEX}; give a folder that `typicalnets sample` "
            "wrote, or a population file"
        )
    try:
        index = json.loads(path.read_text())
        if index.get("format") != SHARD_FORMAT:
            raise ValueError("wrong format tag")
        for entry in index["shards"]:
            if Path(entry["file"]).name != entry["file"] or not isinstance(entry["size"], int):
                raise ValueError("a shard outside the folder, or without a size")
        return index
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TypicalnetsError(
            f"{path} is not a readable shard index ({type(exc).__name__}); re-create the folder with "
            "`typicalnets sample`"
        ) from None


def networks_per_shard(arch: Architecture, bytes_per_value: int = 4) -> int:
    """Networks of ``arch`` in one shard: SHARD_BYTES of parameters, and at least one network."""
    return max(1, SHARD_BYTES // (arch.num_params() * bytes_per_value))


class Blocks:
    """Parts that arrive one by one (populations, or anything with ``len`` and slices), taken off the front in
    blocks of a given number of networks. ``take`` returns a block's parts as views, so each network is copied
    once, where its block is joined, however the parts were cut."""

    def __init__(self) -> None:
        self.parts: deque = deque()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, part: Any) -> None:
        if len(part):
            self.parts.append(part)
            self.size += len(part)

    def take(self, size: int) -> list:
        """The parts of the next ``size`` networks (fewer if fewer are held), in order."""
        block, wanted = [], min(size, self.size)
        self.size -= wanted
        while wanted:
            part = self.parts.popleft()
            if len(part) > wanted:
                self.parts.appendleft(part[wanted:])
                part = part[:wanted]
            block.append(part)
            wanted -= len(part)
        return block


class PopulationWriter:
    """Saves networks of ``arch`` into ``folder`` as they come (``add``, then ``close``), holding at most one shard
    of ``shard_size`` networks (by default ``networks_per_shard``): all of them as ``population.pt`` if they fit in
    one shard (exactly what ``Population.save`` writes), else as shards ``population-00000.pt``, ... of
    ``shard_size`` networks each (the last one shorter), in order, listed with their sizes in
    ``population-shards.json``."""

    def __init__(self, folder: Path, arch: Architecture, prior: Prior, shard_size: int | None = None):
        self.folder, self.arch, self.prior = Path(folder), arch, prior
        self.shard_size = shard_size or networks_per_shard(arch)
        self.pending = Blocks()
        self.shards: list[dict[str, Any]] = []
        self.header: dict[str, Any] = {}  # the first shard's, which the index repeats

    def add(self, population: Population) -> None:
        self.pending.add(population.to("cpu"))
        while len(self.pending) > self.shard_size:  # more than one shard: the networks go to shard files
            self._save_shard()

    def close(self) -> None:
        """Save what is held: ``population.pt`` if no shard was needed, else the last shard and the index."""
        if not self.shards:
            parts = self.pending.take(len(self.pending))
            whole = Population.concat(parts) if parts else Population.empty(self.arch, self.prior)
            whole.save(self.folder / SINGLE_FILE)
            return
        if len(self.pending):
            self._save_shard()
        index = {
            **self.header,
            "format": SHARD_FORMAT,
            "size": sum(entry["size"] for entry in self.shards),
            "shards": self.shards,
        }
        (self.folder / SHARD_INDEX).write_text(json.dumps(index, indent=2) + "\n")

    def _save_shard(self) -> None:
        shard = Population.concat(self.pending.take(self.shard_size))
        name = f"population-{len(self.shards):05d}.pt"
        shard.save(self.folder / name)
        self.header = self.header or shard.header()
        self.shards.append({"file": name, "size": len(shard)})
