"""PostgresWorkflowStateStore keeps time by the database server's clock (issue 9 item 17, PostgreSQL part).

App servers and an admin host running `purge-expired` may have skewed clocks. Every timestamp the store writes and
every ttl cutoff it computes comes from the PostgreSQL server, so a skewed client can neither expire, purge, reset nor
lose a session that is live by the server's clock, nor keep one alive that is not. The client's skew is simulated by
monkeypatching `time.time` in this process. Needs PostgreSQL at DATABASE_URL (see servers.py); everything is made in
a schema of this module, dropped at the end.
"""

import time

import pytest

from servers import make_postgres_store, postgres_schema, unique_name

TTL = 60
HOUR = 3600.0


@pytest.fixture(scope="module")
def pg():
    "(url, schema) for this module; the schema is dropped afterwards."
    with postgres_schema("pgclock") as url_and_schema:
        yield url_and_schema


make_store = make_postgres_store


def server_now(url) -> float:
    "The PostgreSQL server's clock, epoch seconds."
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return float(conn.execute("SELECT extract(epoch from clock_timestamp())").fetchone()[0])


def skew_client_clock(monkeypatch, seconds: float) -> None:
    "Make this process's time.time() run `seconds` ahead (negative: behind) of the real clock."
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


@pytest.mark.parametrize("skew", [HOUR, -3 * HOUR], ids=["client_1h_ahead", "client_3h_behind"])
def test_ttl_follows_the_servers_clock_whatever_the_clients(pg, monkeypatch, skew):
    """With the client's clock skewed: a session written 1 s ago by the server's clock is live (read, listed, kept by
    purge_expired, moved by rekey_session, merged into by a write); one last written 2 hours ago by it is not (absent,
    unlisted, purged)."""
    url, schema = pg
    store = make_store(url, schema, ttl=TTL)
    try:
        now = server_now(url)
        store.restore_session("f", "fresh", {"a": 1}, label="L", created_ts=now - 1, updated_ts=now - 1)
        store.restore_session("f", "moved", {"a": 1}, created_ts=now - 1, updated_ts=now - 1)
        store.restore_session("f", "stale", {"a": 1}, created_ts=now - 2 * HOUR, updated_ts=now - 2 * HOUR)
        store.restore_session("g", "stale", {"a": 1}, created_ts=now - 2 * HOUR, updated_ts=now - 2 * HOUR)
        skew_client_clock(monkeypatch, skew)

        assert store.get_state("f", "fresh") == {"a": 1}
        assert store.session_exists("f", "fresh") and store.get_session_summary("f", "fresh").label == "L"
        assert sorted(s.session_id for s in store.list_sessions("f")) == ["fresh", "moved"]
        assert store.list_flows() == ["f"]
        assert [r["session_id"] for r in store.export_sessions()] == ["fresh", "moved"]
        assert (store.get_state("f", "stale"), store.session_exists("g", "stale")) == ({}, False)

        store.update_state("f", "fresh", {"b": 2})  # a write merges into the live session, never restarts it
        assert store.get_state("f", "fresh") == {"a": 1, "b": 2}
        assert store.get_session_summary("f", "fresh").label == "L"
        assert store.rekey_session("moved", "moved2") == 1
        assert store.get_state("f", "moved2") == {"a": 1}

        assert store.purge_expired() == 2  # the two stale ones, nothing else
        assert sorted(s.session_id for s in store.list_sessions("f")) == ["fresh", "moved2"]
        assert store.get_state("f", "fresh") == {"a": 1, "b": 2}
    finally:
        store.close()


@pytest.mark.parametrize("skew", [HOUR, -HOUR], ids=["client_1h_ahead", "client_1h_behind"])
def test_purge_expired_on_a_skewed_admin_host_keeps_fresh_sessions(pg, monkeypatch, skew):
    """The CLI's purge-expired opens the store with ttl=D and calls purge_expired(): on an admin host whose clock is
    skewed it deletes exactly the sessions expired by the server's clock."""
    url, schema = pg
    table = unique_name("t")
    with make_store(url, schema, table) as app:  # an app server with a good clock, no ttl
        app.update_state("f", "fresh", {"k": 1})
        now = server_now(url)
        app.restore_session("f", "old", {"k": 1}, created_ts=now - 2 * HOUR, updated_ts=now - 2 * HOUR)
    skew_client_clock(monkeypatch, skew)
    with make_store(url, schema, table, ttl=TTL) as admin:
        assert admin.purge_expired() == 1
    monkeypatch.undo()
    with make_store(url, schema, table) as app:
        assert [s.session_id for s in app.list_sessions("f")] == ["fresh"]
        assert app.get_state("f", "fresh") == {"k": 1}


@pytest.mark.parametrize("skew", [HOUR, -HOUR], ids=["client_1h_ahead", "client_1h_behind"])
@pytest.mark.parametrize("ttl", [None, TTL], ids=["no_ttl", "ttl"])
def test_writes_are_stamped_by_the_servers_clock(pg, monkeypatch, skew, ttl):
    "Every write stamps updated_at (and a new session's created_at) with the server's time, whatever the client's."
    url, schema = pg
    store = make_store(url, schema, ttl=ttl)
    try:
        store.list_flows()  # the table exists
        skew_client_clock(monkeypatch, skew)
        writes = [
            lambda: store.create_session("f", "s", label="x"),
            lambda: store.update_state("f", "s", {"k": 1}),
            lambda: store.update_step_state("f", "s", "one", {"k": 1}),
            lambda: store.set_current_step("f", "s", "two"),
            lambda: store.set_session_label("f", "s", "y"),
            lambda: store.clear_step_state("f", "s", "one"),
        ]
        for write in writes:
            write()
            now = server_now(url)
            s = store.get_session_summary("f", "s")
            assert s is not None
            assert abs(s.updated_ts - now) < 5, (write, s.updated_ts - now)
            assert abs(s.created_ts - now) < 5 + len(writes), (write, s.created_ts - now)
            assert s.created_ts <= s.updated_ts
        store.update_state("f", "other", {"k": 1})  # a new session: both times the server's, and equal
        s = store.get_session_summary("f", "other")
        assert abs(s.created_ts - server_now(url)) < 5 and s.created_ts == s.updated_ts
    finally:
        store.close()
