"""The demo's saved requests belong to the visitor who made them (issue 9 items 7 and 8).

Two independent browsers (Starlette TestClients, each with its own cookie jar) on one app and one store:
B never sees A's requests (names, emails, session ids) and cannot resume, rename or delete them (404, nothing
changes), nor can a client without a cookie; A still can. Values the server makes (when a request was sent, its
reference) live where a form cannot write them, so posting `submitted_at` / `reference` never marks a request sent.
Store URLs the demo shows (page footer, start-up line, start-up errors) never show a password.
"""

import io, re
from contextlib import redirect_stdout
from datetime import date, timedelta

import pytest
from starlette.testclient import TestClient

from cjm_workflow_state import InMemoryWorkflowStateStore
from cjm_workflow_state import demo
from cjm_workflow_state.demo import FLOW_ID, create_app

HX = {"HX-Request": "true"}
CONTACT = {"name": "Ada Lovelace", "email": "ada@example.com", "company": "Analytical Engines"}
PROJECT = {
    "project_title": "Engine dashboard",
    "project_kind": "Website",
    "description": "A dashboard for the difference engine's operators.",
}
BUDGET = {"budget": "$5k to $20k", "deadline": (date.today() + timedelta(days=90)).isoformat(), "priority": "Flexible"}


@pytest.fixture
def app():
    store = InMemoryWorkflowStateStore()
    application = create_app(store, secret_key="test-demo-key")
    yield application
    store.close()


def ids_of(store):
    return sorted(s.session_id for s in store.list_sessions(FLOW_ID))


def started(app, answers=CONTACT):
    "A browser that has filled the first step; (client, its workflow session id)."
    client = TestClient(app)
    before = set(ids_of(app.state.store))
    client.post("/wizard/next_step", data=answers, headers=HX)
    (sid,) = set(ids_of(app.state.store)) - before
    return client, sid


def snapshot(store, sid):
    return store.get_session_summary(FLOW_ID, sid), store.get_state(FLOW_ID, sid)


def test_sessions_page_shows_only_the_visitors_own(app):
    a, a_id = started(app)
    b, b_id = started(app, {"name": "Bob Builder", "email": "bob@example.com"})
    page_b = b.get("/sessions").text
    assert "Bob Builder" in page_b and b_id in page_b
    for secret in ("Ada Lovelace", "ada@example.com", a_id):
        assert secret not in page_b
    page_a = a.get("/sessions").text
    assert "Ada Lovelace" in page_a and a_id in page_a and "Bob" not in page_a and b_id not in page_a
    fresh = TestClient(app).get("/sessions").text  # a new visitor sees no one's
    assert "No saved requests yet" in fresh and a_id not in fresh and b_id not in fresh


@pytest.mark.parametrize("who", ["other visitor", "no cookie"])
def test_others_cannot_act_on_a_request(app, who):
    store = app.state.store
    a, a_id = started(app)
    b = started(app, {"name": "Bob Builder", "email": "bob@example.com"})[0] if who == "other visitor" else None
    before = snapshot(store, a_id)
    for path, data in [
        ("/sessions/resume", {"session_id": a_id}),
        ("/sessions/rename", {"session_id": a_id, "label": "mine now"}),
        ("/sessions/delete", {"session_id": a_id}),
    ]:
        client = b or TestClient(app)  # no cookie: a fresh client every time
        r = client.post(path, data=data, follow_redirects=False)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert snapshot(store, a_id) == before, path  # nothing changed
    if b is not None:  # B is still on B's own request, not A's
        page = b.get("/").text
        assert "Ada Lovelace" not in page and "Bob Builder" in page
    # A still can: resume after starting another, rename, delete.
    a.post("/sessions/new")
    assert a.post("/sessions/resume", data={"session_id": a_id}, follow_redirects=False).status_code == 303
    assert "Ada Lovelace" in a.get("/").text
    assert (
        a.post("/sessions/rename", data={"session_id": a_id, "label": "Ada's"}, follow_redirects=False).status_code
        == 303
    )
    assert store.get_session_summary(FLOW_ID, a_id).label == "Ada's"
    assert a.post("/sessions/delete", data={"session_id": a_id}, follow_redirects=False).status_code == 303
    assert not store.session_exists(FLOW_ID, a_id)


