# Shared shell functions of the CI scripts (tools/ci/*.sh, tools/test.sh): source it, don't run it.
#   source "$(dirname "$0")/lib.sh"

# in_ci: the project's one CI rule (tests/servers.py's in_ci() is the same rule in Python): CI is on when the
# environment variable CI, trimmed and lower-cased, is "true", "1" or "yes" (GitHub Actions and most CI services
# set CI=true; .ci/run sets it). In CI a test whose server, driver, browser or client is missing fails instead
# of skipping.
in_ci() {
  local v="${CI:-}"
  v="${v#"${v%%[![:space:]]*}"}"; v="${v%"${v##*[![:space:]]}"}"
  case "${v,,}" in true|1|yes) return 0;; *) return 1;; esac
}

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

CI_T0=${CI_T0:-$(date +%s)}; export CI_T0  # the run's start: .ci/run's steps count from it
step() { echo; echo "=== [$(( $(date +%s) - CI_T0 ))s] $*"; }

# pip_q PYTHON ARGS...: pip install quietly, without the warnings about a machine's configured local indexes
pip_q() {
  local py=$1; shift
  "$py" -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

# py_version PYTHON: prints X.Y
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

# min_python: settings.ini's min_python (the oldest Python the package supports)
min_python() { sed -n 's/^min_python *= *//p' settings.ini; }

# work_dir: the folder for this run's venvs and builds: $CI_WORK, else a new temporary folder removed on exit
work_dir() {
  if [[ -z ${CI_WORK:-} ]]; then
    CI_WORK=$(mktemp -d "${TMPDIR:-/tmp}/cjm-ci.XXXXXX"); export CI_WORK
    trap 'rm -rf "$CI_WORK"' EXIT
  fi
  mkdir -p "$CI_WORK"
}

# require_clean WHAT: fail when the git work tree has changes (WHAT says what made them)
require_clean() {
  if [[ -n $(git status --porcelain) ]]; then
    git status --short; git --no-pager diff --stat; git --no-pager diff | head -200
    echo "::error::$1"; return 1
  fi
}

# pytest_run ARGS...: the venv's pytest (not `python -m pytest`: the current folder must not shadow the installed
# package); exit 5 (no test collected) is a failure
pytest_run() {
  local status=0; pytest "$@" || status=$?
  if [[ $status -eq 5 ]]; then echo "::error::pytest collected no tests"; return 1; fi
  return $status
}

# python_for X.Y: a Python X.Y interpreter (PATH, then pyenv, then the usual install locations)
python_for() {
  local v=$1 cand
  for cand in "python$v" python3; do
    if command -v "$cand" >/dev/null && [[ $(py_version "$cand" 2>/dev/null) == "$v" ]]; then command -v "$cand"; return; fi
  done
  if command -v pyenv >/dev/null; then
    local pv; pv=$(pyenv versions --bare 2>/dev/null | grep -E "^$v(\.[0-9]+)?$" | sort -V | tail -1 || true)
    if [[ -n $pv ]] && cand=$(PYENV_VERSION=$pv pyenv which "python$v" 2>/dev/null); then echo "$cand"; return; fi
  fi
  for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/$v.*/bin/python$v /usr/local/bin/python$v /usr/bin/python$v; do
    [[ -x $cand ]] && { echo "$cand"; return; }
  done
  echo "no Python $v found" >&2; return 1
}
