#!/usr/bin/env bash
# Every GPU check in one short run (a few minutes): the CUDA acceptance tests, then the GPU benchmark
# (the laptop profile under a 6 GiB cap: img/s, measured against planned memory, loader vs step rate).
# Usage, from the repository root with segkit installed: bash scripts/gpu-check.sh [OUT_DIR]
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
python -m pytest -m cuda -p no:cacheprovider -o addopts="-ra" tests/test_cuda.py 2>&1 | tee "$out/pytest-cuda.log"
tests=${PIPESTATUS[0]}
python -m segkit bench gpu --json 2>&1 | tee "$out/bench-gpu.log"
bench=${PIPESTATUS[0]}
python -m segkit plan --profile laptop --gpu-memory 6 2>&1 | tee "$out/plan-laptop.log"
echo "pytest -m cuda exit $tests, bench gpu exit $bench"
exit $(( tests || bench ))
