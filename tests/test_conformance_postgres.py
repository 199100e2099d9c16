"""The conformance suite against PostgresWorkflowStateStore (and `open_store("postgresql://...")`), one pytest test per check.

Needs PostgreSQL at DATABASE_URL (see servers.py). Every store gets its own table in a schema made for this run,
dropped at the end. "no_prepare" is the store as behind PgBouncer in transaction mode (no server-side prepared
statements): every check that does not wait on the server's clock runs there too (the clock checks run the same
statements as the others, and take seconds each), and so do "scoped" (each call inside a request scope: its writes
commit in one pipelined batch) and "async" (every call through the async API).
"""

import itertools

import pytest

from cjm_workflow_state.testing import AsyncCalls, ScopedCalls, SharedStores, conformance_checks
from servers import postgres_schema

CHECKS = conformance_checks()
REAL_CLOCK = {"ttl", "purge_expired", "export_during_expiry"}  # checks that sleep: PostgreSQL keeps time itself
tables = itertools.count()


@pytest.fixture(scope="module")
def pg():
    "(url, schema) for this module; the schema (and every table in it) is dropped afterwards."
    with postgres_schema("conformance") as url_and_schema:
        yield url_and_schema


def stores(url, schema, wrap=lambda store: store, **extra) -> SharedStores:
    "The suite's factory: a new table per backend, in this module's schema (dropped with it)."
    from cjm_workflow_state.backends.postgres import PostgresWorkflowStateStore

    return SharedStores(
        lambda table, **o: wrap(PostgresWorkflowStateStore(url, schema=schema, table=table, max_size=4, **extra, **o)),
        new_backend=lambda: f"t{next(tables)}",
    )


KINDS = {
    "class": {},
    "no_prepare": dict(prepare_threshold=None),
    "scoped": dict(wrap=ScopedCalls),
    "async": dict(wrap=AsyncCalls),
}
CASES = [
    pytest.param(check, kind, id=f"{name}-{kind}")
    for name, check in CHECKS.items()
    for kind in KINDS
    if kind == "class" or name not in REAL_CLOCK
]


@pytest.mark.parametrize("check, kind", CASES)
def test_conformance(check, kind, pg):
    factory = stores(*pg, **KINDS[kind])
    try:
        check(factory)
    finally:
        factory.cleanup()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_open_store(scheme, pg):
    "open_store builds the store from either URL scheme and passes the options on."
    from cjm_workflow_state import open_store
    from cjm_workflow_state.backends.postgres import PostgresWorkflowStateStore

    url, schema = pg
    with open_store(
        scheme + url[url.index("://") :], schema=schema, table=f"open_{scheme}", ttl=60, max_state_bytes=1000
    ) as store:
        assert isinstance(store, PostgresWorkflowStateStore)
        assert (store.schema, store.table, store.ttl, store.max_state_bytes) == (schema, f"open_{scheme}", 60.0, 1000)
        store.update_state("flow", "s", {"k": 1})
        assert store.get_state("flow", "s") == {"k": 1}
    for check in ["update_merge", "list_sessions_order", "concurrent_stores"]:
        factory = SharedStores(
            lambda table, **o: open_store(url, schema=schema, table=table, **o), new_backend=lambda: f"t{next(tables)}"
        )
        try:
            CHECKS[check](factory)
        finally:
            factory.cleanup()
