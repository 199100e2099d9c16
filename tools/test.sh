#!/usr/bin/env bash
# The project's test command: every notebook (nbdev_test, server-backed cells included) and every system test (pytest tests/).
#   bash tools/test.sh            # from the repository root, in an environment with `pip install -e ".[dev]"`
# Server addresses come from REDIS_URL (default redis://127.0.0.1:6379/0) and DATABASE_URL
# (default postgresql://postgres@127.0.0.1:5432/test). Outside CI, a backend whose server is unreachable is
# skipped and named in the summary; in CI (CI=true, 1 or yes: in_ci in tools/ci/lib.sh) nothing is skipped: its
# tests run and fail.
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/ci/lib.sh  # in_ci, REDIS_URL and DATABASE_URL defaults

# address URL: prints the URL's host:port (no credentials); fails unless a TCP connection to it opens
address() {
  python - "$1" <<'PY'
import socket, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
host, port = u.hostname or "127.0.0.1", u.port or {"redis": 6379, "rediss": 6380}.get(u.scheme, 5432)
print(f"{host}:{port}")
try: socket.create_connection((host, port), timeout=2).close()
except OSError: sys.exit(1)
PY
}

flags=(); missing=()
for backend in redis postgres; do
  url=$([[ $backend == redis ]] && echo "$REDIS_URL" || echo "$DATABASE_URL")
  if addr=$(address "$url") || in_ci; then flags+=("$backend")
  else missing+=("$backend ($addr unreachable)"); fi
done

echo "== nbdev_test --flags \"${flags[*]}\""
nbdev_test --flags "${flags[*]}"; nb_status=$?

echo "== pytest tests/"
python -m pytest tests/ -q -rs; py_status=$?
[[ $py_status -eq 5 ]] && echo "pytest collected no tests: that is a failure"

echo
result() { [[ $1 -eq 0 ]] && echo passed || echo "FAILED (exit $1)"; }
echo "== summary: notebooks $(result $nb_status); pytest $(result $py_status)"
if (( ${#missing[@]} )); then
  echo "== NOT RUN: the notebook cells and system tests of ${missing[*]}; start the server(s) as the README shows to run them"
fi
[[ $nb_status -eq 0 && $py_status -eq 0 ]]
