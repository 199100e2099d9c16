"""The conformance suite against SQLiteWorkflowStateStore, one pytest test per check: on files, on a file with the
JSON single-statement merge turned off (so every merge takes the BEGIN IMMEDIATE transaction path), on a :memory:
database, and through `open_store("sqlite:///...")`. Every check runs on files; the others run every check that
does not wait on SQLite's clock (those run the same statements, and take seconds each), `open_store` the checks
that show the URL builds the same store. Every check also runs on files through the async API and with each call
inside a request scope."""

import itertools

import pytest

from cjm_workflow_state import open_store
from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore
from cjm_workflow_state.testing import AsyncCalls, CheckNotRun, ScopedCalls, SharedStores, conformance_checks

CHECKS = conformance_checks()
REAL_CLOCK = {"ttl", "purge_expired", "export_during_expiry"} if SQLiteWorkflowStateStore.server_time else set()
files = itertools.count()


def transaction_only(path, **options):
    store = SQLiteWorkflowStateStore(path, **options)
    store._json_merge = False
    return store


OPENERS = {
    "file": SQLiteWorkflowStateStore,
    "transaction_path": transaction_only,
    "open_store": lambda path, **options: open_store(f"sqlite:///{path}", **options),
    "scoped": lambda path, **options: ScopedCalls(SQLiteWorkflowStateStore(path, **options)),
    "async": lambda path, **options: AsyncCalls(SQLiteWorkflowStateStore(path, **options)),
}
CASES = (
    [
        pytest.param(check, kind, id=f"{name}-{kind}")
        for name, check in CHECKS.items()
        for kind in ("file", "scoped", "async")
    ]
    + [
        pytest.param(check, kind, id=f"{name}-{kind}")
        for name, check in CHECKS.items()
        for kind in ("transaction_path", "memory")
        if name not in REAL_CLOCK
    ]
    + [
        pytest.param(CHECKS[name], "open_store", id=f"{name}-open_store")
        for name in ("update_merge", "list_sessions_order", "ttl_rule", "concurrent_stores")
    ]
)


@pytest.mark.parametrize("check, kind", CASES)
def test_conformance(check, kind, tmp_path):
    if kind == "memory":  # each :memory: store is its own database: nothing is shared, and the suite must say so
        factory = lambda **options: SQLiteWorkflowStateStore(":memory:", **options)
        if check.__name__ == "check_concurrent_stores":
            with pytest.raises(CheckNotRun):
                check(factory)
        else:
            check(factory)
        return
    factory = SharedStores(OPENERS[kind], new_backend=lambda: tmp_path / f"conformance-{next(files)}.db")
    try:
        check(factory)
    finally:
        factory.cleanup()
