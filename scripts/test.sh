#!/usr/bin/env bash
# Installs what the tests need (Python packages into .venv, Debian's Chromium) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
