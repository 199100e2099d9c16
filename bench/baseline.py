"""The package as an earlier commit had it, importable beside the working tree, for same-run baseline columns.

    from baseline import load_baseline
    old = load_baseline("/path/to/checkout")   # e.g. `git worktree add /tmp/base 2b78f09`, or `git archive 2b78f09 | tar -x -C /tmp/base`
    old.backends.redis.RedisWorkflowStateStore(...)

The checkout's `cjm_workflow_state/` is copied under the name `cjm_workflow_state_baseline` (the generated modules
import each other relatively, so the copy is self-contained) and imported; both versions then run in one process,
so their calls can be interleaved round by round."""

import importlib, shutil, sys, tempfile
from pathlib import Path

NAME = "cjm_workflow_state_baseline"


def load_baseline(
    checkout: str,  # A directory holding an earlier commit's files (its cjm_workflow_state/ package)
):  # The baseline package, with its backends and core modules imported
    source = Path(checkout) / "cjm_workflow_state"
    if not (source / "__init__.py").exists():
        raise SystemExit(f"no cjm_workflow_state package under {checkout!r}: pass a checkout of the baseline commit")
    if NAME not in sys.modules:
        folder = Path(tempfile.mkdtemp(prefix="cjm-baseline-"))
        shutil.copytree(source, folder / NAME)
        sys.path.insert(0, str(folder))
    package = importlib.import_module(NAME)
    for module in ("core.base", "core.state_store", "backends.sqlite", "backends.redis", "backends.postgres"):
        importlib.import_module(f"{NAME}.{module}")
    return package
