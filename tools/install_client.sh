#!/usr/bin/env bash
# Installs cjm-fasthtml-workflow-session-management (Python 3.12 only), the published client whose
# SessionManagementService tests/test_session_management_client.py runs against our store, into the active Python.
# It requires the published cjm-workflow-state, which shares our import name and would replace ours:
# so it goes in without dependencies, followed by its other requirements.
set -euo pipefail
python -c "import sys; sys.exit(sys.version_info < (3, 12))" || { echo "session-management client: Python 3.12+ only, not installed"; exit 0; }
pip_q() { python -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }
pip_q --no-deps cjm-fasthtml-workflow-session-management==0.0.15
pip_q "cjm-fasthtml-app-core>=0.0.21" "cjm-fasthtml-daisyui>=0.0.15" "cjm-fasthtml-tailwind>=0.0.44" \
  "cjm-fasthtml-lucide-icons>=0.0.1" "cjm-fasthtml-virtual-collection>=0.0.27" \
  "cjm-fasthtml-keyboard-navigation>=0.0.27" "cjm-fasthtml-viewport-fit>=0.0.16" "cjm_fasthtml_design_system>=0.0.13"
