#!/usr/bin/env bash
# Every GPU check in one short run (a few minutes on one GPU): the CUDA acceptance tests of
# tests/test_cuda.py, whose memory test also measures the laptop profile under a 6 GiB card
# imitated (img/s, peak measured against planned, loader against step rate) and keeps those figures.
# Usage, from the repository root with segkit installed: bash scripts/gpu-check.sh [OUT_DIR]
# Writes OUT_DIR (default gpu-check/): gpu.txt (card, driver, torch), pytest-cuda.log, and
# gpu-figures.json, the figures README's GPU tables are filled from (segkit bench gpu's, per model,
# and segkit plan --profile laptop's rows).
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
SEGKIT_FIGURES="$out" python -m pytest -m cuda -p no:cacheprovider -o addopts="-ra" --durations=0 \
    tests/test_cuda.py 2>&1 | tee "$out/pytest-cuda.log"
tests=${PIPESTATUS[0]}
if [ -f "$out/gpu-figures.json" ]; then figures="$out/gpu-figures.json"; else figures="none written"; fi
echo "pytest -m cuda exit $tests; figures: $figures"
exit "$tests"