def test_a_visitor_keeps_every_request_they_started(app):
    a, first = started(app)
    a.post("/sessions/new")
    a.post("/wizard/next_step", data={"name": "Second", "email": "second@example.com"}, headers=HX)
    a.post("/sessions/new")
    a.post("/wizard/next_step", data={"name": "Third", "email": "third@example.com"}, headers=HX)
    page = a.get("/sessions").text
    assert all(n in page for n in ("Ada Lovelace", "Second", "Third")) and first in page
    assert len(re.findall(r'data-session="', page)) == 3
    # Going back to the first one keeps the others in the list.
    a.post("/sessions/resume", data={"session_id": first})
    assert len(re.findall(r'data-session="', a.get("/sessions").text)) == 3


FORGED = {
    "submitted_at": "2024-01-01 00:00:00",
    "reference": "PR-FORGED",
    "__submitted_at": "2024-01-01 00:00:00",
    "__reference": "PR-FORGED2",
}


def sent(client):
    home, sessions = client.get("/").text, client.get("/sessions").text
    return "Request sent" in home or "Submitted" in sessions or "PR-FORGED" in home + sessions


@pytest.mark.parametrize("steps_before", [0, 1, 2, 3])
def test_forged_fields_do_not_send_a_request(app, steps_before):
    client = TestClient(app)
    answers = [CONTACT, PROJECT, BUDGET]
    for data in answers[:steps_before]:
        client.post("/wizard/next_step", data=data, headers=HX)
    step_answers = answers[steps_before] if steps_before < 3 else {"consent": ""}
    client.post("/wizard/next_step", data={**step_answers, **FORGED}, headers=HX)
    assert not sent(client)
    client.post("/wizard/next_step", data=FORGED, headers=HX)  # the forged fields alone
    assert not sent(client)


def test_sent_request_keeps_its_server_made_values(app):
    client = TestClient(app)
    for data in (CONTACT, PROJECT, BUDGET, {"consent": "yes"}):
        client.post("/wizard/next_step", data=data, headers=HX)
    home = client.get("/").text
    assert "Request sent" in home
    reference = re.search(r'class="reference">([^<]+)<', home).group(1)
    client.post("/wizard/next_step", data={"consent": "yes", **FORGED}, headers=HX)  # sending again, with forgeries
    home = client.get("/").text
    assert "PR-FORGED" not in home and re.search(r'class="reference">([^<]+)<', home).group(1) == reference


