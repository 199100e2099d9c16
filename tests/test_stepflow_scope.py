"""StepFlow routes in request scopes, against real servers: what a step POST sends on the wire (Redis, PostgreSQL)
and how many transactions it takes (SQLite); a handler that raises after writing writes nothing; an over-size answer
is refused whole and shown; a uvicorn worker keeps answering other routes while its store is slow or down, the step
POST gets a 503 within the store's timeout, and once the server is back the wizard goes on with nothing lost."""

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from urllib.parse import urlsplit

import httpx, pytest
from fasthtml.common import Div, FastHTML, Input
from starlette.testclient import TestClient
from cjm_fasthtml_interactions.patterns.step_flow import Step, StepFlow

from cjm_workflow_state import open_store
from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore
from cjm_workflow_state.stepflow import create_stepflow_router
from faultproxy import FaultProxy
from servers import free_port, make_postgres_store, postgres_schema, postgres_url, redis_url, unique_name
from wizard import EXPECTED_STATE, FLOW_ID, make_wizard_app, step_of
from wizard_app import start_app_server, stop_app_server


def redis_port() -> int:
    return urlsplit(redis_url()).port or 6379


@pytest.fixture
def redis_prefix():
    url, prefix = redis_url(), unique_name("sf_scope")
    yield prefix
    with open_store(url, prefix=prefix) as store:
        store.delete_all()


@pytest.fixture(scope="module")
def pg_schema():
    postgres_url()
    with postgres_schema("sf_scope") as found:
        yield found


def _step_post_round_trips(store, proxy):
    "Round trips to the store's server of the wizard's step POSTs (after its start), per POST."
    wizard = make_wizard_app(store)
    counts = []
    with wizard.client() as wc:
        assert step_of(wc.start()) == "name"
        for fields, expected in ((dict(name="Ada"), "email"), (dict(email="ada@example.com"), "plan")):
            before = proxy.stats["round_trips"]
            assert step_of(wc.submit(**fields)) == expected
            counts.append(proxy.stats["round_trips"] - before)
        assert wc.state == {"name": "Ada", "email": "ada@example.com"}
    return counts


def test_redis_step_post_is_two_round_trips(redis_prefix):
    with FaultProxy("127.0.0.1", redis_port()) as proxy:
        store = open_store(proxy.url(redis_url()), prefix=redis_prefix)
        store.get_state("warm-up", "x")  # (the connection's handshake and the scripts' first load are not counted)
        with store:
            assert _step_post_round_trips(store, proxy) == [2, 2]  # load (index.lua), commit (session.lua batch)


def test_postgres_step_post_is_two_round_trips(pg_schema):
    url, schema = pg_schema
    with FaultProxy("127.0.0.1", 5432) as proxy:
        store = make_postgres_store(proxy.url(url), schema)
        store.get_state("warm-up", "x")
        with store:
            assert _step_post_round_trips(store, proxy) == [2, 2]  # load (one SELECT), commit (one pipelined batch)


def test_sqlite_step_post_is_two_transactions(tmp_path):
    statements = []

    class Traced(SQLiteWorkflowStateStore):
        def _cx(self):  # every thread's connection reports its statements
            conn, lock = super()._cx()
            conn.set_trace_callback(statements.append)
            return conn, lock

    store = Traced(tmp_path / "wizard.db")
    wizard = make_wizard_app(store)
    with wizard.client() as wc:
        wc.start()
        statements.clear()
        assert step_of(wc.submit(name="Ada")) == "email"
    transactions, depth = 0, 0
    for sql in statements:
        word = sql.split()[0].upper()
        if word == "BEGIN":
            transactions += 1
            depth += 1
        elif word in ("COMMIT", "ROLLBACK"):
            depth -= 1
        elif depth == 0 and not word.startswith("PRAGMA"):
            transactions += 1
    assert transactions == 2, statements


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
def test_a_handler_that_raises_after_writing_writes_nothing(backend, tmp_path, request):
    if backend == "sqlite":
        store = SQLiteWorkflowStateStore(tmp_path / "raise.db")
    elif backend == "redis":
        store = open_store(redis_url(), prefix=request.getfixturevalue("redis_prefix"))
    else:
        store = make_postgres_store(*request.getfixturevalue("pg_schema"))

    def on_complete(state, request):
        store.update_state("orders", request.scope["session"], {"placed": True})  # a write, then a failure
        raise RuntimeError("the payment service is down")

    flow = StepFlow(
        "order",
        [Step("item", "Item", lambda ctx: Div(Input(name="item"), data_step="item"), data_keys=["item"])],
        state_store=store,
        on_complete=on_complete,
    )
    app = FastHTML(secret_key="raise")
    create_stepflow_router(flow, "/order").to_app(app)
    with store, TestClient(app, raise_server_exceptions=False) as client:
        client.get("/order/start")
        assert client.post("/order/next_step", data={"item": "tea"}).status_code == 500
        # nothing of the request: neither the step's answer nor the order the handler wrote
        for flow_id in ("order", "orders"):
            assert store.count_sessions(flow_id) == 0


