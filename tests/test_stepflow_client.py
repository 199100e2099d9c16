"""A real client of the store: a FastHTML app's StepFlow wizard driven through its routes with Starlette's TestClient."""

import pytest

from cjm_workflow_state import InMemoryWorkflowStateStore, open_store
from cjm_workflow_state.stepflow import STEPFLOW_ROUTES
from wizard import EXPECTED_STATE, FLOW_ID, make_wizard_app, run_wizard, step_of

STORES = {"InMemoryWorkflowStateStore": InMemoryWorkflowStateStore, "memory://": lambda: open_store("memory://")}


@pytest.fixture(params=list(STORES))
def wizard(request):
    store = STORES[request.param]()
    yield make_wizard_app(store)
    store.close()


def assert_cookie_holds_only_the_session_id(wc):
    assert wc.session == {"_workflow_session_id": wc.session_id}
    assert len(wc.cookie) < 200
    for value in EXPECTED_STATE.values():
        assert value not in str(wc.session)


def test_routes_are_flat(wizard):
    paths = {route.path for route in wizard.app.routes}
    assert {f"/wizard/{name}" for name in STEPFLOW_ROUTES} <= paths


def test_wizard_start_steps_back_validation_and_completion(wizard):
    store, wc = wizard.store, wizard.client()
    assert step_of(wc.start()) == "name"
    assert_cookie_holds_only_the_session_id(wc)
    session_id = wc.session_id

    html = wc.submit(name="   ")  # invalid: the step is rendered again, with its error
    assert step_of(html) == "name" and "Enter your name" in html
    assert wc.current_step is None  # StepFlow never advanced

    assert step_of(wc.submit(name="Ada Lovelace")) == "email"
    assert (wc.current_step, wc.state) == ("email", {"name": "Ada Lovelace"})

    html = wc.submit(email="not-an-email")
    assert step_of(html) == "email" and "Enter a valid email address" in html
    assert wc.current_step == "email"
    assert step_of(wc.submit(email="ada@example.com")) == "plan"

    html = wc.back()  # the previous step, with what was entered
    assert step_of(html) == "email" and 'value="ada@example.com"' in html
    assert wc.current_step == "email"
    assert step_of(wc.submit(email="ada@example.com")) == "plan"

    assert step_of(wc.submit(plan="platinum")) == "plan"
    assert step_of(wc.start()) == "plan"  # a reload resumes where the user is
    html = wc.submit(plan="pro")
    assert step_of(html) == "confirm" and "ada@example.com" in html
    assert (wc.current_step, wc.state) == ("confirm", EXPECTED_STATE)
    assert_cookie_holds_only_the_session_id(wc)

    html = wc.submit()
    assert step_of(html) == "complete" and "Welcome, Ada Lovelace" in html
    assert wizard.completed == [EXPECTED_STATE]  # on_complete got the whole state
    assert wc.session_id == session_id  # one workflow session from start to end
    assert not store.session_exists(FLOW_ID, session_id) and store.list_flows() == []


def test_users_are_isolated(wizard):
    ada, bob = wizard.client(), wizard.client()
    ada.start()
    ada.submit(name="Ada")
    bob.start()
    bob.submit(name="Bob")
    bob.submit(email="bob@example.com")
    assert ada.session_id != bob.session_id
    assert (ada.current_step, ada.state) == ("email", {"name": "Ada"})
    assert (bob.current_step, bob.state) == ("plan", {"name": "Bob", "email": "bob@example.com"})
    assert sorted(s.session_id for s in wizard.store.list_sessions(FLOW_ID)) == sorted([ada.session_id, bob.session_id])


def test_reset_forgets_the_workflow(wizard):
    wc = wizard.client()
    wc.start()
    wc.submit(name="Ada")
    assert step_of(wc.reset()) == "name"
    assert not wizard.store.session_exists(FLOW_ID, wc.session_id)
    assert wc.state == {} and wc.current_step is None


def test_forms_post_where_the_rendered_html_says(wizard):
    # The browser follows the URLs StepFlow renders; on cjm-fasthtml-interactions 0.0.26 they are its own nested ones.
    wc = wizard.client()
    html = wc.post_form(wc.start(), name="Ada Lovelace")
    html = wc.post_form(html, email="ada@example.com")
    html = wc.post_form(html, plan="pro")
    assert step_of(wc.post_form(html)) == "complete"
    assert wizard.completed == [EXPECTED_STATE]


def test_run_wizard_helper(wizard):
    run_wizard(wizard.client())
    run_wizard(wizard.client(), name="Bob")
    assert [s["name"] for s in wizard.completed] == ["Ada Lovelace", "Bob"]
