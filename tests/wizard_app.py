"""The sign-up wizard of `wizard.py` as an app for a separate server process, on any store:

    STORE_URL=redis://127.0.0.1:6379/0 STORE_OPTIONS='{"prefix": "run-1"}' \\
        python -m uvicorn wizard_app:app --app-dir tests --port 8001

Environment:
- STORE_URL: what `open_store` gets (redis://..., postgresql://..., sqlite:///...; memory:// is per process);
- STORE_OPTIONS: JSON object of `open_store` options (e.g. {"prefix": ...} or a table name), default {};
- WIZARD_PREFIX: URL prefix of the wizard's routes, default /wizard.

Every process signs cookies with the same key (`wizard.SECRET_KEY`), so several of them behind one address
serve one user like a single app. `GET /_completed` returns the states this process's `on_complete` received.
`tests/servers.py` and `start_app_server` below start it on a free port.
"""
import json, os, subprocess, sys, time
from pathlib import Path

import httpx
from starlette.responses import JSONResponse

from cjm_workflow_state import open_store
from wizard import make_wizard_app

TESTS = Path(__file__).parent


def start_app_server(
    port: int,  # Loopback port to serve on
    store_url: str,  # STORE_URL of the app
    store_options: dict,  # STORE_OPTIONS of the app
    timeout: float = 30,  # Seconds to wait until it answers
) -> subprocess.Popen:  # The uvicorn process (terminate it when done)
    """Run this app in a separate uvicorn process on 127.0.0.1:`port`, once it answers."""
    env = {**os.environ, "STORE_URL": store_url, "STORE_OPTIONS": json.dumps(store_options)}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "wizard_app:app", "--app-dir", str(TESTS),
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_completed", timeout=1).status_code == 200: return server
        except httpx.HTTPError: pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the wizard app did not start on port {port}:\n{server.communicate()[0]}")
        time.sleep(0.1)


def stop_app_server(server: subprocess.Popen) -> None:
    "Stop a server `start_app_server` started."
    if server.poll() is None:
        server.terminate()
        try: server.wait(10)
        except subprocess.TimeoutExpired: server.kill(); server.wait(10)


if "STORE_URL" in os.environ:  # imported by uvicorn in the server process
    store = open_store(os.environ["STORE_URL"], **json.loads(os.environ.get("STORE_OPTIONS") or "{}"))
    wizard = make_wizard_app(store, prefix=os.environ.get("WIZARD_PREFIX", "/wizard"))
    app = wizard.app

    @app.get("/_completed")
    def completed(): return JSONResponse(wizard.completed)
