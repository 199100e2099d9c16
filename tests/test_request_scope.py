"""Request scopes (`store.request_scope(sess)`) under attack, on every backend: a block that raises writes nothing;
a commit that a concurrent write pushes over the size limit writes nothing of the scope (where `_commit` is atomic);
scopes writing different keys of one session from many threads, tasks and processes lose no key; calls the snapshot
cannot serve see the scope's writes; scopes of different requests (tasks, threads) never serve each other; the
number of SQLite transactions per scope is two."""

import asyncio, multiprocessing, threading, time, uuid

import pytest

from cjm_workflow_state.backends.memory import InMemoryWorkflowStateStore
from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore
from cjm_workflow_state.errors import StateTooLargeError

from servers import make_postgres_store, postgres_schema, postgres_url, redis_url, unique_name

ATOMIC = {"memory", "sqlite", "postgres", "redis"}  # backends whose `_commit` applies a scope's writes all or none


def elsewhere(fn):
    "Run fn() in a new thread, as another request or process would (a new thread starts outside every scope)."
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0] if result else None


@pytest.fixture(scope="module")
def pg_schema():
    postgres_url()  # (skips, or fails in CI, when the server is missing)
    with postgres_schema("scope") as found:
        yield found


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def make(request, tmp_path):
    "make(**options) -> a store; every store made in one test shares one backend (file, prefix, table)."
    kind, made = request.param, []
    if kind == "memory":
        shared = {}

        def new(**options):
            if "store" not in shared:
                shared["store"] = InMemoryWorkflowStateStore(**options)
            return shared["store"]
    elif kind == "sqlite":

        def new(**options):
            return SQLiteWorkflowStateStore(tmp_path / "scope.db", **options)
    elif kind == "redis":
        from cjm_workflow_state.backends.redis import RedisWorkflowStateStore

        url, prefix = redis_url(), unique_name("scope")

        def new(**options):
            return RedisWorkflowStateStore(url, prefix=prefix, **options)
    else:
        url, schema = request.getfixturevalue("pg_schema")
        table = unique_name("t")

        def new(**options):
            return make_postgres_store(url, schema, table, **options)

    def tracked(**options):
        store = new(**options)
        made.append(store)
        return store

    tracked.kind = kind
    yield tracked
    if kind == "redis" and made:
        made[0].delete_all()
    for store in made:
        store.close()


def test_a_block_that_raises_writes_nothing(make):
    store = make()
    store.update_state("f", "s", {"a": 1})
    store.set_current_step("f", "s", "one")
    store.set_session_label("f", "s", "L")
    with pytest.raises(RuntimeError):
        with store.request_scope("s"):
            store.update_state("f", "s", {"a": 2, "b": 3})
            store.update_step_state("f", "s", "one", {"x": 1})
            store.set_current_step("f", "s", "two")
            store.set_session_label("f", "s", "M")
            store.clear_state("g", "s")
            store.update_state("g", "s", {"new": True})
            store.delete_session("f", "other")  # (another session id: runs at once, outside the scope)
            raise RuntimeError("the handler failed")
    test = (
        store.get_state("f", "s"),
        store.get_current_step("f", "s"),
        store.get_session_summary("f", "s").label,
        store.session_exists("g", "s"),
    )
    assert test == ({"a": 1}, "one", "L", False)


@pytest.mark.parametrize("use_async", [False, True])
def test_reads_inside_see_the_snapshot_and_the_scopes_writes(make, use_async):
    store, other = make(), make()
    store.update_state("f", "s", {"a": 1})

    async def run():
        async with store.request_scope("s"):
            await store.aupdate_state("f", "s", {"b": 2})
            elsewhere(lambda: other.update_state("f", "s", {"c": 3}))  # another request's write, after the snapshot
            inside = await store.aget_state("f", "s")
        return inside

    if use_async:
        inside = asyncio.run(run())
    else:
        with store.request_scope("s"):
            store.update_state("f", "s", {"b": 2})
            elsewhere(lambda: other.update_state("f", "s", {"c": 3}))
            inside = store.get_state("f", "s")
    assert inside == {"a": 1, "b": 2}  # the snapshot plus the scope's own write, not the later one
    assert store.get_state("f", "s") == {"a": 1, "b": 2, "c": 3}  # the commit merges key by key: nothing lost


