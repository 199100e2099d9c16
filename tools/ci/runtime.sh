#!/usr/bin/env bash
# CI, user side, for one Python (.ci/run and the GitHub workflow's `runtime` job both run this):
#   bash tools/ci/runtime.sh PYTHON wheel|sdist     # from a clean checkout, servers up (tools/ci/servers.sh)
# 1. builds the wheel and the sdist (python -m build; once per $CI_WORK) and checks them: the sdist holds every
#    tracked file of tests/, the wheel ships py.typed;
# 2. a fresh venv from PYTHON with the built wheel, or the sdist (built by pip from it), with its [redis,postgres]
#    extras at their newest versions (on 3.12: fastcore 2, newest python-fasthtml; no nbdev), the test tools and the
#    session-management client (tools/install_client.sh) and the Debian packages the tests use (tools/install_system.sh);
# 3. pytest tests/ of the unpacked sdist, against the installed package (tests/conftest.py checks that it is).
# CI_TESTS (default: tests/) narrows step 3 for a quick local check, e.g. CI_TESTS=tests/test_conformance_memory.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/ci/lib.sh
PY=$(command -v "${1:?usage: tools/ci/runtime.sh PYTHON wheel|sdist}")
FORM=${2:?usage: tools/ci/runtime.sh PYTHON wheel|sdist}
[[ $FORM == wheel || $FORM == sdist ]] || { echo "FORM must be wheel or sdist, not $FORM" >&2; exit 2; }
V=$(py_version "$PY")
work_dir
ROOT=$PWD
dist=$CI_WORK/dist

if ! ls "$dist"/*.whl "$dist"/*.tar.gz >/dev/null 2>&1; then
  step "build: python -m build (wheel and sdist)"
  rm -rf "$dist" "$CI_WORK/build-venv"; "$PY" -m venv "$CI_WORK/build-venv"
  pip_q "$CI_WORK/build-venv/bin/python" build
  "$CI_WORK/build-venv/bin/python" -m build --outdir "$dist" . > "$CI_WORK/build.log" 2>&1 || { cat "$CI_WORK/build.log"; exit 1; }
  ls -l "$dist"
  "$PY" - "$dist" <<'PY'
import glob, subprocess, sys, tarfile, zipfile
dist = sys.argv[1]
sdist, = glob.glob(f"{dist}/*.tar.gz"); wheel, = glob.glob(f"{dist}/*.whl")
with tarfile.open(sdist) as t: in_sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
tracked = subprocess.run(["git", "ls-files", "tests"], capture_output=True, text=True, check=True).stdout.split()
missing = sorted(set(tracked) - in_sdist)
assert not missing, f"the sdist lacks tracked test files (add them to MANIFEST.in): {missing}"
for f in ["LICENSE", "README.md", "settings.ini", "setup.py", "pyproject.toml", "CHANGELOG.md", "CONTRIBUTING.md",
          "cjm_workflow_state/py.typed"]:
    assert f in in_sdist, f"the sdist lacks {f}"
with zipfile.ZipFile(wheel) as z: names = set(z.namelist())
assert "cjm_workflow_state/py.typed" in names, "the wheel lacks cjm_workflow_state/py.typed"
assert not any(n.startswith("tests/") for n in names), "the wheel must not ship tests/"
print(f"sdist: {len(in_sdist)} files, all {len(tracked)} tracked tests/ files; wheel: {len(names)} files, py.typed")
PY
fi
artifact=$(ls "$dist"/*.whl); [[ $FORM == sdist ]] && artifact=$(ls "$dist"/*.tar.gz)

venv=$CI_WORK/runtime-$V
step "Python $V runtime venv: the $FORM, newest runtime dependencies, no nbdev"
rm -rf "$venv"; "$PY" -m venv "$venv"
pip_q "$venv/bin/python" --upgrade "cjm-workflow-state[redis,postgres] @ file://$artifact" pytest hypothesis httpx uvicorn playwright
(source "$venv/bin/activate" && bash tools/install_client.sh && bash tools/install_system.sh)
"$venv/bin/python" -m pip list 2>/dev/null \
  | grep -iE "^(cjm-workflow-state|fastcore|python-fasthtml|cjm-fasthtml-interactions|starlette|redis|psycopg) " || true
if "$venv/bin/python" -m pip show nbdev >/dev/null 2>&1; then echo "nbdev must not be installed here"; exit 1; fi
(cd "$CI_WORK" && "$venv/bin/python" -c "
import fastcore, cjm_workflow_state as m, sys
print('fastcore', fastcore.__version__, '| cjm_workflow_state', m.__version__, 'from', m.__file__)
assert 'site-packages' in m.__file__, 'the installed package must be tested, not the checkout'
if sys.version_info >= (3, 12): assert int(fastcore.__version__.split('.')[0]) >= 2, 'expected fastcore 2 on Python 3.12'")

src=$CI_WORK/sdist-$V
step "Python $V runtime venv: pytest ${CI_TESTS:-tests/} of the unpacked sdist"
rm -rf "$src"; mkdir -p "$src"; tar -xzf "$dist"/*.tar.gz -C "$src" --strip-components 1
export DEMO_ARTIFACTS_DIR="${DEMO_ARTIFACTS_DIR:-$ROOT/artifacts/demo-browser}"
(cd "$src" && source "$venv/bin/activate" && CJM_TEST_INSTALLED=1 pytest_run ${CI_TESTS:-tests/} -q -rs -p no:cacheprovider)
