"""A StepFlow wizard on a SQLite store survives a server restart: a new app with a new store object on the same file,
given the same cookie, resumes the user at the step they were on, with their data."""

from fasthtml.common import FastHTML, Div, Input, P
from starlette.testclient import TestClient

from cjm_fasthtml_interactions.patterns.step_flow import Step, StepFlow
from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore

SECRET = "restart-test-secret"  # both "processes" sign cookies with one key, as a deployed app does


def make_app(db_path):
    "A fresh app and a fresh store object on `db_path`, as a restarted server builds them."
    store = SQLiteWorkflowStateStore(db_path)
    steps = [
        Step(
            id="name",
            title="Name",
            data_keys=["name"],
            render=lambda ctx: Div(P("Step 1: your name"), Input(name="name")),
        ),
        Step(
            id="email",
            title="Email",
            data_keys=["email"],
            render=lambda ctx: Div(P(f"Step 2: hello {ctx.state.get('name')}, your email?"), Input(name="email")),
        ),
        Step(
            id="confirm",
            title="Confirm",
            render=lambda ctx: Div(P(f"Step 3: confirm {ctx.state.get('name')} <{ctx.state.get('email')}>")),
        ),
    ]
    flow = StepFlow("signup", steps, state_store=store)
    app = FastHTML(secret_key=SECRET)
    router = flow.create_router(prefix="/signup")
    router.to_app(app)
    # route paths from the router itself: cjm-fasthtml-interactions 0.0.26 (Python 3.11) names them
    # /signup/create_router_start..., later versions /signup/start...
    paths = {func.__name__: path for func, path, *_ in router.routes}
    return app, store, paths


def test_wizard_resumes_after_restart(tmp_path):
    db = tmp_path / "wizard.db"
    app, store, paths = make_app(db)
    with TestClient(app) as client:
        assert "Step 1: your name" in client.get(paths["start"]).text
        assert "Step 2: hello Alice, your email?" in client.post(paths["next_step"], data={"name": "Alice"}).text
        page = client.post(paths["next_step"], data={"email": "alice@example.com"}).text
        assert "Step 3: confirm Alice &lt;alice@example.com&gt;" in page
        cookies = dict(client.cookies)
    store.close()
    del app, store  # the old server is gone

    new_app, new_store, new_paths = make_app(db)  # restarted: new app, new store object, same file
    with TestClient(new_app) as client:
        client.cookies.update(cookies)
        page = client.get(new_paths["start"]).text
        assert "Step 3: confirm Alice &lt;alice@example.com&gt;" in page
        # and the wizard goes on from there: back to step 2 shows the data entered before the restart
        assert "Step 2: hello Alice, your email?" in client.get(new_paths["back_step"]).text
    (session_id,) = [s.session_id for s in new_store.list_sessions("signup")]
    assert new_store.get_state("signup", session_id) == {"name": "Alice", "email": "alice@example.com"}
    assert new_store.get_current_step("signup", session_id) == "email"
    new_store.close()

    third_app, third, third_paths = make_app(db)
    with TestClient(third_app) as other_user:  # another cookie: another user, who starts at step 1
        assert "Step 1: your name" in other_user.get(third_paths["start"]).text
        assert "Step 2: hello Bob, your email?" in other_user.post(third_paths["next_step"], data={"name": "Bob"}).text
    assert third.get_state("signup", session_id) == {"name": "Alice", "email": "alice@example.com"}
    assert sorted(third.get_state("signup", s.session_id).get("name") for s in third.list_sessions("signup")) == [
        "Alice",
        "Bob",
    ]
    third.close()
