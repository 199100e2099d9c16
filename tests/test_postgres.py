"""System tests of PostgresWorkflowStateStore: many processes, forks, app restarts, two app servers, outages.

Needs PostgreSQL at DATABASE_URL (see servers.py). The tests work in a schema made for this run, dropped at the end.
The shared server is never stopped: outages are played with a closed port and with the fault proxy
(tests/faultproxy.py) in front of it, refusing and cutting connections. PGBOUNCER_URL (optional) runs the suite
through PgBouncer.
"""

import json, multiprocessing as mp
import socket, threading, time

import pytest

from faultproxy import FaultProxy
from servers import free_port, make_postgres_store, postgres_schema, postgres_url, unique_name

FLOW = "flow"


@pytest.fixture(scope="module")
def pg():
    "(url, schema) for this module; the schema is dropped afterwards."
    with postgres_schema("pg") as url_and_schema:
        yield url_and_schema


def make_store(url, schema, table, **options):
    "`make_postgres_store` with a pool of at most 2 connections unless told otherwise (many processes share the server)."
    return make_postgres_store(url, schema, table, **{"max_size": 2, **options})


# ---- many processes, one session ------------------------------------------------------------------

N_PROCESSES, N_KEYS, N_STEP_KEYS = 4, 300, 50


def _writer(url, schema, table, worker, start):
    "One process: its own store object, N_KEYS distinct top-level keys and N_STEP_KEYS step keys into one session."
    store = make_store(url, schema, table)
    start.wait(60)
    for i in range(N_KEYS):
        store.update_state(FLOW, "shared", {f"w{worker}-{i}": [worker, i]})
        if i < N_STEP_KEYS:
            store.update_step_state(FLOW, "shared", "upload", {f"w{worker}-{i}": i})
    store.close()


def test_processes_never_lose_updates(pg):
    url, schema = pg
    table = unique_name("t")
    with make_store(url, schema, table) as store:
        store.create_session(FLOW, "shared")  # creates the table before the race
        ctx = mp.get_context("spawn")
        start = ctx.Event()
        procs = [ctx.Process(target=_writer, args=(url, schema, table, w, start)) for w in range(N_PROCESSES)]
        for p in procs:
            p.start()
        time.sleep(0.5)
        start.set()
        for p in procs:
            p.join(180)
        assert [p.exitcode for p in procs] == [0] * N_PROCESSES
        state = store.get_state(FLOW, "shared")
        step = state.pop("_step_upload")
        assert state == {f"w{w}-{i}": [w, i] for w in range(N_PROCESSES) for i in range(N_KEYS)}
        assert step == {f"w{w}-{i}": i for w in range(N_PROCESSES) for i in range(N_STEP_KEYS)}
        from cjm_workflow_state.testing import canonical_size

        assert store.get_session_summary(FLOW, "shared").state_size_bytes == canonical_size(
            store.get_state(FLOW, "shared")
        )


def test_concurrent_first_use_creates_the_table_once(pg):
    "Several app processes starting at once on a new table: the schema set-up is serialised, no one fails."
    url, schema = pg
    table, errors = unique_name("t"), []
    stores = [make_store(url, schema, table) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def first_call(i):
        try:
            barrier.wait()
            stores[i].update_state(FLOW, f"s{i}", {"k": i})
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=first_call, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(s.session_id for s in stores[0].list_sessions(FLOW)) == ["s0", "s1", "s2", "s3"]
    for s in stores:
        s.close()


_FORKED = {}  # what a forked child finds in memory


def _backend_pid(store) -> int:
    "The server process id of the connection the store's (one-connection) pool hands out."
    return store._run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone()[0])


def _child_writes(queue):
    store = _FORKED["store"]
    store.update_state(FLOW, "child", {"from": "child"})
    queue.put(_backend_pid(store))


