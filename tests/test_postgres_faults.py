"""PostgresWorkflowStateStore when the reply of a call is lost after the server acted (issue 9, retry paths).

A fault-injection proxy (tests/faultproxy.py) sits between the store and the server and drops the reply of one call
(then closes the connection): the server did the work, the store only sees a dropped connection. Only reads are
repeated (they succeed). A write is never sent twice once it may have reached the server: a repeated update after a
rekey writes the keys again under the abandoned id, and a repeated write can overwrite a newer value another client
wrote in between. So every write (update_state, update_step_state, set_current_step, set_session_label,
clear_step_state, restore_session, clear_state, create, delete, rekey, purge) raises StoreUnavailableError saying
that its outcome is unknown, with the address; never the opposite of what happened (no SessionExistsError for the
session it just created, no False for a delete it did, no 0 for a purge that deleted). The server-side count of
write transactions shows each was done exactly once. A write whose request never left (the idle connection was
found closed before sending) runs normally.
Needs PostgreSQL at DATABASE_URL (see servers.py); everything is made in a schema of this module, dropped at the end.
"""

import time

import pytest

from servers import make_postgres_store, postgres_schema

faultproxy = pytest.importorskip("faultproxy", reason="tests/faultproxy.py (the fault-injection proxy) is missing")


@pytest.fixture(scope="module")
def pg():
    "(url, schema) for this module; the schema is dropped afterwards."
    with postgres_schema("pgfault") as url_and_schema:
        yield url_and_schema


@pytest.fixture
def proxy(pg):
    "A FaultProxy in front of the PostgreSQL server."
    from psycopg.conninfo import conninfo_to_dict

    target = conninfo_to_dict(pg[0])
    p = faultproxy.FaultProxy(target.get("host") or "127.0.0.1", int(target.get("port") or 5432)).start()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(params=[None, 3600], ids=["no_ttl", "ttl"])
def store(request, pg, proxy):
    "A store through the proxy, one connection (so the dropped reply is the call's), its table already made."
    url, schema = pg
    s = make_postgres_store(proxy.url(url), schema, min_size=1, max_size=1, pool_timeout=10, ttl=request.param)
    s.session_exists("f", "warm-up")  # the table exists and the pool's one connection is open and idle
    yield s
    s.close()


def unknown_outcome(call):
    "The StoreUnavailableError `call` raises, checked to say the outcome is unknown."
    from cjm_workflow_state import StoreUnavailableError

    with pytest.raises(StoreUnavailableError) as info:
        call()
    assert "unknown" in str(info.value), str(info.value)
    return info.value


def test_create_session_reply_lost(store, proxy):
    proxy.drop_replies(1)
    unknown_outcome(lambda: store.create_session("f", "created"))
    assert proxy.stats["replies_dropped"] >= 1
    assert store.session_exists("f", "created")  # the server did create it; the store did not say it existed


def test_delete_session_reply_lost(store, proxy):
    store.create_session("f", "doomed")
    proxy.drop_replies(1)
    unknown_outcome(lambda: store.delete_session("f", "doomed"))
    assert not store.session_exists("f", "doomed")  # deleted, and the store did not answer False


def test_rekey_session_commit_reply_lost(store, proxy, monkeypatch):
    "The reply of the rekey transaction's COMMIT is lost: unknown outcome; everything moved (the server committed)."
    import psycopg

    store.update_state("f", "before", {"k": 1})
    store.update_state("g", "before", {"k": 2})
    armed, exit_transaction = [True], psycopg.Transaction.__exit__

    def drop_commit_reply(self, exc_type, *rest):
        if exc_type is None and armed:
            armed.clear()
            proxy.drop_replies(1)
        return exit_transaction(self, exc_type, *rest)

    monkeypatch.setattr(psycopg.Transaction, "__exit__", drop_commit_reply)
    unknown_outcome(lambda: store.rekey_session("before", "after"))
    monkeypatch.undo()
    assert not armed and proxy.stats["replies_dropped"] >= 1
    assert (store.get_state("f", "after"), store.get_state("g", "after")) == ({"k": 1}, {"k": 2})
    assert not store.session_exists("f", "before") and not store.session_exists("g", "before")


def test_purge_expired_reply_lost(pg, proxy):
    "purge_expired is not repeated either: a second run would report 0 for what the first one deleted."
    url, schema = pg
    with make_postgres_store(proxy.url(url), schema, ttl=60, min_size=1, max_size=1, pool_timeout=10) as store:
        for i in range(3):
            store.restore_session("f", f"old{i}", {"k": i}, updated_ts=time.time() - 3600)
        store.update_state("f", "fresh", {"k": 1})
        proxy.drop_replies(1)
        unknown_outcome(store.purge_expired)
        assert store.purge_expired() == 0  # the first one did delete them
        assert [s.session_id for s in store.list_sessions("f")] == ["fresh"]