def test_a_commit_pushed_over_the_limit_writes_nothing(make):
    store, other = make(max_state_bytes=64), make(max_state_bytes=64)
    store.update_state("f", "s", {"k": "x" * 10})
    store.set_current_step("f", "s", "one")
    with pytest.raises(StateTooLargeError):
        with store.request_scope("s"):
            store.set_current_step("f", "s", "two")
            store.update_state("f", "s", {"n": "y" * 20})  # fits the snapshot: 37 bytes
            elsewhere(
                lambda: other.update_state("f", "s", {"k": "x" * 30})
            )  # meanwhile the stored state grows: the commit would be 67
    state, step = store.get_state("f", "s"), store.get_current_step("f", "s")
    assert state == {"k": "x" * 30}
    if make.kind in ATOMIC:
        assert step == "one"  # the whole scope or none of it
    else:
        assert step in ("one", "two")  # (the default `_commit`: each write atomic on its own)


def test_errors_are_raised_at_the_call_and_nothing_of_them_is_buffered(make):
    store = make(max_state_bytes=40)
    with store.request_scope("s"):
        store.update_state("f", "s", {"a": "x" * 10})
        with pytest.raises(StateTooLargeError):
            store.update_state("f", "s", {"b": "y" * 30})
        with pytest.raises(TypeError):
            store.update_state("f", "s", {"c": object()})
        with pytest.raises(ValueError):
            store.set_current_step("f", "s", "")
        assert store.get_state("f", "s") == {"a": "x" * 10}
    assert store.get_state("f", "s") == {"a": "x" * 10}


def test_scopes_in_threads_and_tasks_lose_no_key(make):
    stores = [make() for _ in range(4)]

    def worker(t):
        store = stores[t]
        for i in range(10):
            with store.request_scope("shared"):
                before = store.get_state("shared_flow", "shared")
                store.update_state("shared_flow", "shared", {f"t{t}-{i}": len(before)})
                store.update_step_state("shared_flow", "shared", "step", {f"t{t}-{i}": i})

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    async def task(i):
        async with stores[0].request_scope("shared"):
            await asyncio.sleep(0)  # every task holds its snapshot here
            await stores[0].aupdate_state("shared_flow", "shared", {f"task-{i}": i})

    async def tasks():
        await asyncio.gather(*(task(i) for i in range(20)))

    asyncio.run(tasks())
    state = stores[0].get_state("shared_flow", "shared")
    expected = {f"t{t}-{i}" for t in range(4) for i in range(10)} | {f"task-{i}" for i in range(20)}
    assert set(state) - {"_step_step"} == expected
    assert len(state["_step_step"]) == 40  # per-key merges inside a step's state too


def _process_writer(args):
    kind, where, worker = args
    if kind == "sqlite":
        store = SQLiteWorkflowStateStore(where)
    else:
        from cjm_workflow_state.backends.redis import RedisWorkflowStateStore

        store = RedisWorkflowStateStore(where[0], prefix=where[1])
    with store:
        for i in range(15):
            with store.request_scope("shared"):
                store.update_state("flow", "shared", {f"p{worker}-{i}": i})
                store.set_current_step("flow", "shared", f"p{worker}")


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_scopes_in_processes_lose_no_key(kind, tmp_path):
    where = str(tmp_path / "procs.db") if kind == "sqlite" else (redis_url(), unique_name("scope_procs"))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_process_writer, [(kind, where, w) for w in range(4)])
    if kind == "sqlite":
        store = SQLiteWorkflowStateStore(where)
    else:
        from cjm_workflow_state.backends.redis import RedisWorkflowStateStore

        store = RedisWorkflowStateStore(where[0], prefix=where[1])
    with store:
        try:
            assert len(store.get_state("flow", "shared")) == 60
            assert store.get_current_step("flow", "shared") in {f"p{w}" for w in range(4)}
        finally:
            if kind == "redis":
                store.delete_all()


