#!/usr/bin/env bash
# Full-pipeline evaluation of the shipped models on the val split; fails when the ensemble's AUC
# falls more than 0.02 below the value recorded in the model cards.
set -euo pipefail
cd "$(dirname "$0")/.."
manifest="${1:-../shared/data/manifest.csv}"
results="$(mktemp --suffix=.json)"
trap 'rm -f "$results"' EXIT
.venv/bin/python -m core evaluate "$manifest" --split val --out "$results"
.venv/bin/python -m core models check-quality "$results"
