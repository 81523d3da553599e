#!/usr/bin/env bash
# The cpu course as a learner runs it, timed, then the README's table of its results with their
# seed-to-seed spread: notebooks 01-07 executed in order in the cpu profile (seed 0), then seeds 1
# and 2 of every model trained by `segkit train` into the same course, then one table.
# About 45 minutes on 2 cores; the course alone is meant to take at most 15.
# Usage: bash scripts/cpu-course.sh [HOME]   (HOME: the course's folder, default a new temporary one)
set -euo pipefail
cd "$(dirname "$0")/.."
home=${1:-$(mktemp -d)}
export SEGKIT_HOME=$home SEGKIT_PROFILE=cpu TQDM_DISABLE=1
lscpu | grep -m1 'Model name'
echo "course folder: $home"
started=$(date +%s)
for notebook in notebooks/0*.ipynb; do
    jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=1800 \
        --output-dir "$home/executed" "$notebook" 2>&1 | grep -v '^\[NbConvertApp\] Writing'
    echo "$(basename "$notebook"): done after $(( $(date +%s) - started )) s"
done
echo "course 01-07: $(( $(date +%s) - started )) s"
data=$(python -c "from segkit.course import setup; print(setup().data)" | tail -n 1)
for seed in 1 2; do
    for model in my_fcn unet deeplabv3plus; do
        out="$home/runs/course-cpu/$model-seed$seed"
        python -m segkit train -m "$model" --seed "$seed" --data "$data" --allow-random-init \
            --out "$out" --log-dir "$out/tensorboard" --quiet | tail -n 2
    done
done
python - <<'EOF'
from segkit.course import best_epoch, best_model, seed_runs, seed_spread, setup

course = setup()
seeds = {name: seed_runs(course, name) for name in ("my_fcn", "unet", "deeplabv3plus")}
print(seed_spread(seeds).round(3).to_string())
print(best_model(seeds)[1])
for name, records in seeds.items():
    for record in records:
        best = best_epoch(record)
        print(f"{name} seed {record['config']['seed']}: best mIoU {best['val_miou']:.3f} (epoch "
              f"{best['epoch']}), {record['plan']['total_steps'] if record['plan'] else '-'} steps, "
              f"{len(record['history'])} epochs, {record['images_seen']} images, "
              f"{record['train_seconds']:.0f} s, {record['img_per_s']:.1f} img/s {record['precision']}, "
              f"channels_last {record['config']['channels_last']}")
EOF
