#!/usr/bin/env bash
# Creates .venv and installs what the app (or, with --dev, the tests) need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=requirements.txt
[ "${1:-}" = "--dev" ] && requirements=requirements-dev.txt
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r "$requirements"
if [ "$requirements" = requirements-dev.txt ] && ! [ -x /usr/bin/chromium ]; then
  # Browser tests drive Debian's Chromium; playwright cannot download its own browser offline.
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
