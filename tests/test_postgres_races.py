"""PostgresWorkflowStateStore under threads racing one another (issue 9 items 1, 6 and 15).

Needs PostgreSQL at DATABASE_URL (see servers.py). Every test works on a fresh table in a schema made for this
module, dropped at the end.
"""

import threading

import pytest

from servers import postgres_schema, make_postgres_store


@pytest.fixture(scope="module")
def pg():
    "(url, schema) for this module; the schema is dropped afterwards."
    with postgres_schema("pgrace") as url_and_schema:
        yield url_and_schema


make_store = make_postgres_store


def run_threads(n, target):
    "Run target(i) in n threads started together; return the exceptions they raised."
    errors, barrier = [], threading.Barrier(n)

    def run(i):
        try:
            barrier.wait(30)
            target(i)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


# ---- item 1: rekey_session with a ttl never loses a concurrent write ---------------------------------

N_WRITERS, N_REKEYS = 8, 25


@pytest.mark.parametrize("ttl", [3600, None])
def test_rekey_with_concurrent_writes_to_new_flows_loses_nothing(pg, ttl):
    """8 threads write new flows to the old id while the old id is rekeyed again and again: every acknowledged write
    ends up, exactly once, under the new id of a rekey that ran while or after it was made, or (after the last rekey)
    under the old id."""
    url, schema = pg
    store = make_store(url, schema, ttl=ttl, max_size=N_WRITERS + 2)
    store.update_state("warm", "old", {"k": 0})  # the table exists before the race
    new_ids = [f"new{k}" for k in range(1, N_REKEYS + 1)]
    counters = {"started": 0, "done": 0}  # rekeys started / finished so far
    acknowledged, stop = [], threading.Event()  # (flow, rekeys done before the write, rekeys started after its ack)

    def writer(i):
        n = 0
        while not stop.is_set():
            flow, done_before = f"w{i}-{n}", counters["done"]
            store.update_state(flow, "old", {"v": n})
            acknowledged.append((flow, done_before, counters["started"]))
            n += 1

    def rekeyer(_):
        try:
            for k, new in enumerate(new_ids, 1):
                counters["started"] = k
                store.rekey_session("old", new)
                counters["done"] = k
        finally:
            stop.set()

    errors = run_threads(N_WRITERS + 1, lambda i: rekeyer(i) if i == N_WRITERS else writer(i))
    assert errors == []
    holders = {}  # flow -> ids holding it (every row is live: ttl is an hour)
    for flow, sid in store._read_rows(f"SELECT flow_id, session_id FROM {store._quoted['table']}", {}):
        holders.setdefault(flow, []).append(sid)
    lost = [flow for flow, *_ in acknowledged if flow not in holders]
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged writes are under no id: {lost[:10]}"
    misplaced = []
    for flow, done_before, started_after in acknowledged:
        # rekeys 1..done_before finished before the write began: they cannot have moved it; the first rekey that
        # started after its acknowledgement (number started_after + 1) must have moved it, if there is one
        allowed = set(new_ids[done_before : started_after + 1]) | ({"old"} if started_after + 1 > N_REKEYS else set())
        if len(holders[flow]) != 1 or holders[flow][0] not in allowed:
            misplaced.append((flow, holders[flow], sorted(allowed)))
        elif store.get_state(flow, holders[flow][0]) != {"v": int(flow.split("-")[1])}:
            misplaced.append((flow, "state"))
    assert misplaced == [], misplaced[:10]
    assert len(acknowledged) > 100  # the race really ran
    store.close()


# ---- item 6: first use from many threads -------------------------------------------------------------


@pytest.mark.parametrize("pool", ["owned", "ready"])
@pytest.mark.parametrize("with_schema", [True, False])
def test_first_use_from_many_threads(pg, with_schema, pool):
    """40 threads make the very first calls of one store object on a table (and schema) that does not exist yet,
    with connections to spare (a ready pool passed in, or an owned one): every call succeeds (none finds the table
    missing while another creates it)."""
    from psycopg_pool import ConnectionPool
    from servers import unique_name

    url, schema = pg
    schema = unique_name("first") if with_schema else schema
    if pool == "ready":
        ready = ConnectionPool(url, min_size=10, max_size=10, kwargs=dict(autocommit=True), open=True)
        ready.wait(30)
        store = make_store(ready, schema)
    else:
        store = make_store(url, schema, min_size=10, max_size=10)
    try:

        def first_call(i):
            if i % 3 == 0:
                store.update_state("f", f"s{i}", {"k": i})
            elif i % 3 == 1:
                assert store.get_state("f", f"missing{i}") == {}
            else:
                store.list_sessions("f")

        errors = run_threads(40, first_call)
        assert errors == [], f"{len(errors)} of 40 first calls failed, e.g. {errors[0]!r}"
        assert sorted(s.session_id for s in store.list_sessions("f")) == sorted(f"s{i}" for i in range(0, 40, 3))
    finally:
        store.close()
        if pool == "ready":
            ready.close()
        if with_schema:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ---- item 15: update_step_state racing update_state on the same _step_ key -----------------------------


@pytest.mark.parametrize("ttl", [None, 3600])
def test_step_update_races_update_state_of_the_same_key(pg, ttl):
    """Threads replace `_step_upload` whole with update_state while others merge into it with update_step_state:
    no call fails, and the final step state is the last whole value plus every step merge acknowledged after it."""
    url, schema = pg
    store = make_store(url, schema, ttl=ttl, max_size=8)
    store.update_state("f", "s", {"_step_upload": {"base": -1}})
    n_threads, n_calls = 6, 60
    log, lock = [], threading.Lock()  # ("whole" | "step", thread, call, len(log) when the call began), in ack order

    def work(i):
        for n in range(n_calls):
            began = len(log)
            if i % 2:
                store.update_state("f", "s", {"_step_upload": {"base": i * 1000 + n}, f"top{i}": n})
                with lock:
                    log.append(("whole", i, n, began))
            else:
                store.update_step_state("f", "s", "upload", {f"t{i}-{n}": n})
                with lock:
                    log.append(("step", i, n, began))

    errors = run_threads(n_threads, work)
    assert errors == [], f"{len(errors)} calls failed, e.g. {errors[0]!r}"
    step = store.get_step_state("f", "s", "upload")
    # the whole value in the state is the last one applied; every step merge that began after it was acknowledged
    # was applied after it, so its key must be there
    base = step["base"]
    last_whole = next(j for j, (kind, i, n, _) in enumerate(log) if kind == "whole" and i * 1000 + n == base)
    later = {f"t{i}-{n}" for kind, i, n, began in log if kind == "step" and began > last_whole}
    assert later <= set(step), sorted(later - set(step))
    assert isinstance(step.get("base"), int)
    assert all(store.get_state("f", "s")[f"top{i}"] == n_calls - 1 for i in range(1, n_threads, 2))
    from cjm_workflow_state.testing import canonical_size

    assert store.get_session_summary("f", "s").state_size_bytes == canonical_size(store.get_state("f", "s"))
    store.close()