def test_calls_the_snapshot_cannot_serve_see_the_scopes_writes(make):
    store = make()
    with store.request_scope("s"):
        store.update_state("f", "s", {"a": 1})
        assert [x.session_id for x in store.list_sessions("f")] == ["s"]
        assert store.count_sessions("f") == 1 and store.list_flows() == ["f"]
        assert store.get_session_summary("f", "s").state_size_bytes == len('{"a":1}')
        store.update_state("f", "s", {"b": 2})
        assert [r["state"] for r in store.export_sessions("f")] == [{"a": 1, "b": 2}]
        store.update_state("f", "s", {"c": 3})
        store.rekey_session("s", "moved")  # moves what the scope wrote; the snapshot ends
        assert store.get_state("f", "s") == {} and store.get_state("f", "moved") == {"a": 1, "b": 2, "c": 3}
        store.update_state("f", "s", {"after": True})  # runs as outside a scope
    assert store.get_state("f", "s") == {"after": True}


def test_a_scope_serves_only_its_own_request(make):
    store = make()
    seen = {}

    async def request(name, sid, other_sid):
        async with store.request_scope(sid):
            await store.aupdate_state("f", sid, {"by": name})
            await asyncio.sleep(0.01)  # the other request runs now
            seen[name] = (await store.aget_state("f", sid), await store.aget_state("f", other_sid))

    async def both():
        await asyncio.gather(request("A", "a", "b"), request("B", "b", "a"))

    asyncio.run(both())
    # each request reads its own write from its scope, and the other's session from the store (not yet committed)
    assert seen["A"][0] == {"by": "A"} and seen["B"][0] == {"by": "B"}
    assert store.get_state("f", "a") == {"by": "A"} and store.get_state("f", "b") == {"by": "B"}
    with store.request_scope("a"):
        elsewhere(lambda: store.update_state("f", "a", {"thread": True}))  # a thread without a scope writes at once
        assert store.get_state("f", "a") == {"by": "A"}  # the scope's snapshot
    assert store.get_state("f", "a") == {"by": "A", "thread": True}


def test_a_nested_scope_joins_the_outer_one(make):
    store = make()
    with store.request_scope("s"):
        store.update_state("f", "s", {"outer": 1})
        with store.request_scope("s"):
            store.update_state("f", "s", {"inner": 2})
            assert store.get_state("f", "s") == {"outer": 1, "inner": 2}
        assert store.get_state("f", "s") == {"outer": 1, "inner": 2}
        other = make()
        assert elsewhere(lambda: other.get_state("f", "s")) == {}  # nothing committed before the outer scope ends
    assert store.get_state("f", "s") == {"outer": 1, "inner": 2}


def test_sqlite_a_scope_is_two_transactions(tmp_path):
    store = SQLiteWorkflowStateStore(tmp_path / "count.db")
    store.update_state("wizard", "s", {"name": "Ada"})
    store.update_state("other", "s", {"x": 1})
    statements = []
    conn, _ = store._cx()
    conn.set_trace_callback(statements.append)
    with store.request_scope("s"):  # what a StepFlow step POST does
        store.get_state("wizard", "s")
        store.get_current_step("wizard", "s")
        store.update_state("wizard", "s", {"email": "ada@example.com"})
        store.set_current_step("wizard", "s", "plan")
        store.get_state("wizard", "s")
        store.get_state("other", "s")
    conn.set_trace_callback(None)
    transactions, depth = 0, 0
    for sql in statements:
        word = sql.split()[0].upper()
        if word == "BEGIN":
            transactions += 1
            depth += 1
        elif word in ("COMMIT", "ROLLBACK"):
            depth -= 1
        elif depth == 0:
            transactions += 1  # a statement in its own (autocommit) transaction
    assert transactions == 2, statements
    assert store.get_state("wizard", "s") == {"name": "Ada", "email": "ada@example.com"}
    assert store.get_current_step("wizard", "s") == "plan"


# ---- a scope's writes, checked against the in-memory store running the same scenario (its commit is all or none) ----
from hypothesis import HealthCheck, given, settings, strategies as st

