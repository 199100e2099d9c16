"""A real client on Redis: a FastHTML StepFlow wizard that survives an app restart, and one user's wizard served by
two app server processes in turn."""
from typing import Dict, List

import httpx
import pytest
from starlette.testclient import TestClient

from cjm_workflow_state import open_store
from servers import free_port, redis_url, unique_name
from wizard import EXPECTED_STATE, FLOW_ID, WizardClient, decode_session_cookie, make_wizard_app, step_of
from wizard_app import start_app_server, stop_app_server


@pytest.fixture
def prefix():
    "A fresh key prefix on the Redis test server, deleted afterwards."
    url, name = redis_url(), unique_name("stepflow")
    yield name
    cleanup = open_store(url, prefix=name)
    cleanup.delete_all(); cleanup.close()


def test_wizard_resumes_after_restart(prefix):
    url = redis_url()
    first_store = open_store(url, prefix=prefix)
    first = make_wizard_app(first_store)
    paths = {route.path for route in first.app.routes}
    assert {first.url("start"), first.url("next_step")} <= paths, sorted(paths)
    with first.client() as wc:
        assert step_of(wc.start()) == "name"
        assert step_of(wc.submit(name=EXPECTED_STATE["name"])) == "email"
        assert step_of(wc.submit(email=EXPECTED_STATE["email"])) == "plan"
        cookies, session_id = dict(wc.http.cookies), wc.session_id
    first_store.close()
    del first, first_store  # the app is gone: only Redis and the browser's cookie remain

    second_store = open_store(url, prefix=prefix)  # a new process would build exactly this
    second = make_wizard_app(second_store)
    with WizardClient(second, TestClient(second.app, cookies=cookies)) as wc:
        assert wc.session_id == session_id
        html = wc.start()
        assert step_of(html) == "plan", html  # step three, where the user left
        assert wc.state == {"name": EXPECTED_STATE["name"], "email": EXPECTED_STATE["email"]}
        assert step_of(wc.submit(plan=EXPECTED_STATE["plan"])) == "confirm"
        assert step_of(wc.submit()) == "complete"
    assert second.completed == [EXPECTED_STATE]
    assert not second_store.session_exists(FLOW_ID, session_id)
    second_store.close()


class Browser:
    """One user's browser: a cookie jar of its own, carried to whichever server answers next."""
    headers = {"HX-Request": "true"}

    def __init__(self): self.cookies: Dict[str, str] = {}

    def request(self, method: str, url: str, **kw) -> str:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = httpx.request(method, url, headers={**self.headers, **({"Cookie": cookie} if cookie else {})},
                                 timeout=30, **kw)
        assert response.status_code == 200, f"{method} {url}: {response.status_code} {response.text[:300]}"
        self.cookies.update(response.cookies)  # Starlette re-signs the session cookie on every response
        return response.text

    @property
    def session_id(self):
        return decode_session_cookie(self.cookies["session_"]).get("_workflow_session_id")


def test_two_app_servers_serve_one_wizard(prefix):
    url = redis_url()
    ports = [free_port(), free_port()]
    while ports[1] == ports[0]: ports[1] = free_port()
    servers: List = []
    try:
        for port in ports: servers.append(start_app_server(port, url, {"prefix": prefix}))
        a, b = (f"http://127.0.0.1:{port}/wizard" for port in ports)
        browser = Browser()
        # every request goes to the other server than the one before
        assert step_of(browser.request("GET", f"{a}/start")) == "name"
        assert step_of(browser.request("POST", f"{b}/next_step", data={"name": EXPECTED_STATE["name"]})) == "email"
        session_id = browser.session_id
        assert step_of(browser.request("POST", f"{a}/next_step", data={"email": EXPECTED_STATE["email"]})) == "plan"
        assert step_of(browser.request("GET", f"{b}/back_step")) == "email"  # back, on the other server
        assert step_of(browser.request("POST", f"{a}/next_step", data={"email": EXPECTED_STATE["email"]})) == "plan"
        html = browser.request("POST", f"{b}/next_step", data={"plan": EXPECTED_STATE["plan"]})
        assert step_of(html) == "confirm" and all(v in html for v in EXPECTED_STATE.values()), html
        store = open_store(url, prefix=prefix)
        assert store.get_state(FLOW_ID, session_id) == EXPECTED_STATE  # all of it, written by both servers
        store.close()
        html = browser.request("POST", f"{a}/next_step")
        assert step_of(html) == "complete" and "Welcome, Ada Lovelace" in html
        assert browser.session_id == session_id  # one workflow session from start to end
        completed = [httpx.get(f"http://127.0.0.1:{port}/_completed", timeout=10).json() for port in ports]
        assert completed == [[EXPECTED_STATE], []]  # the server that took the last step got all the data
    finally:
        for server in servers: stop_app_server(server)
