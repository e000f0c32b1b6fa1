"""Checks of what a run asks of the machine, made before any work: the device, the seed and memory.

Each raises a one-line ``TypicalnetsError`` naming the parameter and the fix, so that a run that
cannot finish fails at once instead of after its sampling (or with a traceback from deep inside
torch or numpy).
"""

from __future__ import annotations

import os

import torch

from typicalnets.errors import TypicalnetsError

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed and the derived cell seeds take 63-bit seeds
MAX_PARAMS = 2**31 - 1  # the kernels index one network's parameters with 32-bit integers
# Share of the machine's available memory that one run may plan to hold (the rest is torch,
# Python, the data and the operating system).
MEMORY_SHARE = 0.8
GIB = 2**30


def check_seed(seed: object, name: str = "seed") -> int:
    """``seed`` as an int in [0, 2^63 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypicalnetsError(f"{name} must be an integer, got {seed!r}; pass e.g. {name}=0")
    if not 0 <= seed <= MAX_SEED:
        raise TypicalnetsError(f"{name} = {seed} is outside 0 to 2^63 - 1; pass a smaller non-negative seed")
    return seed


def check_device(device: object, name: str = "device") -> str:
    """``device`` as a torch device string that exists here: "cpu", "cuda" or "cuda:N"."""
    text = str(device).strip().lower()
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise TypicalnetsError(f"{name} {device!r} is not a device; use cpu or cuda") from None
    if parsed.type == "cpu":
        return "cpu"
    if parsed.type != "cuda":
        raise TypicalnetsError(f"{name} {device!r} is not supported; use cpu or cuda")
    if not torch.cuda.is_available():
        raise TypicalnetsError(f"{name} {device!r} but no CUDA device is available; use cpu")
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise TypicalnetsError(
            f"{name} {device!r} does not exist (this machine has cuda:0 to cuda:{count - 1}); use one of those"
        )
    return text


def available_memory() -> int:
    """Bytes of memory available to a new allocation: MemAvailable on Linux, else physical memory."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 1 << 62  # unknown: do not refuse


def check_memory(
    num_params: int,
    networks: int,
    what: str,
    copies: int = 1,
    fix: str = "lower it or the widths",
    bytes_per_value: int = 4,
) -> None:
    """Refuse a run that must hold ``networks`` x ``copies`` parameter vectors of ``num_params``
    values at once when that exceeds MEMORY_SHARE of the available memory (or a network exceeds
    MAX_PARAMS). ``what`` names the networks, e.g. "count = 100 networks"."""
    if num_params > MAX_PARAMS:
        raise TypicalnetsError(
            f"one network has {num_params:,} parameters, more than the {MAX_PARAMS:,} "
            "typicalnets supports; use smaller widths"
        )
    check_memory_bytes(
        num_params * networks * copies * bytes_per_value, f"{what} of {num_params:,} parameters each", fix
    )


def check_memory_bytes(need: int, what: str, fix: str) -> None:
    """Refuse to plan ``need`` bytes when that exceeds MEMORY_SHARE of the available memory."""
    have = available_memory()
    if need > MEMORY_SHARE * have:
        raise TypicalnetsError(
            f"{what} need about {need / GIB:.1f} GiB, but this machine has {have / GIB:.1f} GiB available; {fix}"
        )