FLOWS, KEYS, STEPS = ["f", "g"], ["a", "b", "_step_one"], ["one", "two"]
_values = st.one_of(
    st.integers(-3, 3),
    st.text("xy", max_size=30),
    st.lists(st.integers(0, 9), max_size=4),
    st.dictionaries(st.sampled_from(["p", "q"]), st.integers(0, 9), max_size=2),
)
_writes = st.lists(
    st.one_of(
        st.tuples(
            st.just("update"),
            st.sampled_from(FLOWS),
            st.dictionaries(st.sampled_from(KEYS), _values, min_size=1, max_size=2),
        ),
        st.tuples(
            st.just("update_step"),
            st.sampled_from(FLOWS),
            st.sampled_from(STEPS),
            st.dictionaries(st.sampled_from(["p", "q", "r"]), _values, min_size=1, max_size=2),
        ),
        st.tuples(st.just("clear_step"), st.sampled_from(FLOWS), st.sampled_from(STEPS)),
        st.tuples(st.just("set_step"), st.sampled_from(FLOWS), st.sampled_from(STEPS)),
        st.tuples(st.just("label"), st.sampled_from(FLOWS), st.one_of(st.none(), st.sampled_from(["L", "M"]))),
        st.tuples(st.just("clear"), st.sampled_from(FLOWS)),
        st.tuples(
            st.just("outside"),
            st.sampled_from(FLOWS),  # large: a commit it pushes over the limit is refused whole
            st.dictionaries(st.sampled_from(KEYS), st.text("xy", min_size=15, max_size=40), min_size=1, max_size=2),
        ),
    ),
    max_size=10,
)


def _scenario(store, sid, before, inside):
    "Writes outside a scope, then a scope's writes (with other requests' writes meanwhile): what each raised, and the end."
    outcome = []

    def run(op):
        kind, flow, *rest = op
        try:
            if kind in ("update", "outside"):
                store.update_state(flow, sid, rest[0])
            elif kind == "update_step":
                store.update_step_state(flow, sid, rest[0], rest[1])
            elif kind == "clear_step":
                store.clear_step_state(flow, sid, rest[0])
            elif kind == "set_step":
                store.set_current_step(flow, sid, rest[0])
            elif kind == "label":
                outcome.append(store.set_session_label(flow, sid, rest[0]))
            else:
                store.clear_state(flow, sid)
        except ValueError as e:
            outcome.append(type(e).__name__)

    for op in before:
        run(op)
    try:
        with store.request_scope(sid):
            for op in inside:
                if op[0] == "outside":
                    elsewhere(lambda: run(op))  # another request's write, committed at once
                else:
                    run(op)
    except ValueError as e:
        outcome.append(f"commit: {type(e).__name__}")
    end = {}
    for flow in FLOWS:
        summary = store.get_session_summary(flow, sid)
        end[flow] = summary and (
            store.get_state(flow, sid),
            summary.current_step,
            summary.label,
            summary.state_size_bytes,
        )
    return outcome, end


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(before=_writes, inside=_writes)
def _same_as_the_model(make, before, inside):
    sid = f"h-{uuid.uuid4().hex[:8]}"
    model = InMemoryWorkflowStateStore(max_state_bytes=90)
    assert _scenario(make(max_state_bytes=90), sid, before, inside) == _scenario(model, sid, before, inside)


def test_a_scopes_writes_commit_as_the_model_does(make):
    "Any mix of writes in a scope, with other requests writing meanwhile, ends as on the in-memory store."
    stores = {}

    def cached(**options):  # one store per test (a fresh session id per example)
        return stores.setdefault("store", make(**options))

    _same_as_the_model(cached)


# ---- the async calls on the event loop (redis.asyncio, psycopg's async pool) when the connection fails ----
from urllib.parse import urlsplit

from cjm_workflow_state.errors import StoreUnavailableError
from faultproxy import FaultProxy


@pytest.fixture(params=["redis", "postgres"])
def proxied(request):
    "(store behind a fault proxy, the proxy, a store reaching the server directly): native async stores."
    if request.param == "redis":
        from cjm_workflow_state.backends.redis import RedisWorkflowStateStore

        url, prefix = redis_url(), unique_name("scope_faults")
        proxy = FaultProxy("127.0.0.1", urlsplit(url).port or 6379).start()
        store = RedisWorkflowStateStore(proxy.url(url), prefix=prefix, socket_timeout=2, socket_connect_timeout=1)
        direct = RedisWorkflowStateStore(url, prefix=prefix)
    else:
        url, schema = request.getfixturevalue("pg_schema")
        proxy = FaultProxy("127.0.0.1", urlsplit(url).port or 5432).start()
        table = unique_name("t")
        store = make_postgres_store(proxy.url(url), schema, table, connect_timeout=1, pool_timeout=2)
        direct = make_postgres_store(url, schema, table)
    assert store.native_async
    try:
        yield store, proxy, direct
    finally:
        proxy.close()
        store.close()
        if request.param == "redis":
            direct.delete_all()
        direct.close()


