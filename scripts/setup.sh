#!/usr/bin/env bash
# Sets up revisit in ./.venv on a fresh machine (Python 3.11+). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,arcface,distributed,service]"
echo "revisit installed in .venv (run: .venv/bin/revisit --help)"