def write_counter(store, pg):
    """A function returning how many write transactions the server has committed on `store`'s table so far: a
    row trigger logs the id of each transaction that inserts, updates or deletes a row of it (a repeated write is a
    second transaction, on a new connection)."""
    import psycopg

    url, schema = pg
    log, fn = f'"{schema}"."{store.table}_writes"', f'"{schema}"."{store.table}_log"'
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {log} (xid bigint PRIMARY KEY)")
        conn.execute(
            f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"INSERT INTO {log} VALUES (txid_current()) ON CONFLICT DO NOTHING; RETURN NULL; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER log_writes AFTER INSERT OR UPDATE OR DELETE ON {store._quoted['table']} "
            f"FOR EACH ROW EXECUTE FUNCTION {fn}()"
        )

    def count() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(f"SELECT count(*) FROM {log}").fetchone()[0]

    return count


def seed(store):
    "The session the write tests change: {'a': 1, '_step_one': {'b': 2}} (the step's dict merged, so a step update is one statement)."
    store.restore_session("f", "s", {"a": 1})
    store.update_step_state("f", "s", "one", {"b": 2})


WRITES = {  # name -> (the call, a check that it took effect)
    "update_state": (
        lambda s: s.update_state("f", "s", {"a": 2, "c": 3}),
        lambda s: s.get_state("f", "s") == {"a": 2, "_step_one": {"b": 2}, "c": 3},
    ),
    "update_step_state": (
        lambda s: s.update_step_state("f", "s", "one", {"d": 4}),
        lambda s: s.get_step_state("f", "s", "one") == {"b": 2, "d": 4},
    ),
    "set_current_step": (
        lambda s: s.set_current_step("f", "s", "two"),
        lambda s: s.get_current_step("f", "s") == "two",
    ),
    "set_session_label": (
        lambda s: s.set_session_label("f", "s", "Label"),
        lambda s: s.get_session_summary("f", "s").label == "Label",
    ),
    "clear_step_state": (lambda s: s.clear_step_state("f", "s", "one"), lambda s: s.get_state("f", "s") == {"a": 1}),
    "restore_session": (
        lambda s: s.restore_session("f", "s", {"r": 1}, current_step="x", label="L"),
        lambda s: s.get_state("f", "s") == {"r": 1} and s.get_current_step("f", "s") == "x",
    ),
    "clear_state": (lambda s: s.clear_state("f", "s"), lambda s: not s.session_exists("f", "s")),
}


@pytest.mark.parametrize("name", WRITES)
def test_write_reply_lost_is_not_repeated(store, proxy, pg, name):
    """The reply of a write is lost after the server did it: StoreUnavailableError saying the outcome is unknown,
    naming the address; the server did it exactly once (the store did not send it again)."""
    call, took_effect = WRITES[name]
    seed(store)
    writes = write_counter(store, pg)
    dropped = proxy.stats["replies_dropped"]
    proxy.drop_replies(1)
    error = unknown_outcome(lambda: call(store))
    assert store.address in str(error), str(error)
    assert proxy.stats["replies_dropped"] == dropped + 1  # the call's reply was the one dropped
    assert writes() == 1, f"{name} ran {writes()} times on the server"
    assert took_effect(store)  # the server did it; the store only could not know


def test_write_on_a_connection_closed_while_idle_runs_once(store, proxy, pg):
    """Connections cut while idle in the pool: each write finds its connection closed before sending, takes a new
    one and succeeds, once (a request that never left is not an unknown outcome)."""
    writes = write_counter(store, pg)
    for name, (call, took_effect) in WRITES.items():
        seed(store)
        before, connections = writes(), proxy.stats["connections"]
        proxy.cut_all()
        time.sleep(0.05)  # the close reaches the client's socket
        call(store)
        assert took_effect(store), name
        assert writes() == before + 1, f"{name}: {writes() - before} write transactions"
        assert proxy.stats["connections"] > connections  # it did run on a new connection


def test_reads_are_repeated(store, proxy):
    "A lost reply of a read: repeated once on a new connection, and the call succeeds (reads are safe to repeat)."
    store.update_state("f", "s", {"a": 1})
    store.update_step_state("f", "s", "one", {"b": 2})
    store.set_current_step("f", "s", "two")
    reads = [
        (lambda: store.get_state("f", "s"), {"a": 1, "_step_one": {"b": 2}}),
        (lambda: store.get_step_state("f", "s", "one"), {"b": 2}),
        (lambda: store.get_current_step("f", "s"), "two"),
        (lambda: store.session_exists("f", "s"), True),
        (lambda: store.get_session_summary("f", "s").current_step, "two"),
        (lambda: [x.session_id for x in store.list_sessions("f")], ["s"]),
        (lambda: store.list_flows(), ["f"]),
        (lambda: [x["session_id"] for x in store.export_sessions("f")], ["s"]),
    ]
    for read, expected in reads:
        dropped = proxy.stats["replies_dropped"]
        proxy.drop_replies(1)
        assert read() == expected
        assert proxy.stats["replies_dropped"] == dropped + 1
