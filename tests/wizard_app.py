"""The sign-up wizard of `wizard.py` as an app for a separate server process, on any store:

    STORE_URL=redis://127.0.0.1:6379/0 STORE_OPTIONS='{"prefix": "run-1"}' \\
        python -m uvicorn wizard_app:app --app-dir tests --port 8001

Environment:
- STORE_URL: what `open_store` gets (redis://..., postgresql://..., sqlite:///...; memory:// is per process);
- STORE_OPTIONS: JSON object of `open_store` options (e.g. {"prefix": ...} or a table name), default {};
- WIZARD_PREFIX: URL prefix of the wizard's routes, default /wizard.

Every process signs cookies with the same key (`wizard.SECRET_KEY`), so several of them behind one address
serve one user like a single app. `GET /_completed` returns the states this process's `on_complete` received;
`GET /ping` answers without the store.
`tests/servers.py` and `start_app_server` below start it on a free port.
"""

import json, os, subprocess, sys, time
from pathlib import Path

import httpx
from starlette.responses import JSONResponse

from cjm_workflow_state import open_store
from wizard import EXPECTED_STATE, FLOW_ID, decode_session_cookie, make_wizard_app, step_of

TESTS = Path(__file__).parent


def start_app_server(
    port: int,  # Loopback port to serve on
    store_url: str,  # STORE_URL of the app
    store_options: dict,  # STORE_OPTIONS of the app
    timeout: float = 30,  # Seconds to wait until it answers
) -> subprocess.Popen:  # The uvicorn process (terminate it when done)
    """Run this app in a separate uvicorn process on 127.0.0.1:`port`, once it answers."""
    env = {**os.environ, "STORE_URL": store_url, "STORE_OPTIONS": json.dumps(store_options)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "wizard_app:app",
            "--app-dir",
            str(TESTS),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_completed", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the wizard app did not start on port {port}:\n{server.communicate()[0]}")
        time.sleep(0.1)


def stop_app_server(server: subprocess.Popen) -> None:
    "Stop a server `start_app_server` started."
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


class Browser:
    """One user's browser: a cookie jar of its own, carried to whichever server answers next."""

    headers = {"HX-Request": "true"}

    def __init__(self):
        self.cookies = {}

    def request(self, method: str, url: str, **kw) -> str:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = httpx.request(
            method, url, headers={**self.headers, **({"Cookie": cookie} if cookie else {})}, timeout=30, **kw
        )
        assert response.status_code == 200, f"{method} {url}: {response.status_code} {response.text[:300]}"
        self.cookies.update(response.cookies)  # Starlette re-signs the session cookie on every response
        return response.text

    @property
    def session_id(self):
        return decode_session_cookie(self.cookies["session_"]).get("_workflow_session_id")


def run_wizard_on_two_servers(
    store_url: str,  # STORE_URL both servers use
    store_options: dict,  # STORE_OPTIONS both servers use
    ports: list,  # Two free loopback ports
) -> None:
    """One user's wizard with every request going to the other server than the one before: it completes with all data."""
    servers = []
    try:
        for port in ports:
            servers.append(start_app_server(port, store_url, store_options))
        a, b = (f"http://127.0.0.1:{port}/wizard" for port in ports)
        browser = Browser()
        assert step_of(browser.request("GET", f"{a}/start")) == "name"
        assert step_of(browser.request("POST", f"{b}/next_step", data={"name": EXPECTED_STATE["name"]})) == "email"
        session_id = browser.session_id
        assert step_of(browser.request("POST", f"{a}/next_step", data={"email": EXPECTED_STATE["email"]})) == "plan"
        assert step_of(browser.request("GET", f"{b}/back_step")) == "email"  # back, on the other server
        assert step_of(browser.request("POST", f"{a}/next_step", data={"email": EXPECTED_STATE["email"]})) == "plan"
        html = browser.request("POST", f"{b}/next_step", data={"plan": EXPECTED_STATE["plan"]})
        assert step_of(html) == "confirm" and all(v in html for v in EXPECTED_STATE.values()), html
        with open_store(store_url, **store_options) as store:
            assert store.get_state(FLOW_ID, session_id) == EXPECTED_STATE  # all of it, written by both servers
            assert store.get_current_step(FLOW_ID, session_id) == "confirm"
        html = browser.request("POST", f"{a}/next_step")
        assert step_of(html) == "complete" and "Welcome, Ada Lovelace" in html
        assert browser.session_id == session_id  # one workflow session from start to end
        completed = [httpx.get(f"http://127.0.0.1:{port}/_completed", timeout=10).json() for port in ports]
        assert completed == [[EXPECTED_STATE], []]  # the server that took the last step got all the data
    finally:
        for server in servers:
            stop_app_server(server)


if "STORE_URL" in os.environ:  # imported by uvicorn in the server process
    store = open_store(os.environ["STORE_URL"], **json.loads(os.environ.get("STORE_OPTIONS") or "{}"))
    wizard = make_wizard_app(store, prefix=os.environ.get("WIZARD_PREFIX", "/wizard"))
    app = wizard.app

    @app.get("/_completed")
    def completed():
        return JSONResponse(wizard.completed)

    @app.get("/ping")
    async def ping():
        return "pong"  # a route without the store, on the event loop: it answers while the store is slow
