"""HTTP benchmark: a StepFlow wizard under uvicorn, the step POST on the in-memory store vs the other stores, in one run.

    python bench/bench_http.py [--rounds 8] [--seconds 3] [--connections 8] [--sessions 32] [--profile] [--proposal]
                               [--floor] [--all] [--check]

`--all` adds every backend (issue 11): SQLite without request scopes, and Redis (REDIS_URL) and PostgreSQL
(DATABASE_URL) on this host and 0.25 ms away each way (`tests/faultproxy.py`, threads and time.sleep: event-loop
timers round sub-millisecond sleeps), each with request scopes (create_stepflow_router's default: one load and one
commit per request) and without (", no scope": the store's request_scope hidden, so StepFlow's routes call the
store as they are, 6-7 blocking calls on the event loop). Targets, with scopes: SQLite >= 0.92, Redis >= 0.85,
PostgreSQL >= 0.70, both 0.25 ms away >= 0.60 of in-memory. Each server's data lives under its own Redis prefix or
PostgreSQL schema, removed at the end.

Two uvicorn servers (one process each, loopback, free ports, started by this script and killed at the end) serve
the same FastHTML app; one keeps its workflow state in `InMemoryWorkflowStateStore` (`memory://`), the other in
`SQLiteWorkflowStateStore` on a file in a temporary folder (`sqlite:///...`, the store's defaults: WAL,
synchronous=NORMAL). Debian's `wrk` (one thread, `--connections` keep-alive connections, a Lua script) POSTs to
the wizard's step route for `--seconds` per run; the runs alternate between the two servers, `--rounds` each
(in-memory first in even rounds, SQLite first in odd ones), after a 2 s warm-up of each. Reported: req/s per run,
the median per server, and the median of the rounds' SQLite / in-memory ratios against the target (>= 0.85).
Short runs, many rounds: the machine is shared, and other processes' load comes and goes within seconds. The
servers' CPU time per request (from /proc, all threads) is printed too: it does not depend on that load.

The wizard: `StepFlow("bench", [name, email, plan])` routed by `create_stepflow_router(flow, "/wizard")`; each
step validates its own field, and `on_complete` sends the user back to the first step (`flow.set_current_step`),
so a user can POST forever. Every request is `POST /wizard/next_step` with the signed session cookie of one of
`--sessions` workflow sessions (made beforehand with `GET /wizard/start`; wrk's requests take them in turn, so
consecutive requests hit different sessions) and the form `name=Ada+Lovelace+<n>&email=ada@example.com&plan=pro`
(n counts requests: every write changes the state). One request does the whole StepFlow step:
  get_current_step -> update_state(the 3 form fields) -> get_state -> validate the current step ->
  on steps name and email: set_current_step(next step) -> get_state (twice with cjm-fasthtml-interactions 0.0.38:
  on_enter and the render context; once with 0.0.26) -> render the next step's form;
  on step plan (the last): get_state -> on_complete: set_current_step("name") -> render the completion message.
So every request is 2 writes (update_state, set_current_step) and 3-4 reads of the store, in StepFlow's async
handler, on the event loop. Each server counts its completions (GET /_stats), checked against requests / 3.

`--profile` wraps both stores in a timer (in the servers) and prints the store time per request, by method.
`--proposal` adds two servers, prototypes (made in this app, on the store's connection) of changes proposed for the
store, printed for information only: "SQLite+ck10k", `PRAGMA wal_autocheckpoint=10000` (checkpoint every ~40 MB of
WAL instead of ~4 MB: a page written many times is copied once per checkpoint, and fsync runs 10x less often), and
"SQLite+bg", `wal_autocheckpoint=0` on the event loop's connection and a thread running
`PRAGMA wal_checkpoint(PASSIVE)` every 50 ms (checkpoints, which fsync, off the event loop).
`--floor` adds a server on `FloorSQLiteStore` (defined below, in this script only): each of the four calls StepFlow
makes is one autocommit statement on a bare `(flow_id, session_id, step, state_json)` table, WAL, synchronous=NORMAL,
with no recency index, timestamps, ttl, size limit, id validation or canonical encoding. It is not a usable store; it
is the least work any SQLite store does when, as the issue requires, every call is its own transaction, so its ratio
is the ceiling for the real store on the same machine in the same run.
`--floor` with `--all` also adds the request-scope floors, "SQLite scoped floor", "Redis floor" and "PostgreSQL
floor" (`FloorScopedStore`, below): per request one read of the session id's record and one write of it back, through
the backend's own driver (sqlite3 on the event loop, redis.asyncio GET and SET, psycopg's AsyncConnection SELECT and
upsert), with none of the store's checks, indexes or per-key merging: the ceiling for each store's ratio with scopes.
"SQLite scoped floor, indexed" and "PostgreSQL floor, indexed" add the one index listing by recency needs (write time
in milliseconds, then id), which every write moves, as in the real stores.
Runtime: about (number of servers) x (2 + rounds x seconds) s plus start-up (~1 minute by default).
"""