# ---- item 8: passwords in displayed store URLs --------------------------------------------------
SECRET_URLS = [
    "postgresql://app:s3cret@db.example:5432/app",
    "postgresql://app@db.example/app?sslmode=require&password=s3cret",
    "postgresql://app@db.example/app?sslpassword=s3cret&password=s3cret",
    "redis://:s3cret@127.0.0.1:6379/0",
    "redis://127.0.0.1:6379/0?password=s3cret",
    "rediss://default:s3cret@cache.example:6380/2",
    "postgresql://app:p%40s3cret%3A@db.example/app",
    "postgresql://app:pa@s3cret@db.example/app",
    "postgresql://app:s3cret@[bad/app",
    "mongodb://root:s3cret@db.example/admin",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_redact_url_hides_every_secret(url):
    shown = demo.redact_url(url)
    assert "s3cret" not in shown and "***" in shown, shown


def test_redact_url_keeps_the_rest():
    assert (
        demo.redact_url("postgresql://app@db.example:5432/app?sslmode=require&password=x")
        == "postgresql://app@db.example:5432/app?sslmode=require&password=***"
    )
    assert demo.redact_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    for url in ("sqlite:///cjm_workflow_demo.db", "memory://", "redis://127.0.0.1:6379/0"):
        assert demo.redact_url(url) == url


def test_footer_and_start_up_line_hide_the_password(monkeypatch):
    url = "redis://user:s3cret@127.0.0.1:6379/0?password=s3cret"
    monkeypatch.setattr(demo, "open_store", lambda u, **options: InMemoryWorkflowStateStore(**options))
    page = TestClient(create_app(url, secret_key="k")).get("/").text
    assert "s3cret" not in page and "127.0.0.1:6379" in page
    import uvicorn

    def run(server, sockets=None):
        server.started = True  # uvicorn returns at once (and did start)

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    out = io.StringIO()
    with redirect_stdout(out):
        demo.serve(store=url, host="127.0.0.1", port=_free_port())
    assert "s3cret" not in out.getvalue() and "127.0.0.1:6379" in out.getvalue()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_up_error_hides_the_password():
    with pytest.raises(SystemExit) as e:
        demo.serve(store="mongodb://root:s3cret@db.example/admin", host="127.0.0.1", port=_free_port())
    assert "s3cret" not in str(e.value) and "mongodb" in str(e.value)


def test_a_full_browser_refuses_a_new_request_rather_than_drop_one(app):
    store, client = app.state.store, TestClient(app)
    for i in range(demo.MAX_SAVED):
        if i:
            assert client.post("/sessions/new", follow_redirects=False).headers["location"] == "/"
        client.post("/wizard/next_step", data={"name": f"Person {i}", "email": f"p{i}@example.com"}, headers=HX)
    assert len(client.cookies.get("session_")) < 4000  # the cookie still fits a browser's 4 KB limit
    r = client.post("/sessions/new", follow_redirects=False)
    assert r.headers["location"] == "/sessions?full=1"
    assert f"at most {demo.MAX_SAVED} requests" in client.get(r.headers["location"]).text
    page = client.get("/sessions").text
    assert len(re.findall(r'data-session="', page)) == demo.MAX_SAVED and "Person 0" in page
    # Deleting one makes room.
    first = min(store.list_sessions(FLOW_ID), key=lambda s: s.created_ts).session_id
    client.post("/sessions/delete", data={"session_id": first})
    assert client.post("/sessions/new", follow_redirects=False).headers["location"] == "/"


# ---- issue 12: start-up, favicon, messages, Cancel -----------------------------------------------
def _run_demo(args, cwd, command=None):
    import subprocess
    import sys

    return subprocess.run(
        (command or [sys.executable, "-m", "cjm_workflow_state.demo"]) + args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_taken_port_is_refused_before_anything_is_created(tmp_path):
    import socket

    with socket.socket() as held:  # another program listens on the port
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        r = _run_demo(["--port", str(port)], tmp_path)
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert str(port) in r.stderr and "--port" in r.stderr, r.stderr
    assert "http://" not in r.stdout + r.stderr, r.stdout  # the URL is never announced
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no database, no cookie key


def _console_script():
    import shutil
    import sys
    from pathlib import Path

    found = Path(sys.executable).parent / "cjm-workflow-demo"
    return (
        [str(found)]
        if found.exists()
        else [shutil.which("cjm-workflow-demo") or pytest.skip("no cjm-workflow-demo script")]
    )


@pytest.mark.parametrize("how", ["python -m", "console script"])
def test_help_names_the_program(how, tmp_path):
    r = _run_demo(["--help"], tmp_path, None if how == "python -m" else _console_script())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: cjm-workflow-demo "), r.stdout
    assert "demo.py" not in r.stdout and "--port" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_favicon(app):
    client = TestClient(app)
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/"), (r.status_code, r.headers)
    page = client.get("/").text
    link = re.search(r'<link[^>]*rel="icon"[^>]*>', page)
    assert link, "the page names its icon"
    href = re.search(r'href="([^"]+)"', link.group(0)).group(1)
    icon = client.get(href)
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/")


def test_required_field_messages_read_well(app):
    for fields in demo.STEP_FIELDS.values():
        for f in fields:
            if not f.required:
                continue
            message = demo.field_error(f, "")
            assert message and "is required" not in message and f"{f.label} is" not in message, message
            assert message.startswith("Please"), message
    client = TestClient(app)
    for data in (CONTACT, PROJECT):
        client.post("/wizard/next_step", data=data, headers=HX)
    page = client.post("/wizard/next_step", data={"budget": "", "deadline": "", "priority": ""}, headers=HX).text
    assert 'data-step="budget"' in page and "is required" not in page
    assert "Please choose how firm the deadline is" in page and "Please choose a budget" in page


def test_cancel_asks_before_wiping_the_answers(app):
    client = TestClient(app)
    first = client.post("/wizard/next_step", data=CONTACT, headers=HX).text  # the project step, as htmx gets it
    for page in (first, client.get("/").text, client.get("/wizard/start").text):
        button = re.search(r'<button[^>]*id="step-flow-cancel-btn"[^>]*>', page)
        assert button and re.search(r'hx-confirm="[^"]+"', button.group(0)), page


# ---- review items 11 and 12: serve listens before anything else; --host "" and IPv6 hosts ---------------------
class _FakeServerRun:
    "Stands in for `uvicorn.Server.run`: records the sockets it is given and returns at once (the server 'started')."

    sockets, listening = "never called", []

    def run(self, server, sockets=None):
        self.sockets = list(sockets) if sockets is not None else None
        self.listening = [s.getsockname() for s in self.sockets or []]
        server.started = True


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    import uvicorn

    fake = _FakeServerRun()
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: fake.run(server, sockets))
    monkeypatch.chdir(tmp_path)  # the cookie key file lands here
    return fake


def _ipv6_loopback():
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")


def test_serve_holds_the_port_before_it_opens_the_store(fake_run, monkeypatch):
    # The race of a check-then-bind: another program binds the port (address reuse on, not yet listening) and
    # starts listening once the demo has looked at the port. The demo must already listen there, and serve on
    # those very sockets: the other program's listen fails, not the demo's.
    import errno
    import socket

    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        port, seen = other.getsockname()[1], {}
        real_create_app = demo.create_app

        def create_app_after_the_port_is_contested(*args, **kwargs):
            try:
                other.listen(1)
            except OSError as e:
                seen["other"] = e.errno
            else:
                seen["other"] = "listening"
            return real_create_app(*args, **kwargs)

        monkeypatch.setattr(demo, "create_app", create_app_after_the_port_is_contested)
        out = io.StringIO()
        with redirect_stdout(out):
            demo.serve(store="memory://", host="127.0.0.1", port=port)
    assert seen["other"] == errno.EADDRINUSE, seen  # the demo already listened when it opened the store
    assert fake_run.listening == [("127.0.0.1", port)], fake_run.sockets  # uvicorn got the demo's sockets
    assert all(s.fileno() == -1 for s in fake_run.sockets)  # and they are closed once it returns
    assert f"http://127.0.0.1:{port}" in out.getvalue()


def test_a_taken_port_ends_start_up_with_exit_1_and_one_line(tmp_path):
    import socket

    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as most servers do: the demo still sees it taken
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        r = _run_demo(["--store", "sqlite:///taken.db", "--port", str(port)], tmp_path)
    assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert r.stderr == (
        f"cjm-workflow-demo: port {port} on 127.0.0.1 is already in use; stop the program using it, "
        f"or choose another port with --port (e.g. --port {port + 1})\n"
    ), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_empty_host_listens_on_every_interface_as_uvicorn_does(fake_run):
    import socket

    port = _free_port()
    out = io.StringIO()
    with redirect_stdout(out):
        demo.serve(store="memory://", host="", port=port)
    assert ("0.0.0.0", port) in fake_run.listening, fake_run.listening
    assert all(addr[1] == port for addr in fake_run.listening)
    banner = out.getvalue()
    assert f"http://localhost:{port}" in banner and "http://:" not in banner, banner
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # closed again after the run


def test_ipv6_host_banner_is_a_valid_url(fake_run):
    from urllib.parse import urlsplit

    _ipv6_loopback()
    port = _free_port()
    out = io.StringIO()
    with redirect_stdout(out):
        demo.serve(store="memory://", host="::1", port=port)
    url = re.search(r"http://\S+", out.getvalue()).group(0)
    assert url == f"http://[::1]:{port}", out.getvalue()
    assert (urlsplit(url).hostname, urlsplit(url).port) == ("::1", port)
    assert [a[:2] for a in fake_run.listening] == [("::1", port)], fake_run.listening


def test_the_demo_serves_on_an_ipv6_host_at_the_url_it_prints(tmp_path):
    import subprocess
    import sys
    import urllib.request

    _ipv6_loopback()
    port = _free_port()
    p = subprocess.Popen(
        [sys.executable, "-m", "cjm_workflow_state.demo", "--store", "memory://", "--host", "::1", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline()
        url = re.search(r"http://\S+", line).group(0)
        assert url == f"http://[::1]:{port}", line
        with urllib.request.urlopen(url + "/", timeout=20) as r:
            assert r.status == 200 and "Project request" in r.read().decode()
    finally:
        p.terminate()
        p.wait(20)
