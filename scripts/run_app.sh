#!/usr/bin/env bash
# Installs what the app needs into .venv and starts it on the models shipped in models/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/streamlit run streamlit_app.py "$@"
