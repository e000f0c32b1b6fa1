#!/usr/bin/env bash
# The device check for a lent GPU: CUDA correctness tests (the PyTorch engine and the CUDA kernel
# against the baseline and the C kernel), then the throughput benchmark (the CUDA kernel is the
# `native` row).
# Usage (repository root, on the GPU machine): bash benchmarks/gpu_check.sh [OUTPUT_DIR]
set -u
out="${1:-${OUT:-/tmp}}"
export PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
nvcc --version | tail -1
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_fast.py tests/test_gc.py 2>&1 | tail -6
timeout 240 python3 benchmarks/gc_throughput.py --device cuda --seconds 3 --json | tee "$out/gc_throughput_cuda.jsonl"
timeout 120 python3 benchmarks/gc_throughput.py --device cuda --seconds 2 --cases lenet-w0.5 --n 16 --ablations
