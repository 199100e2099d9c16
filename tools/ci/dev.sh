#!/usr/bin/env bash
# CI, development side, for one Python (.ci/run and the GitHub workflow's `dev` job both run this):
#   bash tools/ci/dev.sh PYTHON          # e.g. python3.11; run from a clean checkout, servers up (tools/ci/servers.sh)
# 1. a fresh venv from PYTHON with `pip install -e ".[dev]"` and the test system's packages (tools/install_dev.sh);
#    on the oldest supported Python (settings.ini's min_python) the runtime requirements are held at their lower
#    bounds (tools/ci/lower_bounds.py), so the bounds settings.ini declares are the versions CI tests;
# 2. nbdev_export and nbdev_clean must leave git clean;
# 3. on min_python: lint and types (tools/ci/lint.sh);
# 4. the README's test command: bash tools/test.sh (every notebook, pytest tests/);
# 5. on Python 3.12: the docs check (tools/check_docs.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/ci/lib.sh
PY=$(command -v "${1:?usage: tools/ci/dev.sh PYTHON}")
V=$(py_version "$PY")
work_dir
venv=$CI_WORK/dev-$V

require_clean "the working tree is not clean: commit first, or run CI in a fresh clone"

step "Python $V dev venv: pip install -e \".[dev]\" (tools/install_dev.sh)"
rm -rf "$venv"; "$PY" -m venv "$venv"
if [[ $V == "$(min_python)" ]]; then
  "$PY" tools/ci/lower_bounds.py > "$CI_WORK/lower-bounds.txt"
  echo "runtime requirements at their lower bounds: $(tr '\n' ' ' < "$CI_WORK/lower-bounds.txt")"
  export PIP_CONSTRAINT="$CI_WORK/lower-bounds.txt"
fi
(source "$venv/bin/activate" && bash tools/install_dev.sh)  # also Debian's chromium, redis-server, pgbouncer
unset PIP_CONSTRAINT
"$venv/bin/python" -m pip list 2>/dev/null \
  | grep -iE "^(nbdev|fastcore|execnb|python-fasthtml|cjm-fasthtml-interactions|redis|psycopg|psycopg-pool|msgspec|ruff|mypy) " || true

step "Python $V: nbdev_export and nbdev_clean leave git clean"
(source "$venv/bin/activate" && nbdev_export && nbdev_clean)
require_clean "nbdev_export/nbdev_clean changed the tree: run them and commit the result"

if [[ $V == "$(min_python)" ]]; then
  step "Python $V: lint and types (tools/ci/lint.sh)"
  (source "$venv/bin/activate" && bash tools/ci/lint.sh)
fi

step "Python $V: bash tools/test.sh"
(source "$venv/bin/activate" && bash tools/test.sh)

if [[ $V == 3.12 ]]; then
  step "Python $V: docs check (processed notebooks rendered to HTML, errors, pages, internal links)"
  (source "$venv/bin/activate" && python tools/check_docs.py)
fi
require_clean "the tests left files in the checkout"