@pytest.mark.parametrize("backend", ["memory", "redis", "postgres"])
def test_an_answer_too_large_is_refused_whole_and_shown(backend, request):
    if backend == "memory":
        store = open_store("memory://", max_state_bytes=120)
    elif backend == "redis":
        store = open_store(redis_url(), prefix=request.getfixturevalue("redis_prefix"), max_state_bytes=120)
    else:
        store = make_postgres_store(*request.getfixturevalue("pg_schema"), max_state_bytes=120)
    wizard = make_wizard_app(store)
    with store, wizard.client() as wc:
        wc.start()
        html = wc.submit(name="A" * 200)
        assert step_of(html) == "name" and 'role="alert"' in html and "too long" in html, html
        assert store.count_sessions(FLOW_ID) == 0  # nothing of the request (not even the step pointer)
        assert step_of(wc.submit(name="Ada")) == "email"
        assert wc.state == {"name": "Ada"}


# ---- a uvicorn worker whose store is slow or down ----


def _timed(client: httpx.Client, method: str, url: str, **kw):
    "(status, body, seconds) of one request (the client keeps its connection and the browser's cookies)."
    start = time.perf_counter()
    response = client.request(method, url, headers={"HX-Request": "true"}, **kw)
    return response.status_code, response.text, time.perf_counter() - start


def test_a_slow_or_stopped_store_never_stops_the_worker(redis_prefix):
    port = free_port()
    with FaultProxy("127.0.0.1", redis_port()) as proxy, ExitStack() as stack:
        server = start_app_server(
            port, proxy.url(redis_url()), {"prefix": redis_prefix, "socket_timeout": 2.0, "socket_connect_timeout": 1.0}
        )
        try:
            base = f"http://127.0.0.1:{port}"
            browser, pinger = (
                stack.enter_context(httpx.Client(timeout=30)),
                stack.enter_context(httpx.Client(timeout=30)),
            )
            ping = lambda: _timed(pinger, "GET", f"{base}/ping")
            post = lambda **fields: _timed(browser, "POST", f"{base}/wizard/next_step", data=fields)
            assert step_of(_timed(browser, "GET", f"{base}/wizard/start")[1]) == "name" and ping()[0] == 200
            # slow: 250 ms each way; /ping answers at once while a step POST waits on the store
            proxy.set_delay(0.25)
            with ThreadPoolExecutor(1) as pool:
                step = pool.submit(post, name=EXPECTED_STATE["name"])
                time.sleep(0.3)  # the POST is waiting on the store now
                pings = [ping() for _ in range(5)]
                status, html, took = step.result()
            assert all(p[0] == 200 for p in pings) and max(p[2] for p in pings) < 0.05, pings
            assert status == 200 and step_of(html) == "email" and took >= 1.0, (
                status,
                took,
            )  # load and commit: 0.5 s each
            # down: the POST is a 503 within the store's timeouts, and /ping still answers
            proxy.set_delay(0)
            proxy.refuse(True)
            proxy.cut_all()
            with ThreadPoolExecutor(1) as pool:
                step = pool.submit(post, email=EXPECTED_STATE["email"])
                pings = [ping() for _ in range(5)]
                status, html, took = step.result()
            assert status == 503 and "unavailable" in html and took < 5, (status, html, took)
            assert all(p[0] == 200 for p in pings) and max(p[2] for p in pings) < 0.5, pings  # (connect timeout: 1 s)
            # back: the wizard goes on from where it was, nothing lost
            proxy.refuse(False)
            assert step_of(post(email=EXPECTED_STATE["email"])[1]) == "plan"
            assert step_of(post(plan=EXPECTED_STATE["plan"])[1]) == "confirm"
            with open_store(redis_url(), prefix=redis_prefix) as store:
                (session,) = store.list_sessions(FLOW_ID)
                assert store.get_state(FLOW_ID, session.session_id) == EXPECTED_STATE
        finally:
            stop_app_server(server)
