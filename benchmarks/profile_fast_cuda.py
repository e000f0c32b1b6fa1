"""Profile one early-rejection check of the PyTorch fast engine on CUDA (grouped vs im2col convs)."""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "benchmarks")
from gc_throughput import mnist_shaped  # noqa: E402

from typicalnets.fast import FastChecker, draw_fast  # noqa: E402
from typicalnets.nets import LeNet  # noqa: E402
from typicalnets.priors import Uniform  # noqa: E402

arch, data = LeNet.with_width_factor(0.5), mnist_shaped(16)
gen = torch.Generator(device="cuda").manual_seed(0)
population = draw_fast(arch, Uniform(1.0), 65536, gen)
for grouped in (False, True):
    checker = FastChecker(arch, data, device="cuda", grouped=grouped)
    checker.check(population)
    torch.cuda.synchronize()
    start = time.perf_counter()
    accepted, stats = checker.check(population)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    print(f"grouped={grouped}: {65536 / elapsed:,.0f} nets/s, {stats}")
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    FastChecker(arch, data, device="cuda", grouped=False).check(population)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=40))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=8, max_name_column_width=40))
