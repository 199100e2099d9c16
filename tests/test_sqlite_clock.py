"""A write that waits for SQLite's write lock (another connection or process is writing) stamps the time it is applied,
not the time it was called: else a session's `updated_ts` can be older than its last acknowledged write, and with a
ttl it expires early (the history checker's "stale-stamp"). Here another connection holds the write lock with
BEGIN IMMEDIATE for HOLD seconds while the store's write waits for it. Last, a clock set by hand (`store.clock`) drives
the statements instead of SQLite's."""

import sqlite3, threading, time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore

HOLD = 0.4  # seconds the other connection holds the write lock
TOLERANCE = 0.01  # the store's clock is SQLite's, in whole milliseconds


def while_locked(path, call):
    """Run `call()` in a thread while another connection holds the write lock for HOLD seconds; return the time the
    lock was released (just before its COMMIT: the call cannot apply before it) and what the call returned."""
    blocker = sqlite3.connect(path, isolation_level=None)
    out = {}
    try:
        blocker.execute("BEGIN IMMEDIATE")
        worker = threading.Thread(target=lambda: out.setdefault("result", call()))
        worker.start()
        time.sleep(HOLD)
        assert worker.is_alive(), "the write did not wait for the lock"
        released = time.time()
        blocker.execute("COMMIT")
        worker.join(10)
    finally:
        blocker.close()
    assert "result" in out, "the write failed (see the thread's exception above)"
    return released, out["result"]


WRITES = {  # name -> a write to the existing session "s"
    "update_state": lambda st: st.update_state("flow", "s", {"plan": "pro"}),  # one UPDATE statement
    "update_state (transaction path)": lambda st: st.update_state(
        "flow", "s", {"pl\u00e4n": "pro"}
    ),  # merged in Python
    "update_step_state": lambda st: st.update_step_state("flow", "s", "one", {"x": 1}),
    "clear_step_state": lambda st: st.clear_step_state("flow", "s", "one"),
    "set_current_step": lambda st: st.set_current_step("flow", "s", "two"),
    "set_session_label": lambda st: st.set_session_label("flow", "s", "Renamed"),
}


@pytest.mark.parametrize("ttl", [None, 3600])
@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_that_waited_for_the_lock_stamps_when_it_applied(tmp_path, write, ttl):
    path = tmp_path / "clock.db"
    with SQLiteWorkflowStateStore(path, ttl=ttl, busy_timeout=10) as store:
        store.update_state("flow", "s", {"a": 1})
        store.set_current_step("flow", "s", "one")
        store.update_step_state("flow", "s", "one", {"x": 0})
        before = store.get_session_summary("flow", "s")
        released, _ = while_locked(path, lambda: WRITES[write](store))
        after = store.get_session_summary("flow", "s")
        assert after.updated_ts >= released - TOLERANCE, (
            f"{write} stamped {released - after.updated_ts:.3f} s before the lock was released"
        )
        assert after.created_ts == before.created_ts  # a write to a live session keeps its creation time


@pytest.mark.parametrize("ttl", [None, 3600])
@pytest.mark.parametrize("create", ["create_session", "update_state", "set_current_step"])
def test_a_new_session_that_waited_for_the_lock_is_created_when_it_applied(tmp_path, create, ttl):
    path = tmp_path / "clock.db"
    calls = {
        "create_session": lambda st: st.create_session("flow", "new", label="New"),
        "update_state": lambda st: st.update_state("flow", "new", {"plan": "pro"}),
        "set_current_step": lambda st: st.set_current_step("flow", "new", "one"),
    }
    with SQLiteWorkflowStateStore(path, ttl=ttl, busy_timeout=10) as store:
        released, _ = while_locked(path, lambda: calls[create](store))
        s = store.get_session_summary("flow", "new")
        assert s.updated_ts >= released - TOLERANCE, f"{create} stamped {released - s.updated_ts:.3f} s too early"
        assert s.created_ts == s.updated_ts  # a new session's created_at is its first write's time


