#!/usr/bin/env bash
# The candidate encoder of benchmarks/interactive.py's "allmodal" method: the built-in encoder
# pre-trained further with Barlow Twins on every modality of ../shared/data (fluorescence, phase
# contrast, bright field, FIB/SEM, serial-section EM). Of each labelled set only the file the
# painting loop paints is used (never a test file); each of those single frames is listed 15
# times, so the five new modalities make a quarter of the planes beside the built-in's 225.
#   bash scripts/pretrain_allmodal.sh [DATA] [OUT]     (about 16 min on one idle core)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="${1:-$ROOT/../shared/data}"
OUT="${2:-$ROOT/runs/allmodal.safetensors}"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
for f in "$DATA"/unlabelled/*; do ln -s "$f" "$DIR/"; done
ln -s "$DATA/cells3d/nuclei.tif" "$DIR/cells3d_nuclei.tif"
ln -s "$DATA/cho_3dt/stack.tif" "$DIR/cho_stack.tif"
for i in $(seq -w 1 15); do
  ln -s "$DATA/phc_psc/images/t000.tif" "$DIR/phc_psc_t000_$i.tif"
  ln -s "$DATA/bsubtilis_bf/images/t000.tif" "$DIR/bsubtilis_t000_$i.tif"
  ln -s "$DATA/mothermachine_phase/images/pos01_t001.tif" "$DIR/mothermachine_t001_$i.tif"
  ln -s "$DATA/fibsem_classes/images/image.tif" "$DIR/fibsem_$i.tif"
  ln -s "$DATA/cremi_em/images/z004.tif" "$DIR/cremi_$i.tif"
done
mkdir -p "$(dirname "$OUT")"
OMP_NUM_THREADS=1 "$ROOT/.venv/bin/btunet" pretrain "$DIR" --resume builtin --epochs 200 --threads 1 --seed 0 \
  --out "$OUT"
