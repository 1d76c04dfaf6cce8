#!/usr/bin/env bash
# Sets up revisit in ./.venv on a fresh machine (Python 3.11+). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,arcface,distributed,service]"
# The dashboard's chart library (Chart.js, MIT) from the npm registry, served offline from
# /static/vendor with its licence; without npm the dashboard shows its tables only.
web=src/revisit/web
if command -v npm >/dev/null; then
  (cd "$web" && npm ci --no-audit --no-fund --silent)
  mkdir -p "$web/static/vendor"
  cp "$web/node_modules/chart.js/dist/chart.umd.js" "$web/static/vendor/chart.umd.js"
  cp "$web/node_modules/chart.js/LICENSE.md" "$web/static/vendor/chart.js.LICENSE.md"
  # the bundle includes @kurkle/color (MIT)
  cp "$web/node_modules/@kurkle/color/LICENSE.md" "$web/static/vendor/kurkle-color.LICENSE.md"
else
  echo "npm not found: the dashboard's charts need it at set-up (apt-get install npm)" >&2
fi
echo "revisit installed in .venv (run: .venv/bin/revisit --help)"
