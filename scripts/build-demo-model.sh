#!/usr/bin/env bash
# Rebuild the built-in demo model end to end: EdgeScenes data, every training stage, export to a
# Q4_K_M bundle with int8 vision (as accurate as fp32 here, and half the size), and the evaluation of
# checkpoint and bundle on held-out images.
#   scripts/build-demo-model.sh [WORK_DIR]      (about an hour on 2 CPU cores: data 2 min, training 57 min, export and evals 4 min)
# The bundle replaces edgelmm/models/demo; the figures land in WORK_DIR/eval-*.json.
set -euo pipefail
work="${1:-runs/demo-build}"
here="$(cd "$(dirname "$0")/.." && pwd)"
edgelmm data synth --out "$work/data" --n-images 10000 --seed 0 -q
edgelmm data synth --out "$work/eval-data" --n-images 500 --seed 1 -q
edgelmm train recipe --preset demo --data "$work/data" --out "$work/train"
edgelmm export "$work/train/instruct/model" --out "$here/edgelmm/models/demo" --quant q4_k_m --vision int8 --force
edgelmm eval "$work/train/instruct/model" --data "$work/eval-data/eval.json" --json "$work/eval-checkpoint.json" -q
edgelmm eval "$here/edgelmm/models/demo" --data "$work/eval-data/eval.json" --json "$work/eval-bundle.json" -q