def test_async_calls_outage_and_recovery(proxied):
    store, proxy, direct = proxied

    async def run():
        await store.aupdate_state("f", "s", {"a": 1})
        proxy.refuse(True)
        proxy.cut_all()  # the server is gone
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.aget_state("f", "s")
        with pytest.raises(StoreUnavailableError):
            await store.aupdate_state("f", "s", {"b": 2})
        assert time.monotonic() - start < 10  # within the store's timeouts, not hanging
        proxy.refuse(False)  # back: the pool reconnects
        for _ in range(50):
            try:
                state = await store.aget_state("f", "s")
                break
            except StoreUnavailableError:
                await asyncio.sleep(0.1)
        await store.aclose()
        return state

    assert asyncio.run(run()) == {"a": 1}
    assert direct.get_state("f", "s") == {"a": 1}  # the refused update wrote nothing


def test_async_commit_whose_reply_is_lost(proxied):
    "A commit sent, then its connection dropped before the reply: Redis repeats it once (it runs once per token);"
    "PostgreSQL says the outcome is unknown. Either way no write happens twice and none is invented."
    store, proxy, direct = proxied

    async def run():
        await store.aupdate_state("f", "s", {"n": 0})
        try:
            async with store.request_scope("s"):
                await store.aupdate_state("f", "s", {"n": 1})
                await store.aset_current_step("f", "s", "two")
                proxy.drop_replies(1)  # the commit's reply (the load's came back)
            outcome = "written"
        except StoreUnavailableError as e:
            assert "outcome is unknown" in str(e), e
            outcome = "unknown"
        await store.aclose()
        return outcome

    outcome = asyncio.run(run())
    assert proxy.stats["replies_dropped"] == 1
    state, step = direct.get_state("f", "s"), direct.get_current_step("f", "s")
    if type(store).__name__ == "RedisWorkflowStateStore":
        assert (outcome, state, step) == ("written", {"n": 1}, "two")
    else:  # the server ran the pipelined batch before the reply was lost: all of it or none of it, never a part
        assert outcome == "unknown" and (state, step) in (({"n": 0}, None), ({"n": 1}, "two")), (outcome, state, step)


# ---- PostgreSQL: a commit's statements are prepared on the server; a failed batch must not break the next call ----
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_postgres_failed_batches_leave_prepared_statements_usable(pg_schema, use_async):
    """With every statement prepared at once (prepare_threshold=0), commits whose pipelined batch fails (a merge that
    another writer made too large meanwhile: the batch fails, the careful path raises StateTooLargeError) alternate
    with commits that succeed. Each failure must leave the store usable: no "prepared statement does not exist"."""
    url, schema = pg_schema
    store = make_postgres_store(url, schema, max_state_bytes=2000, prepare_threshold=0, max_size=1)
    other = make_postgres_store(url, schema, table=store.table)

    async def scoped(i, grow):
        async with store.request_scope("s"):
            await store.aupdate_state("f", "s", {"n": i, "pad": "x" * 700})
            await store.aset_current_step("f", "s", f"step{i}")
            if grow:
                other.update_state("f", "s", {"big": "y" * 1400})  # meanwhile, another writer fills the session

    def sync_scoped(i, grow):
        with store.request_scope("s"):
            store.update_state("f", "s", {"n": i, "pad": "x" * 700})
            store.set_current_step("f", "s", f"step{i}")
            if grow:
                other.update_state("f", "s", {"big": "y" * 1400})

    async def run():
        for i in range(12):
            grow = i % 3 == 1
            if grow:
                with pytest.raises(StateTooLargeError):
                    await scoped(i, grow)
                other.clear_state("f", "s")
            else:
                await scoped(i, grow)
            assert (await store.aget_current_step("f", "s") == f"step{i}") == (
                not grow
            )  # a failed commit wrote nothing
        await store.aclose()

    try:
        if use_async:
            asyncio.run(run())
        else:
            for i in range(12):
                grow = i % 3 == 1
                if grow:
                    with pytest.raises(StateTooLargeError):
                        sync_scoped(i, grow)
                    other.clear_state("f", "s")
                else:
                    sync_scoped(i, grow)
                assert (store.get_current_step("f", "s") == f"step{i}") == (not grow)
    finally:
        if not use_async:
            store.close()
        other.close()


