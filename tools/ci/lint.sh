#!/usr/bin/env bash
# Lint, format and types, in the active environment (`pip install -e ".[dev]"` brings the pinned ruff and mypy);
# configuration in pyproject.toml ([tool.ruff], [tool.mypy]). tools/ci/dev.sh runs it; so can you:
#   bash tools/ci/lint.sh
# - ruff check: the package (generated: fix findings in nbs/, then nbdev_export), tests/, tools/, bench/
# - ruff format --check: the sources a person edits: nbs/ (notebook code cells), tests/, tools/, bench/
#   (not cjm_workflow_state/, which nbdev_export writes); to fix: ruff format nbs tests tools bench
# - mypy: the package, for the oldest supported Python (3.11)
# - .ci/run and the GitHub workflow call the same tools/ci scripts
set -uo pipefail
cd "$(dirname "$0")/../.."
status=0
run() { echo "== $*"; "$@" || { status=1; echo "FAILED: $*"; }; }
run python -m ruff --version
run python -m ruff check --output-format concise cjm_workflow_state tests tools bench
run python -m ruff format --check --output-format concise nbs tests tools bench
run python -m mypy
# one CI: the GitHub workflow runs the scripts .ci/run runs (and runtime.sh for the same wheel/sdist forms)
echo "== .ci/run and .github/workflows/test.yaml run the same tools/ci scripts"
ci_steps() { grep -oE "tools/ci/(servers|dev|runtime)\.sh" "$1" | sort -u; }
if [[ $(ci_steps .ci/run) != "$(ci_steps .github/workflows/test.yaml)" ]]; then
  status=1; echo "FAILED: .ci/run runs $(ci_steps .ci/run | tr '\n' ' '), the workflow $(ci_steps .github/workflows/test.yaml | tr '\n' ' ')"
fi
exit $status