import argparse, json, os, re, shutil, socket, statistics, subprocess, sys, tempfile, time
from pathlib import Path

TARGETS = {
    "SQLite": 0.92,
    "Redis": 0.85,
    "PostgreSQL": 0.70,
    "Redis 0.25 ms away": 0.60,
    "PostgreSQL 0.25 ms away": 0.60,
}  # step POST req/s / in-memory req/s, with request scopes (issue 11)
DELAY = 0.00025  # seconds each way, for the "0.25 ms away" servers (a proxy of threads and time.sleep)
FLOW_ID, PREFIX = "bench", "/wizard"
BODY = "name=Ada+Lovelace+{n}&email=ada%40example.com&plan=pro"

# ---- the app (imported by uvicorn in each server process, with BENCH_STORE set) -----------------------------------
if os.environ.get("BENCH_STORE"):
    from fasthtml.common import FastHTML, Div, H2, Input, P
    from starlette.responses import JSONResponse
    from cjm_fasthtml_interactions.patterns.step_flow import Step, StepFlow
    from cjm_workflow_state import open_store
    from cjm_workflow_state.stepflow import create_stepflow_router

    if os.environ["BENCH_STORE"].startswith("floor:"):  # --floor: the least any SQLite store can do per call
        import sqlite3

        class FloorSQLiteStore:
            """One autocommit statement per protocol call on a bare table (no recency index, ttl, size check or
            validation): a lower bound on the cost of any SQLite store that makes each call its own transaction."""

            def __init__(self, path):
                self.path = path
                self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute(
                    "CREATE TABLE IF NOT EXISTS s (flow_id TEXT, session_id TEXT, step TEXT, "
                    "state_json TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (flow_id, session_id)) WITHOUT ROWID"
                )

            def _sid(self, sess):
                if isinstance(sess, str):
                    return sess
                sid = sess.get("_wf")  # a fresh id only when missing: no random bytes on the hot path
                if sid is None:
                    sid = sess["_wf"] = os.urandom(8).hex()
                return sid

            def get_current_step(self, flow_id, sess):
                row = self.conn.execute(
                    "SELECT step FROM s WHERE flow_id = ? AND session_id = ?", (flow_id, self._sid(sess))
                ).fetchone()
                return row and row[0]

            def set_current_step(self, flow_id, sess, step_id):
                self.conn.execute(
                    "INSERT INTO s (flow_id, session_id, step) VALUES (?, ?, ?) ON CONFLICT DO UPDATE "
                    "SET step = excluded.step",
                    (flow_id, self._sid(sess), step_id),
                )

            def get_state(self, flow_id, sess):
                row = self.conn.execute(
                    "SELECT state_json FROM s WHERE flow_id = ? AND session_id = ?", (flow_id, self._sid(sess))
                ).fetchone()
                return json.loads(row[0]) if row else {}

            def update_state(self, flow_id, sess, updates):
                self.conn.execute(
                    "INSERT INTO s (flow_id, session_id, state_json) VALUES (?, ?, ?) ON CONFLICT DO "
                    "UPDATE SET state_json = json_patch(state_json, excluded.state_json)",
                    (flow_id, self._sid(sess), json.dumps(updates)),
                )

            def clear_state(self, flow_id, sess):
                self.conn.execute("DELETE FROM s WHERE flow_id = ? AND session_id = ?", (flow_id, self._sid(sess)))

        store = FloorSQLiteStore(os.environ["BENCH_STORE"][len("floor:") :])
    elif os.environ["BENCH_STORE"].startswith("scoped-floor-"):  # --floor with --all: the least a scoped store does
        from contextvars import ContextVar

        class FloorScopedStore:
            """Per request one read of the session id's record and one write of it back (a request scope of two round
            trips) through the backend's own driver, and nothing else: no id checks, canonical encoding, per-key
            merge, recency index, ttl or size limit; the write replaces the record whole (so two requests of one
            session at once lose keys). Not a usable store: the least any store with request scopes does on that
            server, so its ratio to in-memory is the ceiling for the real store on the same machine in the same run."""

            def __init__(self, engine):
                self.engine, self.scope = engine, ContextVar("floor_scope")

            def _sid(self, sess):
                if isinstance(sess, str):
                    return sess
                sid = sess.get("_wf")
                if sid is None:
                    sid = sess["_wf"] = os.urandom(8).hex()
                return sid

            def request_scope(self, sess):
                return FloorScope(self, self._sid(sess))

            def _flow(self, flow_id, write=False):
                scope = self.scope.get()
                scope.dirty |= write
                return scope.record.setdefault(flow_id, {"step": None, "state": {}})

            def get_current_step(self, flow_id, sess):
                return self._flow(flow_id)["step"]

            def set_current_step(self, flow_id, sess, step_id):
                self._flow(flow_id, True)["step"] = step_id

            def get_state(self, flow_id, sess):
                return dict(self._flow(flow_id)["state"])

            def update_state(self, flow_id, sess, updates):
                self._flow(flow_id, True)["state"].update(updates)

            def clear_state(self, flow_id, sess):
                self._flow(flow_id, True)["state"] = {}

        class FloorScope:
            def __init__(self, store, sid):
                self.store, self.sid, self.errors, self.dirty = store, sid, [], False

            async def __aenter__(self):
                text = await self.store.engine.read(self.sid)
                self.record, self.token = json.loads(text) if text else {}, self.store.scope.set(self)
                return self

            async def __aexit__(self, exc_type, exc, tb):
                self.store.scope.reset(self.token)
                if exc_type is None and self.dirty:
                    await self.store.engine.write(self.sid, json.dumps(self.record))

        # ", indexed": the record also carries its write time in milliseconds, in an index by (time, id), the least a
        # store needs to list sessions by recency (the real stores keep such an index); every write moves its entry.
        class SQLiteEngine:  # on the event loop, as the SQLite store runs its scopes
            def __init__(self, path, indexed=False):
                import sqlite3

                self.conn, self.indexed = sqlite3.connect(path, isolation_level=None, check_same_thread=False), indexed
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute(
                    "CREATE TABLE IF NOT EXISTS r (id TEXT PRIMARY KEY, data TEXT, updated INTEGER) WITHOUT ROWID"
                )
                if indexed:
                    self.conn.execute("CREATE INDEX IF NOT EXISTS r_updated ON r (updated, id)")

            async def read(self, sid):
                row = self.conn.execute("SELECT data FROM r WHERE id = ?", (sid,)).fetchone()
                return row and row[0]

            async def write(self, sid, text):
                self.conn.execute(
                    "INSERT INTO r VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET data = excluded.data, "
                    "updated = excluded.updated",
                    (sid, text, time.time_ns() // 1_000_000 if self.indexed else None),
                )

        class RedisEngine:  # redis.asyncio: one GET and one SET
            def __init__(self, url, prefix):
                import redis.asyncio

                self.redis, self.prefix = redis.asyncio.Redis.from_url(url), prefix

            async def read(self, sid):
                return await self.redis.get(self.prefix + sid)

            async def write(self, sid, text):
                await self.redis.set(self.prefix + sid, text)

        class PostgresEngine:  # psycopg's AsyncConnection, autocommit: one SELECT and one upsert
            def __init__(self, url, table, indexed=False):
                import psycopg

                self.psycopg, self.url, self.table, self.idle, self.indexed = psycopg, url, table, [], indexed
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY, data text, updated bigint)")
                    if indexed:
                        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_updated ON {table} (updated, id)")

            async def run(self, query, params):
                conn = (
                    self.idle.pop()
                    if self.idle
                    else await self.psycopg.AsyncConnection.connect(self.url, autocommit=True)
                )
                try:
                    return await (await conn.execute(query, params)).fetchone()
                finally:
                    self.idle.append(conn)

            async def read(self, sid):
                row = await self.run(f"SELECT data FROM {self.table} WHERE id = %s", (sid,))
                return row and row[0]

            async def write(self, sid, text):
                await self.run(
                    f"INSERT INTO {self.table} VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE SET data = "
                    f"excluded.data, updated = excluded.updated RETURNING 1",
                    (sid, text, time.time_ns() // 1_000_000 if self.indexed else None),
                )

        kind, target = os.environ["BENCH_STORE"][len("scoped-floor-") :].split(":", 1)
        engines = {"sqlite": SQLiteEngine, "redis": RedisEngine, "postgres": PostgresEngine}
        store = FloorScopedStore(
            engines[kind.removesuffix("-indexed")](
                *target.split("|"), **({"indexed": True} if kind.endswith("-indexed") else {})
            )
        )
    else:
        store = open_store(os.environ["BENCH_STORE"], **json.loads(os.environ.get("BENCH_STORE_OPTIONS") or "{}"))
    stats = {"completions": 0}
    timings = {}  # with BENCH_PROFILE=1: store method -> [calls, seconds]

    class TimedStore:
        "Passes every call to the store, adding up the time spent in each method (--profile only)."

        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            method = getattr(self._inner, name)
            if not callable(method):
                return method
            entry = timings.setdefault(name, [0, 0.0])

            def timed(*a, **kw):
                t0 = time.perf_counter()
                try:
                    return method(*a, **kw)
                finally:
                    entry[0] += 1
                    entry[1] += time.perf_counter() - t0

            return timed

    if os.environ.get("BENCH_AUTOCHECKPOINT"):  # --proposal: checkpoint less often
        store._cx()[0].execute(f"PRAGMA wal_autocheckpoint={int(os.environ['BENCH_AUTOCHECKPOINT'])}")
    if os.environ.get("BENCH_BG_CHECKPOINT"):  # --proposal: WAL checkpoints in a thread, off the event loop
        import sqlite3, threading

        store._cx()[0].execute("PRAGMA wal_autocheckpoint=0")  # this (the event loop's) thread's connection

        def checkpointer(path):
            conn = sqlite3.connect(path, isolation_level=None, timeout=5)
            while True:
                time.sleep(0.05)
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.OperationalError:
                    pass

        threading.Thread(target=checkpointer, args=(str(store.path),), daemon=True).start()
    if os.environ.get("BENCH_PROFILE"):
        store = TimedStore(store)

    class NoScope:
        "The store without `request_scope`: create_stepflow_router runs StepFlow's routes as they are (--all)."

        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            if name == "request_scope":
                raise AttributeError(name)
            return getattr(self._inner, name)

    if os.environ.get("BENCH_NO_SCOPE"):
        store = NoScope(store)

    def field_step(key, title):
        return Step(
            key,
            title,
            data_keys=[key],
            validate=lambda state: bool(str(state.get(key, "")).strip()),
            render=lambda ctx: Div(H2(title), Input(name=key, value=ctx.state.get(key, "")), data_step=key),
        )

    def on_complete(state, request):
        stats["completions"] += 1
        flow.set_current_step(request.session, "name")  # back to the first step: the loop can run indefinitely
        return Div(P(f"Welcome, {state['name']}! You are on the {state['plan']} plan."), data_step="complete")

    flow = StepFlow(
        FLOW_ID,
        [field_step("name", "Name"), field_step("email", "Email"), field_step("plan", "Plan")],
        state_store=store,
        on_complete=on_complete,
    )
    app = FastHTML(secret_key="cjm-workflow-state-bench-http")
    create_stepflow_router(flow, PREFIX).to_app(app)

    @app.get("/_stats")
    def _stats():
        return JSONResponse({**stats, "store": type(getattr(store, "_inner", store)).__name__, "timings": timings})


# ---- the driver ----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(store_url: str, log: Path, profile: bool = False, extra_env: dict = {}) -> tuple:
    "A uvicorn process serving this module's app on a free loopback port, once it answers: (process, base URL)."
    import httpx

    port = free_port()
    env = {**os.environ, "BENCH_STORE": store_url, **({"BENCH_PROFILE": "1"} if profile else {}), **extra_env}
    out = open(log, "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench_http:app",
            "--app-dir",
            str(Path(__file__).parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/_stats", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"the server for {store_url} did not start:\n{log.read_text()}")
        time.sleep(0.2)


NO_SCOPE = ", no scope"  # name suffix of the servers whose store has no request_scope (BENCH_NO_SCOPE)


def server_stores(tmp: Path, proxies: list, cleanups: list) -> dict:
    """--all: name -> (store URL, server environment) of SQLite without scopes and of Redis and PostgreSQL, on the
    same host and 0.25 ms away (a delay proxy started here), each with and without request scopes; each server's data
    under its own Redis prefix or PostgreSQL schema, removed by `cleanups`."""
    import uuid
    from urllib.parse import urlsplit
    import importlib.util  # tests/faultproxy.py, loaded by its path (no sys.path change): threads and time.sleep,

    spec = importlib.util.spec_from_file_location(  # sub-millisecond delays that event-loop timers round
        "faultproxy", Path(__file__).resolve().parent.parent / "tests" / "faultproxy.py"
    )
    faultproxy = sys.modules["faultproxy"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faultproxy)
    FaultProxy = faultproxy.FaultProxy
    from cjm_workflow_state import open_store

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    pg_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    stores = {"SQLite" + NO_SCOPE: (f"sqlite:///{tmp / 'bench-no-scope.db'}", {"BENCH_NO_SCOPE": "1"})}
    for backend, url, default_port in (("Redis", redis_url, 6379), ("PostgreSQL", pg_url, 5432)):
        for away in (False, True):
            address = urlsplit(url)
            target = url
            if away:
                proxy = FaultProxy(address.hostname or "127.0.0.1", address.port or default_port).start()
                proxy.set_delay(DELAY)
                proxies.append(proxy)
                target = proxy.url(url)
            for scoped in (True, False):
                name = backend + (" 0.25 ms away" if away else "") + ("" if scoped else NO_SCOPE)
                where = f"bench_http_{uuid.uuid4().hex[:10]}"
                options = {"prefix": where} if backend == "Redis" else {"schema": where, "table": "sessions"}
                env = {"BENCH_STORE_OPTIONS": json.dumps(options), **({} if scoped else {"BENCH_NO_SCOPE": "1"})}
                stores[name] = (target, env)

                def cleanup(url=url, backend=backend, where=where, options=options):
                    if backend == "Redis":
                        with open_store(url, **options) as store:
                            store.delete_all()
                    else:
                        import psycopg

                        with psycopg.connect(url, autocommit=True) as conn:
                            conn.execute(f'DROP SCHEMA IF EXISTS "{where}" CASCADE')

                cleanups.append(cleanup)
    return stores


def floor_stores(tmp: Path, cleanups: list) -> dict:
    """--floor with --all: name -> (store, environment) of the request-scope floors (`FloorScopedStore`): SQLite,
    Redis and PostgreSQL on this host, each server's records under its own Redis prefix or PostgreSQL table."""
    import uuid

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    pg_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    where = f"bench_floor_{uuid.uuid4().hex[:10]}"

    def cleanup():
        import psycopg, redis

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=where + ":*"):
            client.delete(key)
        client.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {where}, {where}_i")

    cleanups.append(cleanup)
    return {
        "SQLite scoped floor": (f"scoped-floor-sqlite:{tmp / 'scoped-floor.db'}", {}),
        "SQLite scoped floor, indexed": (f"scoped-floor-sqlite-indexed:{tmp / 'scoped-floor-i.db'}", {}),
        "Redis floor": (f"scoped-floor-redis:{redis_url}|{where}:", {}),
        "PostgreSQL floor": (f"scoped-floor-postgres:{pg_url}|{where}", {}),
        "PostgreSQL floor, indexed": (f"scoped-floor-postgres-indexed:{pg_url}|{where}_i", {}),
    }


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def make_sessions(base: str, count: int) -> list:
    "Cookie headers of `count` fresh workflow sessions (GET /wizard/start), after checking the loop on the first."
    import httpx

    cookies = []
    headers = {"HX-Request": "true"}
    for i in range(count):
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            r = client.get(f"{PREFIX}/start")
            r.raise_for_status()
            assert 'data-step="name"' in r.text, r.text
            if i == 0:  # the wizard loops: name -> email -> plan -> complete (back to name) -> email
                seen = []
                for n in range(4):
                    r = client.post(
                        f"{PREFIX}/next_step",
                        content=BODY.format(n=n),
                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                    )
                    r.raise_for_status()
                    seen.append(re.findall(r'data-step="([^"]+)"', r.text)[-1])
                assert seen == ["email", "plan", "complete", "email"], seen
            cookies.append("; ".join(f"{k}={v}" for k, v in client.cookies.items()))
    assert len(set(cookies)) == count
    return cookies


LUA = """
local cookies = {%s}
local n = 0
request = function()
  n = n + 1
  local headers = {["Content-Type"] = "application/x-www-form-urlencoded", ["HX-Request"] = "true",
                   ["Cookie"] = cookies[(n %% #cookies) + 1]}
  return wrk.format("POST", "%s/next_step", headers, string.format("%s", n))
end
"""


def write_lua(path: Path, cookies: list) -> Path:
    body = BODY.replace("%", "%%").replace("{n}", "%d")
    path.write_text(LUA % (", ".join(json.dumps(c) for c in cookies), PREFIX, body))
    return path


def cpu_seconds(pid: int) -> float:
    "User + system CPU time of a process (all its threads), from /proc."
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(wrk: str, base: str, script: Path, seconds: float, connections: int) -> dict:
    "One bounded wrk run: req/s, requests, mean latency (ms), non-2xx count."
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(script), base + PREFIX]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if not rps or not total:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    scale = {"us": 0.001, "ms": 1, "s": 1000}
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "latency_ms": float(lat.group(1)) * scale[lat.group(2)] if lat else float("nan"),
        "non2xx": int(bad.group(1)) if bad else 0,
        "errors": errors.group(1) if errors else "",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="runs per store, alternating")
    parser.add_argument("--seconds", type=float, default=3, help="length of one wrk run (at most 20)")
    parser.add_argument("--connections", type=int, default=8, help="wrk keep-alive connections")
    parser.add_argument(
        "--sessions", type=int, default=32, help="workflow sessions (cookies) the requests take in turn"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also time each store method inside the servers (a wrapper around both stores)",
    )
    parser.add_argument(
        "--proposal",
        action="store_true",
        help="also run SQLite with wal_autocheckpoint=10000, and with WAL checkpoints in a background "
        "thread (prototypes of proposed changes, made in this app, not in the store)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run a bare SQLite store (one statement per call, no index): the floor for SQLite; "
        "with --all also the request-scope floors of SQLite, Redis and PostgreSQL (one read and "
        "one write-back of a record per request, through the same drivers)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every backend: in-memory, SQLite, Redis and PostgreSQL (REDIS_URL, DATABASE_URL), the last "
        "two also 0.25 ms away each way (a delay proxy), each with request scopes and without",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    if not 0 < args.seconds <= 20:
        parser.error("--seconds must be in (0, 20]")
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")
    import cjm_workflow_state, cjm_fasthtml_interactions, fasthtml, uvicorn, platform

    print(
        f"cjm-workflow-state {cjm_workflow_state.__version__}, cjm-fasthtml-interactions "
        f"{cjm_fasthtml_interactions.__version__}, python-fasthtml {fasthtml.__version__}, uvicorn {uvicorn.__version__}; "
        f"Python {platform.python_version()}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{subprocess.run([wrk, '--version'], capture_output=True, text=True).stdout.splitlines()[0].strip()}: "
        f"1 thread, {args.connections} connections, {args.seconds:g} s per run, {args.rounds} rounds per store; "
        f"{args.sessions} workflow sessions per server, taken in turn"
    )
    started = time.perf_counter()
    kinds = {
        "in-memory": "InMemoryWorkflowStateStore",
        "SQLite": "SQLiteWorkflowStateStore",
        "SQLite+ck10k": "SQLiteWorkflowStateStore",
        "SQLite+bg": "SQLiteWorkflowStateStore",
        "SQLite floor": "FloorSQLiteStore",
        "SQLite scoped floor": "FloorScopedStore",
        "SQLite scoped floor, indexed": "FloorScopedStore",
        "PostgreSQL floor, indexed": "FloorScopedStore",
        "Redis floor": "FloorScopedStore",
        "PostgreSQL floor": "FloorScopedStore",
        "Redis": "RedisWorkflowStateStore",
        "PostgreSQL": "PostgresWorkflowStateStore",
    }
    proxies, cleanups = [], []
    with tempfile.TemporaryDirectory(prefix="cjm-wfs-bench-http-") as d:
        tmp = Path(d)
        stores = {"in-memory": ("memory://", {}), "SQLite": (f"sqlite:///{tmp / 'bench.db'}", {})}
        if args.all:
            stores.update(server_stores(tmp, proxies, cleanups))
        if args.proposal:
            stores["SQLite+ck10k"] = (f"sqlite:///{tmp / 'bench-ck10k.db'}", {"BENCH_AUTOCHECKPOINT": "10000"})
            stores["SQLite+bg"] = (f"sqlite:///{tmp / 'bench-bg.db'}", {"BENCH_BG_CHECKPOINT": "1"})
        if args.floor:
            stores["SQLite floor"] = (f"floor:{tmp / 'floor.db'}", {})
        if args.floor and args.all:
            stores.update(floor_stores(tmp, cleanups))
        servers = {}
        try:
            for name, (url, env) in stores.items():
                proc, base = start_server(url, tmp / f"{name}.log", args.profile, env)
                servers[name] = (proc, base, write_lua(tmp / f"{name}.lua", make_sessions(base, args.sessions)))
            for name, (proc, base, script) in servers.items():  # warm-up, not counted
                run_wrk(wrk, base, script, 2, args.connections)
            import httpx

            before = {name: httpx.get(base + "/_stats").json() for name, (_, base, _) in servers.items()}
            runs = {name: [] for name in servers}
            names, others = list(servers), list(servers)[1:]
            w = {n: max(17, len(n) + 8) for n in names}  # column widths
            print(
                f"\n  {'round':<7}"
                + "".join(f"{n + ' req/s':>{w[n]}}{'ms/req':>8}" for n in names)
                + "".join(f"{n + ' / in-memory':>{w[n] + 6}}" for n in others)
            )
            for r in range(args.rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    proc, base, script = servers[name]
                    cpu = cpu_seconds(proc.pid)
                    res = run_wrk(wrk, base, script, args.seconds, args.connections)
                    res["cpu_us"] = (cpu_seconds(proc.pid) - cpu) / res["requests"] * 1e6
                    if res["non2xx"] or res["errors"]:
                        raise RuntimeError(f"{name}: {res['non2xx']} non-2xx responses, socket errors: {res['errors']}")
                    runs[name].append(res)
                print(
                    f"  {r + 1:<7}"
                    + "".join(f"{runs[n][-1]['rps']:>{w[n]},.0f}{runs[n][-1]['latency_ms']:>8.2f}" for n in names)
                    + "".join(f"{runs[n][-1]['rps'] / runs['in-memory'][-1]['rps']:>{w[n] + 6}.2f}" for n in others)
                )
            for name, (_, base, _) in servers.items():
                stats = httpx.get(base + "/_stats").json()
                done, requests = (
                    stats["completions"] - before[name]["completions"],
                    sum(x["requests"] for x in runs[name]),
                )
                assert stats["store"] == (kinds.get(name) or kinds[name.split(",")[0].split(" ")[0]]), stats
                assert abs(done - requests / 3) <= requests * 0.01 + 10, (name, done, requests)
                print(
                    f"  {name}: {requests:,} requests, {done:,} completed wizards ({stats['store']}; every request "
                    f"answered 200)"
                )
                if args.profile:
                    seconds = sum(x["requests"] / x["rps"] for x in runs[name])
                    spent = {
                        m: (
                            c - before[name]["timings"].get(m, [0, 0])[0],
                            t - before[name]["timings"].get(m, [0, 0])[1],
                        )
                        for m, (c, t) in stats["timings"].items()
                    }
                    total = sum(t for _, t in spent.values())
                    print(
                        f"    store time per request {total / requests * 1e6:,.0f} µs of {seconds / requests * 1e6:,.0f} µs "
                        f"wall per request: "
                        + ", ".join(
                            f"{m} {c / requests:.1f} x {t / c * 1e6:.0f} µs" for m, (c, t) in spent.items() if c
                        )
                    )
        finally:
            for proc, _, _ in servers.values():
                stop_server(proc)
            for proxy in proxies:
                proxy.close()
            for cleanup in cleanups:
                cleanup()
    med = {n: statistics.median(x["rps"] for x in runs[n]) for n in runs}
    cpu = {n: statistics.median(x["cpu_us"] for x in runs[n]) for n in runs}
    print("\n  median req/s: " + ", ".join(f"{n} {med[n]:,.0f}" for n in names))
    print(
        "  server CPU time per request (user + system, median run; insensitive to other processes' load, blind to "
        "waits such as fsync): " + ", ".join(f"{n} {cpu[n]:,.0f} µs" for n in names)
    )
    for name in others:
        print(f"  {name} / in-memory from CPU time per request alone: {cpu['in-memory'] / cpu[name]:.2f}")
    ok = True
    for name in others:
        ratio = statistics.median(s["rps"] / m["rps"] for s, m in zip(runs[name], runs["in-memory"]))
        if name in TARGETS:
            verdict = f"target >= {TARGETS[name]}: {'PASS' if ratio >= TARGETS[name] else 'FAIL'}"
            ok = ok and ratio >= TARGETS[name]
        elif name.endswith(NO_SCOPE):
            verdict = "(without request scopes: StepFlow's routes as they are)"
        elif name.endswith("floor, indexed"):
            verdict = "(the floor with a recency index, which listing by updated_at needs and every write moves)"
        elif name.endswith("scoped floor") or name in ("Redis floor", "PostgreSQL floor"):
            verdict = "(the floor: a load and a write-back and nothing else; the ceiling for the store)"
        elif name == "SQLite floor":
            verdict = "(the floor without scopes: one bare statement per call)"
        else:
            verdict = "(prototype of a proposed change, not the store as shipped)"
        print(f"  {name} / in-memory (median of the rounds' ratios): {ratio:.2f}  {verdict}")
    print(f"  runtime {time.perf_counter() - started:.0f} s; servers stopped, temporary files removed")
    if args.check and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