def test_postgres_async_calls_wait_for_a_busy_connection_at_most_pool_timeout(pg_schema):
    "max_size connections per event loop: a call finding them all busy waits up to pool_timeout, then is unavailable."
    url, schema = pg_schema
    store = make_postgres_store(url, schema, max_size=1, pool_timeout=0.5)

    async def run():
        await store.aupdate_state("f", "s", {"a": 1})

        async def busy(conn):
            await conn.execute("SELECT pg_sleep(1.5)")

        holder = asyncio.create_task(store._acall(busy))  # the only connection, for 1.5 s
        await asyncio.sleep(0.2)
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="busy"):
            await store.aget_state("f", "s")
        waited = time.monotonic() - start
        await holder
        assert await store.aget_state("f", "s") == {"a": 1}  # free again: served
        await store.aclose()
        return waited

    waited = asyncio.run(run())
    assert 0.4 < waited < 1.4, waited


@pytest.mark.parametrize("ttl", [None, 1])
def test_postgres_a_step_commits_answers_and_step_in_one_statement(pg_schema, ttl, monkeypatch):
    """A scope's update_state then set_current_step of one flow (a StepFlow step) is one upsert: on an absent, a live
    and (with a ttl) an expired session it writes what the two statements wrote."""
    url, schema = pg_schema
    store = make_postgres_store(url, schema, ttl=ttl)
    sent = []
    commit_statements = type(store)._commit_statements
    monkeypatch.setattr(
        store,
        "_commit_statements",
        lambda sid, writes: sent.append(list(commit_statements(store, sid, writes))) or sent[-1],
    )

    def step(updates, step_id, label=None):
        with store.request_scope("s"):
            store.update_state("f", "s", updates)
            store.set_current_step("f", "s", step_id)

    try:
        step({"a": 1}, "one")  # absent: created with both
        first = store.get_session_summary("f", "s")
        assert (store.get_state("f", "s"), first.current_step, first.state_size_bytes) == (
            {"a": 1},
            "one",
            len('{"a":1}'),
        )
        time.sleep(0.01)
        step({"b": [2, {"x": None}]}, "two")  # live: merged, step replaced, created kept, updated moved
        second = store.get_session_summary("f", "s")
        assert (store.get_state("f", "s"), second.current_step) == ({"a": 1, "b": [2, {"x": None}]}, "two")
        assert second.created_ts == first.created_ts and second.updated_ts > first.updated_ts
        assert second.state_size_bytes == len('{"a":1,"b":[2,{"x":null}]}')
        assert [len(statements) for statements in sent] == [1, 1]
        if ttl:
            time.sleep(1.2)  # expired: counts as absent, so the upsert starts it afresh
            step({"c": 3}, "three")
            third = store.get_session_summary("f", "s")
            assert (store.get_state("f", "s"), third.current_step) == ({"c": 3}, "three")
            assert third.created_ts > second.updated_ts
        with store.request_scope("s"):  # a set_current_step not after a merge, and one of another flow: their own
            store.set_current_step("f", "s", "four")
            store.update_state("g", "s", {"z": 0})
            store.set_current_step("f", "s", "five")
        assert (
            len(sent[-1]) == 3 and store.get_current_step("f", "s") == "five" and store.get_state("g", "s") == {"z": 0}
        )
    finally:
        store.close()


def test_sqlite_a_step_on_a_live_session_commits_as_one_statement(tmp_path):
    """update_state then set_current_step of a session the scope found live: one UPDATE, no BEGIN/COMMIT. When the
    session changed meanwhile (deleted, grown past the limit), the UPDATE changes nothing and the transaction decides."""
    statements = []

    class Traced(SQLiteWorkflowStateStore):
        def _cx(self):
            conn, lock = super()._cx()
            conn.set_trace_callback(statements.append)
            return conn, lock

    store, other = Traced(tmp_path / "s.db", max_state_bytes=300), SQLiteWorkflowStateStore(tmp_path / "s.db")

    def step(updates, step_id, meanwhile=lambda: None):
        statements.clear()
        with store.request_scope("s"):
            store.update_state("f", "s", updates)
            store.set_current_step("f", "s", step_id)
            meanwhile()
        return [sql.split()[0].upper() for sql in statements]

    try:
        assert "BEGIN" in step({"a": 1}, "one")  # a new session: the transaction
        assert step({"b": 2}, "two") == ["SELECT", "UPDATE"]  # live: load, one UPDATE
        assert (store.get_state("f", "s"), store.get_current_step("f", "s")) == ({"a": 1, "b": 2}, "two")
        assert "BEGIN" in step(
            {"c": 3}, "three", lambda: other.delete_session("f", "s")
        )  # gone meanwhile: created anew
        assert (store.get_state("f", "s"), store.get_current_step("f", "s")) == ({"c": 3}, "three")
        with pytest.raises(StateTooLargeError):  # grown meanwhile past the limit: refused whole
            step({"d": "x" * 100}, "four", lambda: other.update_state("f", "s", {"big": "y" * 200}))
        assert (store.get_state("f", "s"), store.get_current_step("f", "s")) == ({"c": 3, "big": "y" * 200}, "three")
    finally:
        store.close()
        other.close()