def test_forked_child_opens_its_own_connections(pg):
    "A store used before a fork (gunicorn --preload): the child opens its own; the parent's connection is untouched."
    import warnings

    url, schema = pg
    store = _FORKED["store"] = make_store(url, schema, unique_name("t"), min_size=1, max_size=1)
    store.update_state(FLOW, "parent", {"from": "parent"})
    before = _backend_pid(store)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "use of fork() may lead to deadlocks": what we test
        child = ctx.Process(target=_child_writes, args=(queue,))
        child.start()
        child_pid = queue.get(timeout=60)
        child.join(60)
    assert child.exitcode == 0
    assert child_pid != before  # the child had a connection of its own
    assert _backend_pid(store) == before  # the parent's session survived: the child neither used nor closed it
    assert store.get_state(FLOW, "child") == {"from": "child"}
    store.update_state(FLOW, "parent", {"again": True})
    assert store.get_state(FLOW, "parent") == {"from": "parent", "again": True}
    store.close()


# ---- StepFlow: the app restarts, the user resumes --------------------------------------------------


def test_stepflow_resumes_after_restart(pg):
    "A new app and a new store object on the same table, same cookies: the wizard resumes at step 3 with its data."
    from wizard import EXPECTED_STATE, FLOW_ID, make_wizard_app, step_of

    url, schema = pg
    table = unique_name("t")
    first = make_wizard_app(make_store(url, schema, table))
    paths = {route.path for route in first.app.routes}
    assert {first.url(r) for r in ("start", "next_step")} <= paths, sorted(paths)
    browser = first.client()
    assert step_of(browser.start()) == "name"
    assert step_of(browser.submit(name=EXPECTED_STATE["name"])) == "email"
    assert step_of(browser.submit(email=EXPECTED_STATE["email"])) == "plan"
    cookies, session_id = dict(browser.http.cookies), browser.session_id
    first.store.close()  # the app process goes away

    second = make_wizard_app(make_store(url, schema, table))
    resumed = second.client(cookies=cookies)
    assert resumed.session_id == session_id
    html = resumed.start()
    assert step_of(html) == "plan", html
    assert resumed.state == {"name": EXPECTED_STATE["name"], "email": EXPECTED_STATE["email"]}
    assert step_of(resumed.submit(plan=EXPECTED_STATE["plan"])) == "confirm"
    assert step_of(resumed.submit()) == "complete"
    assert second.completed == [EXPECTED_STATE]
    assert not second.store.session_exists(FLOW_ID, session_id)
    second.store.close()


# ---- two app servers, one user ---------------------------------------------------------------------


def test_two_app_servers_serve_one_wizard(pg):
    "Two uvicorn processes on one table; one user's requests alternate between them; the wizard completes with all data."
    from wizard_app import run_wizard_on_two_servers

    url, schema = pg
    ports = [free_port()]
    while len(ports) < 2:
        port = free_port()
        if port not in ports:
            ports.append(port)
    run_wizard_on_two_servers(url, {"schema": schema, "table": unique_name("t")}, ports)


# ---- outages ---------------------------------------------------------------------------------------


def test_unreachable_server_raises_within_bounded_time():
    "Nothing listens on the port: StoreUnavailableError naming host:port, after about pool_timeout seconds."
    from cjm_workflow_state import StoreUnavailableError
    from cjm_workflow_state.backends.postgres import PostgresWorkflowStateStore

    port = free_port()
    store = PostgresWorkflowStateStore(f"postgresql://postgres@127.0.0.1:{port}/test", pool_timeout=1.5)
    for call in [
        lambda: store.get_state(FLOW, "s"),
        lambda: store.update_state(FLOW, "s", {"k": 1}),
        lambda: store.list_sessions(FLOW),
    ]:
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
            call()
        assert time.monotonic() - start < 5
    store.close()