@pytest.mark.parametrize("write", ["update_state", "update_step_state", "set_current_step", "create_session"])
def test_a_session_that_expired_while_a_write_waited_starts_afresh(tmp_path, write):
    """Expiry is decided when the write applies: a session whose ttl ran out while the write waited for the lock is
    expired then, so the write starts it afresh (its old keys, label and creation time are gone)."""
    path, ttl = tmp_path / "clock.db", 0.3
    calls = {
        "update_state": lambda st: st.update_state("flow", "s", {"new": 1}),
        "update_step_state": lambda st: st.update_step_state("flow", "s", "one", {"new": 1}),
        "set_current_step": lambda st: st.set_current_step("flow", "s", "two"),
        "create_session": lambda st: st.create_session("flow", "s", label="Fresh"),
    }
    with SQLiteWorkflowStateStore(path, ttl=ttl, busy_timeout=10) as store:
        store.create_session("flow", "s", label="Old")
        store.update_state("flow", "s", {"old": 1})
        written = time.time()
        released, result = while_locked(path, lambda: calls[write](store))  # called while live, applied HOLD s later
        assert released - written > ttl  # expired by the time the write applied
        state, s = store.get_state("flow", "s"), store.get_session_summary("flow", "s")
        assert s is not None, "the write was applied, yet the session reads as expired right after it"
        assert "old" not in state and state.get("_step_one", {}).get("old") is None, state
        assert s.label in (None, "Fresh") and s.created_ts >= released - TOLERANCE, s
        if write == "create_session":
            assert result == "s"  # created: the expired session did not exist any more


def test_restore_session_writes_the_timestamps_it_is_given(tmp_path):
    "Restored times are written as given, even when they are in the future (a clock that was ahead) or long past."
    path = tmp_path / "clock.db"
    with SQLiteWorkflowStateStore(path) as store:
        future, past = time.time() + 10 * 24 * 3600, 86400.5
        store.restore_session("flow", "f", {"k": 1}, created_ts=past, updated_ts=future)
        s = store.get_session_summary("flow", "f")
        assert (s.created_ts, s.updated_ts) == (past, future)
        store.update_state("flow", "f", {"k": 2})  # a later write stamps the store's time, even if older than future
        s = store.get_session_summary("flow", "f")
        assert s.created_ts == past and abs(s.updated_ts - time.time()) < 5
        assert [x.session_id for x in store.list_sessions("flow")] == ["f"]


def test_a_clock_set_by_hand_drives_every_connection(tmp_path):
    """`store.clock = fake` (what the conformance suite does to a store whose `server_time` is False) moves time for
    every write and read, on a connection opened before it was set (another thread's) and after; `store.clock =
    time.time` gives the statements SQLite's own clock back."""
    path = tmp_path / "fake.db"
    with SQLiteWorkflowStateStore(path, ttl=60) as store, ThreadPoolExecutor(1) as other:
        assert store.server_time is False and store.clock is time.time
        in_other = lambda fn, *args: other.submit(fn, *args).result()
        in_other(store.update_state, "flow", "early", {"k": 1})  # the other thread's connection is open from here
        fake = [time.time() + 1000.0]
        store.clock = lambda: fake[0]
        in_other(store.update_state, "flow", "a", {"k": 1})
        store.update_state("flow", "b", {"k": 1})
        assert {s.session_id: s.updated_ts for s in store.list_sessions("flow")} == {"a": fake[0], "b": fake[0]}
        assert in_other(store.get_state, "flow", "early") == {}  # written 1000 s before the fake clock's now
        fake[0] += 61  # a and b expired too
        assert store.list_flows() == [] and in_other(store.session_exists, "flow", "a") is False
        in_other(store.set_current_step, "flow", "a", "one")  # starts afresh, stamped by the fake clock
        s = store.get_session_summary("flow", "a")
        assert (s.created_ts, s.updated_ts, store.get_state("flow", "a")) == (fake[0], fake[0], {})
        assert store.purge_expired() == 2 and store.count_sessions("flow") == 1
        store.clock = time.time
        assert not [sql for sql in store._q.values() if "wf_clock" in sql]
        in_other(store.update_state, "flow", "c", {"k": 1})
        assert abs(store.get_session_summary("flow", "c").updated_ts - time.time()) < 5
