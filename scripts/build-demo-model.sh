#!/usr/bin/env bash
# Rebuild the built-in demo model end to end: EdgeScenes data, every training stage, export to a
# Q4_K_M bundle with int8 vision (as accurate as fp32 here, and half the size), the evaluation of
# checkpoint and bundle on held-out images, and everything committed about the built-in model: its
# "not sure" threshold (in the bundle's manifest), examples/README.md and the token-budget results.
#   scripts/build-demo-model.sh [WORK_DIR]
# About 80 minutes on 2 CPU cores (Intel Xeon, AVX-512): data 1 min, training 68 min (clip 11, lm 3.5,
# align 2.5, instruct 51), export and evaluations 3 min, the results 7 min.
# The bundle replaces edgelmm/models/demo; the figures land in WORK_DIR/eval-*.json.
set -euo pipefail
work="${1:-runs/demo-build}"
here="$(cd "$(dirname "$0")/.." && pwd)"
eval_json="$work/eval-data/eval.json"
edgelmm data synth --out "$work/data" --n-images 10000 --seed 0 -q
edgelmm data synth --out "$work/eval-data" --n-images 500 --seed 1 -q
edgelmm train recipe --preset demo --data "$work/data" --out "$work/train"
edgelmm export "$work/train/instruct/model" --out "$here/edgelmm/models/demo" --quant q4_k_m --vision int8 --force
edgelmm eval "$work/train/instruct/model" --data "$eval_json" --json "$work/eval-checkpoint.json" -q
edgelmm eval "$here/edgelmm/models/demo" --data "$eval_json" --json "$work/eval-bundle.json" -q
python "$here/benchmarks/confidence.py" --bundle "$here/edgelmm/models/demo" --data "$eval_json" --write
python "$here/scripts/example_answers.py"
python "$here/benchmarks/token_budget.py" accuracy --bundle "$here/edgelmm/models/demo" --data "$eval_json"
