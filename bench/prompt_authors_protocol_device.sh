#!/usr/bin/env bash
# The authors' prompt protocol on a GPU machine (16 cores, one large GPU): one process per data seed, all
# sharing the GPU, then one report. Each process gets its own Prefect home and MLflow store (no shared
# sqlite between processes).
#   bash bench/prompt_authors_protocol_device.sh [N] [task model] [seeds...]     e.g. 12000 prefix_lm 13 21 42 87 100
#   BENCH_FLAGS=--smoke bash bench/prompt_authors_protocol_device.sh 4 prototype 13 21   # tiny models, the CPU
set -euo pipefail
steps=${1:-12000}; model=${2:-prefix_lm}; shift $(( $# < 2 ? $# : 2 )); seeds=${*:-13 21 42 87 100}
root=${ROOT:-runs/bench/prompt_authors_protocol_device}; python=${PYTHON:-python}
for seed in $seeds; do
  dir="$root/seed-$seed"; mkdir -p "$dir"
  PREFECT_HOME="$dir/.prefect" MLFLOW_TRACKING_URI="sqlite:///$PWD/$dir/mlflow.db" \
    $python -m bench.prompt_authors_protocol ${BENCH_FLAGS:-} --steps "$steps" --task-model "$model" \
      --seeds "$seed" --threads 1 --root "$dir" --no-report > "$dir/log.txt" 2>&1 &
done
wait
$python -m bench.prompt_authors_protocol ${BENCH_FLAGS:-} --steps "$steps" --task-model "$model" --seeds $seeds \
  --root "$root" --merge "$root"/seed-*/results-*-N"$steps".json
