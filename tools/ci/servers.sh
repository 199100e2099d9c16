#!/usr/bin/env bash
# Redis at $REDIS_URL and PostgreSQL at $DATABASE_URL: each is started (this machine's Debian packages) when it does
# not answer, then waited for. On GitHub Actions they are service containers, already up: this only checks them.
#   bash tools/ci/servers.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/ci/lib.sh

# up URL: can a TCP connection be opened to the URL's host and port?
up() { python3 - "$1" <<'PY'
import socket, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
try: socket.create_connection((u.hostname or "127.0.0.1", u.port or {"redis": 6379, "rediss": 6380}.get(u.scheme, 5432)), timeout=2).close()
except OSError: sys.exit(1)
PY
}
wait_up() { local i; for i in $(seq 30); do up "$1" && return; sleep 1; done; echo "$1 did not come up" >&2; return 1; }

step "servers: $REDIS_URL, ${DATABASE_URL#*@}"
if ! up "$REDIS_URL"; then
  echo "starting redis-server"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_up "$REDIS_URL"
if ! up "$DATABASE_URL"; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
wait_up "$DATABASE_URL"
echo "both answer"
