#!/usr/bin/env bash
# The cpu course as a learner runs it, timed, then the README's table of its results with their
# seed-to-seed spread: notebooks 01-07 executed in order in the cpu profile (seed 0), then seeds 1
# and 2 of every model trained by `segkit train` into the same course, then one table.
# About 40 minutes on 2 cores; the course alone is meant to take at most 15. With FP32=1 (for a CPU
# with native bf16, where the course trains in bf16), seeds 0-2 of every model are trained again in
# fp32 (--amp off) into HOME/fp32, and their spread printed beside the bf16 one: 35 minutes more.
# Then every best checkpoint is scored by the official protocol too (full-resolution labels: whole
# frame, sliding windows, with flip), beside the proxy the training curves show (NO_PROTOCOL=1 skips).
# Usage: bash scripts/cpu-course.sh [HOME]   (HOME: the course's folder, default a new temporary one)
#        SEEDS_ONLY=1 skips the notebooks (they ran in HOME already).
set -euo pipefail
cd "$(dirname "$0")/.."
home=${1:-$(mktemp -d)}
export SEGKIT_HOME=$home SEGKIT_PROFILE=cpu TQDM_DISABLE=1
lscpu | grep -m1 'Model name'
echo "course folder: $home"
started=$(date +%s)
for notebook in notebooks/0*.ipynb; do
    [ -n "${SEEDS_ONLY:-}" ] && break  # the course ran already in HOME
    jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=1800 \
        --output-dir "$home/executed" "$notebook" 2>&1 | grep -v '^\[NbConvertApp\] Writing'
    echo "$(basename "$notebook"): done after $(( $(date +%s) - started )) s"
done
echo "course 01-07: $(( $(date +%s) - started )) s"
data=$(python -c "from segkit.course import setup; print(setup().data)" | tail -n 1)
train_seeds() {  # train_seeds FOLDER SEEDS [FLAGS]: every model at each seed into FOLDER
    local folder=$1 seeds=$2
    shift 2
    for seed in $seeds; do
        for model in my_fcn unet deeplabv3plus; do
            out="$folder/$model-seed$seed"
            offline=()  # as the course does: DeepLab goes on from random weights without the download
            [ "$model" = deeplabv3plus ] && offline=(--allow-random-init)
            python -m segkit train -m "$model" --seed "$seed" --data "$data" "${offline[@]}" "$@" \
                --out "$out" --log-dir "$out/tensorboard" --quiet | tail -n 2
        done
    done
}
train_seeds "$home/runs/course-cpu" "1 2"
if [ -n "${FP32:-}" ]; then
    train_seeds "$home/fp32" "0 1 2" --amp off
fi
python - <<'EOF'
import os
from pathlib import Path

from segkit.course import best_epoch, best_model, seed_runs, seed_spread, setup
from segkit.run import read_record

course = setup()
names = ("my_fcn", "unet", "deeplabv3plus")
seeds = {name: seed_runs(course, name) for name in names}
print(seed_spread(seeds).round(3).to_string())
print(best_model(seeds)[1])
fp32_folder = Path(os.environ["SEGKIT_HOME"], "fp32")
fp32 = {name: [record for seed in range(3)
               if (record := read_record(fp32_folder / f"{name}-seed{seed}")) is not None]
        for name in names}
if any(fp32.values()):
    print("fp32 (--amp off), the same budget:")
    print(seed_spread(fp32).round(3).to_string())
for records in [*seeds.values(), *fp32.values()]:
    for record in records:
        best = best_epoch(record)
        print(f"{record['config']['model']} seed {record['config']['seed']}: best mIoU {best['val_miou']:.3f} (epoch "
              f"{best['epoch']}), {record['plan']['total_steps'] if record['plan'] else '-'} steps, "
              f"{len(record['history'])} epochs, {record['images_seen']} images, "
              f"{record['train_seconds']:.0f} s, {record['img_per_s']:.1f} img/s {record['precision']}, "
              f"channels_last {record['config']['channels_last']}")
EOF
if [ -z "${NO_PROTOCOL:-}" ]; then  # every best.pt of the course on full-resolution labels too
    python - <<'EOF'
from segkit.checkpoints import model_from_checkpoint
from segkit.config import TrainConfig
from segkit.course import setup
from segkit.inference import compare_protocols

course = setup()
print("mIoU of each best.pt: proxy (labels resized to the validation size) | whole frame | slide | "
      "slide + flip (full-resolution labels)")
for seed in (0, 1, 2):
    for name in ("my_fcn", "unet", "deeplabv3plus"):
        model, saved = model_from_checkpoint(course.run_dir(name, seed) / "best.pt", course.device)
        config = TrainConfig.from_dict(saved["config"])
        table = compare_protocols(model, config, course.data, device=course.device, stride=config.size)
        print(f"{name:>14} seed {seed}: "
              + " | ".join(f"{table.loc[row, 'mIoU']:.3f}" for row in ("proxy", "whole", "slide", "slide + flip")))
EOF
fi