def test_outage_and_recovery(pg):
    "The server goes away (the proxy refuses and cuts every connection): calls fail fast naming the address; it comes back: the same store works."
    from cjm_workflow_state import StoreUnavailableError
    from psycopg.conninfo import conninfo_to_dict

    url, schema = pg
    target = conninfo_to_dict(url)
    proxy = FaultProxy(target.get("host") or "127.0.0.1", int(target.get("port") or 5432)).start()
    store = make_store(proxy.url(url), schema, unique_name("t"), max_size=3, pool_timeout=1.5)

    def server_down():
        proxy.refuse()
        proxy.cut_all()

    try:
        store.update_state(FLOW, "s", {"before": 1})
        store.set_current_step(FLOW, "s", "two")
        server_down()
        for call in [
            lambda: store.get_state(FLOW, "s"),
            lambda: store.update_state(FLOW, "s", {"during": 1}),
            lambda: store.set_current_step(FLOW, "s", "three"),
        ]:
            start = time.monotonic()
            with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{proxy.port}"):
                call()
            assert time.monotonic() - start < 5
        proxy.refuse(False)  # the server is back, same address
        store.update_state(FLOW, "s", {"after": 2})  # the very first call works: no restart, no warm-up
        assert store.get_state(FLOW, "s") == {"before": 1, "after": 2}
        assert store.get_current_step(FLOW, "s") == "two"
        server_down()  # and once more, with connections that were in use
        with pytest.raises(StoreUnavailableError):
            store.get_state(FLOW, "s")
        proxy.refuse(False)
        assert store.get_state(FLOW, "s") == {"before": 1, "after": 2}
    finally:
        store.close()
        proxy.close()


# ---- layout 1 (a pre-release of 0.1.0) is upgraded in place -----------------------------------------


def test_layout_1_table_is_upgraded(pg):
    """A table of layout 1 (`meta` entries as arrays): the first store of this version renames the slots in place;
    its sessions then read, merge (top level and step) and measure exactly as if written by this version."""
    import psycopg
    from cjm_workflow_state.testing import canonical_size

    url, schema = pg
    table = unique_name("t")
    with make_store(url, schema, table) as creator:
        creator.list_flows()  # the table, empty
    step = '"_step_x"'
    member = step + ':{"p":2,"q":"z"}'
    state = {'"a"': "1", step: {'"p"': "2", '"q"': '"z"'}}  # encoded key -> value text (sub-members for the step)
    meta = {'"a"': [1, 5], step: [2, len(member), 2, 2, 12, {'"p"': [1, 5], '"q"': [2, 7]}]}  # layout 1
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{schema}"."{table}" (flow_id, session_id, state, meta, n_items, items_len, next_seq, '
            f"created_at, updated_at) VALUES (%s, %s, %s, %s, 2, %s, 2, 1.7e9, 1.7e9)",
            (FLOW, "old", json.dumps(state), json.dumps(meta), 5 + len(member)),
        )
        plain = '"_step_y":{"a":1}'  # a dict update_state wrote whole: one member, no sub-members
        conn.execute(
            f'INSERT INTO "{schema}"."{table}" (flow_id, session_id, state, meta, n_items, items_len, next_seq, '
            f"created_at, updated_at) VALUES (%s, %s, %s, %s, 1, %s, 1, 1.7e9, 1.7e9)",
            (
                FLOW,
                "plain",
                json.dumps({'"_step_y"': '{"a":1}'}),
                json.dumps({'"_step_y"': [1, len(plain)]}),
                len(plain),
            ),
        )
        conn.execute(f"UPDATE \"{schema}\".\"{table}_meta\" SET value = '1' WHERE key = 'schema_version'")
    with make_store(url, schema, table) as store:
        assert list(store.get_state(FLOW, "old").items()) == [("a", 1), ("_step_x", {"p": 2, "q": "z"})]
        store.update_step_state(FLOW, "old", "x", {"r": 3, "p": 4})
        store.update_state(FLOW, "old", {"b": [5], "a": 6})
        expected = {"a": 6, "_step_x": {"p": 4, "q": "z", "r": 3}, "b": [5]}
        got = store.get_state(FLOW, "old")
        assert (list(got.items()), list(got["_step_x"])) == (list(expected.items()), ["p", "q", "r"])
        assert store.get_session_summary(FLOW, "old").state_size_bytes == canonical_size(expected)
        store.update_step_state(FLOW, "plain", "y", {"b": 2})
        assert store.get_state(FLOW, "plain") == {"_step_y": {"a": 1, "b": 2}}
        assert store.get_session_summary(FLOW, "plain").state_size_bytes == canonical_size(
            {"_step_y": {"a": 1, "b": 2}}
        )
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute(f'SELECT value FROM "{schema}"."{table}_meta" WHERE key = \'schema_version\'').fetchone()
        entry = conn.execute(f'SELECT meta->\'"_step_x"\' FROM "{schema}"."{table}"').fetchone()[0]
    assert version == ("2",)
    assert entry == {
        "seq": 2,
        "len": len('"_step_x":{"p":4,"q":"z","r":3}'),
        "next_seq": 4,
        "n_items": 3,
        "items_len": 17,
        "items": {'"p"': {"seq": 1, "len": 5}, '"q"': {"seq": 2, "len": 7}, '"r"': {"seq": 3, "len": 5}},
    }


