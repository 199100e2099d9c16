"""The conformance suite against PostgresWorkflowStateStore (and `open_store("postgresql://...")`), one pytest test per check.

Needs PostgreSQL at DATABASE_URL (see servers.py). Every store gets its own table in a schema made for this run,
dropped at the end.
"""
import itertools

import pytest

from cjm_workflow_state.testing import conformance_checks
from servers import postgres_schema

CHECKS = conformance_checks()


@pytest.fixture(scope="module")
def pg():
    "(url, schema) for this module; the schema (and every table in it) is dropped afterwards."
    with postgres_schema("conformance") as url_and_schema: yield url_and_schema


class PostgresStores:
    """`make_store` for the suite: each store on a new table, except that stores made while another one is still
    open share its table (so the suite's several-store-objects check really shares one backend)."""
    counter = itertools.count()

    def __init__(self, open_one):
        self.open_one, self.made, self.table = open_one, [], None

    def __call__(self, **options):
        if all(getattr(s, "_closed_by_suite", False) for s in self.made): self.table = f"t{next(self.counter)}"
        store = self.open_one(self.table, **options)
        close = store.close
        def closing(): store._closed_by_suite = True; close()
        store.close = closing
        self.made.append(store)
        return store

    def close(self):
        for s in self.made: s.close()


def opener(kind, url, schema):
    from cjm_workflow_state.backends.postgres import PostgresWorkflowStateStore
    # "no_prepare": as behind PgBouncer in transaction mode, no server-side prepared statements
    extra = dict(prepare_threshold=None) if kind == "no_prepare" else {}
    return lambda table, **o: PostgresWorkflowStateStore(url, schema=schema, table=table, max_size=4, **extra, **o)


@pytest.mark.parametrize("kind", ["class", "no_prepare"])
@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_conformance(check, kind, pg):
    stores = PostgresStores(opener(kind, *pg))
    try: check(stores)
    finally: stores.close()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_open_store(scheme, pg):
    "open_store builds the store from either URL scheme and passes the options on."
    from cjm_workflow_state import open_store
    from cjm_workflow_state.backends.postgres import PostgresWorkflowStateStore
    url, schema = pg
    with open_store(scheme + url[url.index("://"):], schema=schema, table=f"open_{scheme}", ttl=60,
                    max_state_bytes=1000) as store:
        assert isinstance(store, PostgresWorkflowStateStore)
        assert (store.schema, store.table, store.ttl, store.max_state_bytes) == (schema, f"open_{scheme}", 60.0, 1000)
        store.update_state("flow", "s", {"k": 1})
        assert store.get_state("flow", "s") == {"k": 1}
    for check in ["update_merge", "list_sessions_order"]:
        stores = PostgresStores(lambda table, **o: open_store(url, schema=schema, table=table, **o))
        try: CHECKS[check](stores)
        finally: stores.close()
