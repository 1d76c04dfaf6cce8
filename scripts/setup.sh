#!/usr/bin/env bash
# Sets up revisit in ./.venv on a fresh machine (Python 3.11+). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,arcface,distributed,service]"
# Browser libraries from the npm registry, served offline from /static/vendor with their
# licences: the dashboard's charts (Chart.js, MIT) and the API docs page /docs (Swagger UI,
# Apache-2.0). Without npm the dashboard shows its tables only and /docs links the schema.
# --ignore-scripts: no package runs code at install (swagger-ui-dist's telemetry helper).
web=src/revisit/web
if command -v npm >/dev/null; then
  (cd "$web" && npm ci --ignore-scripts --no-audit --no-fund --silent)
  mkdir -p "$web/static/vendor"
  cp "$web/node_modules/chart.js/dist/chart.umd.js" "$web/static/vendor/chart.umd.js"
  cp "$web/node_modules/chart.js/LICENSE.md" "$web/static/vendor/chart.js.LICENSE.md"
  # the bundle includes @kurkle/color (MIT)
  cp "$web/node_modules/@kurkle/color/LICENSE.md" "$web/static/vendor/kurkle-color.LICENSE.md"
  for f in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css \
           favicon-32x32.png LICENSE NOTICE; do
    [ -f "$web/node_modules/swagger-ui-dist/$f" ] || continue
    case $f in LICENSE|NOTICE) dest="swagger-ui.$f" ;; *) dest=$f ;; esac
    cp "$web/node_modules/swagger-ui-dist/$f" "$web/static/vendor/$dest"
  done
else
  echo "npm not found: the dashboard's charts and /docs need it at set-up (apt-get install npm)" >&2
fi
echo "revisit installed in .venv (run: .venv/bin/revisit --help)"
