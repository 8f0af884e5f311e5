#!/usr/bin/env bash
# Full-pipeline evaluation of every shipped model on the val split; fails when the default verdict
# (the fitted ensemble) or any model falls more than 0.02 AUC below what its card recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
manifest="${1:-../shared/data/manifest.csv}"
results="$(mktemp --suffix=.json)"
trap 'rm -f "$results"' EXIT
.venv/bin/python -m core evaluate "$manifest" --split val --models all --out "$results"
.venv/bin/python -m core models check-quality "$results"