# ---- PgBouncer -------------------------------------------------------------------------------------


@pytest.fixture
def pgbouncer():
    """A private PgBouncer in transaction pooling mode on a free port, in front of DATABASE_URL's server: its URL.
    Uses PGBOUNCER_URL instead when set. Without the pgbouncer binary: skipped, or a failure in CI."""
    import os, shutil, subprocess, tempfile
    from pathlib import Path
    from urllib.parse import urlsplit
    from servers import in_ci

    if os.environ.get("PGBOUNCER_URL"):
        yield os.environ["PGBOUNCER_URL"]
        return
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if binary is None:
        message = "PgBouncer test did not run: no pgbouncer binary (apt-get install pgbouncer, or set PGBOUNCER_URL)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    target, port = urlsplit(postgres_url()), free_port()
    user = target.username or "postgres"
    tmp_path = Path(
        tempfile.mkdtemp(prefix="cjm-pgbouncer-")
    )  # not under pytest's tmp (mode 700): the service user reads it
    tmp_path.chmod(0o755)
    (tmp_path / "userlist.txt").write_text(f'"{user}" ""\n')
    (tmp_path / "pgbouncer.ini").write_text(f"""[databases]
* = host={target.hostname or "127.0.0.1"} port={target.port or 5432}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
auth_type = trust
auth_file = {tmp_path / "userlist.txt"}
pool_mode = transaction
unix_socket_dir =
logfile = {tmp_path / "pgbouncer.log"}
max_client_conn = 200
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
""")
    # PgBouncer refuses to run as root: drop to the database's service user then
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(tmp_path, "postgres")
        [shutil.chown(f, "postgres") for f in tmp_path.iterdir()]
    # its console output goes to a file: a pipe nobody reads fills after ~64 KB of log lines (about 480 logins), and
    # PgBouncer then blocks on the write and stops answering (every later connection timed out)
    console = open(tmp_path / "pgbouncer.out", "wb")
    server = subprocess.Popen(
        [binary, *as_user, str(tmp_path / "pgbouncer.ini")], stdout=console, stderr=subprocess.STDOUT
    )
    console.close()  # (the child holds its own copy)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = tmp_path / "pgbouncer.log"
                    if server.poll() is None:
                        server.kill()
                    server.wait(10)
                    raise RuntimeError(
                        f"pgbouncer did not start: {(tmp_path / 'pgbouncer.out').read_text()!r} "
                        f"{log.read_text() if log.exists() else ''}"
                    )
                time.sleep(0.1)
        yield f"postgresql://{user}@127.0.0.1:{port}/{target.path.lstrip('/') or 'test'}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize("wrap", ["sync", "scoped"])
def test_conformance_behind_pgbouncer_in_transaction_mode(pgbouncer, wrap):
    """With prepare_threshold=None the whole suite passes through PgBouncer in transaction pooling mode
    (a private PgBouncer this test starts, or PGBOUNCER_URL's); and with each call in a request scope, whose commit
    is one pipelined batch of statements (one implicit transaction, which PgBouncer keeps on one server connection)."""
    from cjm_workflow_state.testing import ScopedCalls, SharedStores, check_store

    wrapper = ScopedCalls if wrap == "scoped" else (lambda store: store)
    with postgres_schema("pgbouncer") as (_, schema):  # (dropped through DATABASE_URL afterwards)
        tables = iter(range(10**6))
        stores = SharedStores(
            lambda table, **o: wrapper(
                make_postgres_store(pgbouncer, schema, table, max_size=4, prepare_threshold=None, **o)
            ),
            new_backend=lambda: f"t{next(tables)}",
        )
        try:
            assert check_store(stores) == {}  # every check ran
        finally:
            stores.cleanup()
