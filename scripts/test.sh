#!/usr/bin/env bash
# The test command (README and CI run exactly this). Starts the local services the
# integration tests need when they are installed but not running; tests of a service
# that is not installed are skipped with a message saying how to get it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh || true
exec .venv/bin/python -m pytest -q "$@"
