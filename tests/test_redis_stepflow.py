"""A real client on Redis: a FastHTML StepFlow wizard that survives an app restart, and one user's wizard served by
two app server processes in turn."""

import pytest
from starlette.testclient import TestClient

from cjm_workflow_state import open_store
from servers import free_port, redis_url, unique_name
from wizard import EXPECTED_STATE, FLOW_ID, WizardClient, make_wizard_app, step_of
from wizard_app import run_wizard_on_two_servers


@pytest.fixture
def prefix():
    "A fresh key prefix on the Redis test server, deleted afterwards."
    url, name = redis_url(), unique_name("stepflow")
    yield name
    cleanup = open_store(url, prefix=name)
    cleanup.delete_all()
    cleanup.close()


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


def test_two_app_servers_serve_one_wizard(prefix):
    "Two uvicorn processes on one Redis prefix; one user's requests alternate between them; the wizard completes."
    ports = [free_port(), free_port()]
    while ports[1] == ports[0]:
        ports[1] = free_port()
    run_wizard_on_two_servers(redis_url(), {"prefix": prefix}, ports)
