#!/usr/bin/env bash
# The test command (README and CI run exactly this). Starts the local services the
# integration tests need when they are installed but not running; tests of a service
# that is not installed are skipped with a message saying how to get it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh || true
# Test files run in parallel, up to 4 at once (one per core): each file stays on one worker
# (--dist loadfile), so a module's fixtures start once; every worker has its own Redis,
# Kafka broker, PostgreSQL schemas and temp dirs. REVISIT_TEST_WORKERS=0 runs them in this
# process (one at a time), as does -n 0 given to this script.
workers=${REVISIT_TEST_WORKERS:-$(.venv/bin/python -c "import os; print(min(4, len(os.sched_getaffinity(0))))")}
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile "$@"