# ---- from a hostile review: event loops one after another, opposite write orders, closing mid-flight ----
@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_event_loops_one_after_another_free_their_connections(backend, request):
    """asyncio.run again and again, with more concurrent calls than connections: each finished loop's connections
    are let go (a loop used to stay referenced by its own pool: up to max_size connections leaked per loop)."""
    import gc

    if backend == "redis":
        from cjm_workflow_state.backends.redis import RedisWorkflowStateStore

        store = RedisWorkflowStateStore(redis_url(), prefix=unique_name("loops"))
    else:
        store = make_postgres_store(*request.getfixturevalue("pg_schema"), max_size=2)

    async def once(i):
        await asyncio.gather(*[store.aupdate_state("f", "s", {f"k{i}_{j}": j}) for j in range(6)])

    try:
        for i in range(12):
            asyncio.run(once(i))
        gc.collect()
        assert len(store._async_pools) <= 1  # the last loop's, until the next loop's first call
        assert len(store.get_state("f", "s")) == 12 * 6
    finally:
        if backend == "redis":
            store.delete_all()
        store.close()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_postgres_scopes_writing_two_flows_in_opposite_orders_do_not_deadlock(pg_schema, use_async):
    "Scopes writing flows f then g and g then f at once: each commit locks its rows in one order, so none deadlocks."
    url, schema = pg_schema
    store = make_postgres_store(url, schema, max_size=8)
    store.update_state("f", "s", {"x": 0})
    store.update_state("g", "s", {"x": 0})
    order = {0: ("f", "g"), 1: ("g", "f")}

    def sync_scope(i):
        for j in range(10):
            with store.request_scope("s"):
                for flow in order[i % 2]:
                    store.update_state(flow, "s", {f"t{i}": j})

    async def async_scope(i):
        for j in range(10):
            async with store.request_scope("s"):
                for flow in order[i % 2]:
                    await store.aupdate_state(flow, "s", {f"t{i}": j})

    try:
        if use_async:

            async def run():
                await asyncio.gather(*[async_scope(i) for i in range(6)])
                await store.aclose()

            asyncio.run(run())
        else:
            threads = [threading.Thread(target=sync_scope, args=(i,)) for i in range(6)]
            errors = []
            for t in threads:
                t.run = (lambda run: lambda: _collect(run, errors))(t.run)
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
        check = make_postgres_store(url, schema, table=store.table)
        assert check.get_state("f", "s") == check.get_state("g", "s") == {"x": 0, **{f"t{i}": 9 for i in range(6)}}
        check.close()
    finally:
        if not use_async:
            store.close()


def _collect(run, errors):
    try:
        run()
    except BaseException as e:
        errors.append(e)


def test_sqlite_close_while_calls_are_in_flight(tmp_path):
    "Closing the store while worker threads run calls on their connections: they finish or fail cleanly, no crash."
    from cjm_workflow_state.errors import StoreUnavailableError

    store = SQLiteWorkflowStateStore(tmp_path / "close.db")

    async def run():
        async def writer(i):
            for j in range(200):
                try:
                    await asyncio.to_thread(store.update_state, "f", f"s{i}", {"n": j})
                except StoreUnavailableError:
                    return

        tasks = [asyncio.create_task(writer(i)) for i in range(8)]
        await asyncio.sleep(0.05)
        await asyncio.to_thread(store.close)
        await asyncio.gather(*tasks)

    asyncio.run(run())
    store.close()
