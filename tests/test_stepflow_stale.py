"""Step-bound forms (issue 13): every step create_stepflow_router renders names the step it was rendered for, and
`next_step` / `back_step` from a page that is out of date (another tab moved the wizard on, the back button, a double
submit) write nothing and answer with the current step under a notice. Each tab here posts exactly what its own last
rendered page held (its hidden fields and, for Back, its hx-vals), as a browser does; on every backend, with the
routes in request scopes and without (a store that hides `request_scope`, as a third-party store has none)."""

import json, re

import pytest
from starlette.testclient import TestClient

from cjm_workflow_state import open_store
from cjm_workflow_state.backends.memory import InMemoryWorkflowStateStore
from cjm_workflow_state.stepflow import STALE_MESSAGE, STEP_FIELD, VERSION_FIELD
from servers import make_postgres_store, postgres_schema, postgres_url, redis_url, unique_name
from wizard import decode_session_cookie, make_wizard_app, step_of


class NoScope:
    "The store without `request_scope`: create_stepflow_router runs StepFlow's routes without scopes."

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        if name == "request_scope":
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.fixture(scope="module")
def pg_schema():
    postgres_url()
    with postgres_schema("sf_stale") as found:
        yield found


@pytest.fixture(params=[f"{b}-{s}" for b in ("memory", "sqlite", "redis", "postgres") for s in ("scoped", "unscoped")])
def store(request, tmp_path):
    backend, scoped = request.param.split("-")
    prefix = None
    if backend == "memory":
        inner = InMemoryWorkflowStateStore()
    elif backend == "sqlite":
        inner = open_store(f"sqlite:///{tmp_path / 'stale.db'}")
    elif backend == "redis":
        prefix = unique_name("sf_stale")
        inner = open_store(redis_url(), prefix=prefix)
    else:
        inner = make_postgres_store(*request.getfixturevalue("pg_schema"))
    yield inner if scoped == "scoped" else NoScope(inner)
    if prefix:
        inner.delete_all()
    inner.close()


class Tab:
    "One browser tab of the wizard: it shares the browser's cookie jar and sends what its own page holds."

    headers = {"HX-Request": "true"}

    def __init__(self, wizard, http: TestClient):
        self.wizard, self.http, self.html = wizard, http, ""

    def _shown(self, response) -> str:
        assert response.status_code == 200, (response.status_code, response.text)
        self.html = response.text
        return self.html

    def hidden(self) -> dict:
        "The hidden fields of the page's form (posted with it)."
        return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', self.html))

    def hx_vals(self) -> dict:
        "The values htmx adds to every request the step's buttons make (hx-vals on the step's root element)."
        found = re.findall(r"hx-vals='([^']*)'", self.html)
        return json.loads(found[-1]) if found else {}

    def open(self) -> str:
        return self._shown(self.http.get(self.wizard.url("start"), headers=self.headers))

    def submit(self, **typed) -> str:
        "Next on this page: its form's hidden fields and what the user typed."
        return self._shown(
            self.http.post(self.wizard.url("next_step"), data={**self.hidden(), **typed}, headers=self.headers)
        )

    def back(self) -> str:
        "Back on this page: a GET with the step's hx-vals, as htmx sends it."
        return self._shown(self.http.get(self.wizard.url("back_step"), params=self.hx_vals(), headers=self.headers))


def _tabs(store, n=2):
    wizard = make_wizard_app(store)
    http = TestClient(wizard.app)
    return wizard, http, [Tab(wizard, http) for _ in range(n)]


def _stored(wizard, http):
    "(state, current step) the store holds for the browser's workflow session (from its signed cookie)."
    store = wizard.store
    sid = decode_session_cookie(http.cookies.get(wizard.app.session_cookie))[store.session_key]
    return store.get_state(wizard.flow_id, sid), store.get_current_step(wizard.flow_id, sid)


def _is_notice(html: str) -> bool:
    return STALE_MESSAGE in html and "wfs-stale" in html


def test_every_step_is_bound_to_its_step(store):
    wizard, http, (tab, _) = _tabs(store)
    with http:
        for expected, typed in (("name", None), ("email", {"name": "Ada"}), ("plan", {"email": "ada@example.com"})):
            html = tab.submit(**typed) if typed else tab.open()
            assert step_of(html) == expected
            hidden = tab.hidden()
            assert hidden[STEP_FIELD] == expected and re.fullmatch(r"[0-9a-f]{24}", hidden[VERSION_FIELD])
            assert tab.hx_vals() == hidden  # (htmx sends the same with Back and Cancel)
            assert re.search(r'<form [^>]*hx-post="[^"]+/[a-z_]*next_step"[^>]*hx-vals=', html), (
                html
            )  # (StepFlow's own attributes kept)
        assert not any(k.startswith("__") for k in _stored(wizard, http)[0])  # the fields are never stored


def test_a_stale_tab_never_completes_the_wizard(store):
    "Issue 13's scenario: tab A's email form, submitted after tab B moved the wizard to confirm, changes nothing."
    wizard, http, (a, b) = _tabs(store)
    with http:
        a.open()
        assert step_of(a.submit(name="Ada Lovelace")) == "email"
        assert step_of(b.open()) == "email"
        assert step_of(b.submit(email="new@example.com")) == "plan"
        assert step_of(b.submit(plan="pro")) == "confirm"
        html = a.submit(email="old@example.com")  # the page A still shows
        assert _is_notice(html) and step_of(html) == "confirm", html
        assert wizard.completed == []
        assert _stored(wizard, http) == ({"name": "Ada Lovelace", "email": "new@example.com", "plan": "pro"}, "confirm")
        assert a.hidden()[STEP_FIELD] == "confirm"  # A now shows the confirmation, bound to it
        assert step_of(a.submit()) == "complete"
        assert wizard.completed == [{"name": "Ada Lovelace", "email": "new@example.com", "plan": "pro"}]


def test_a_double_submit_skips_no_step(store):
    wizard, http, (tab, _) = _tabs(store)
    with http:
        tab.open()
        tab.submit(name="Ada")
        email_page = tab.html
        assert step_of(tab.submit(email="ada@example.com")) == "plan"
        tab.html = email_page  # the second click of a double-click sends the same page again
        html = tab.submit(email="ada@example.com")
        assert _is_notice(html) and step_of(html) == "plan"
        assert _stored(wizard, http) == ({"name": "Ada", "email": "ada@example.com"}, "plan")


def test_back_and_forth_loses_no_answer(store):
    wizard, http, (a, b) = _tabs(store)
    with http:
        a.open()
        a.submit(name="Ada")
        a.submit(email="ada@example.com")
        assert step_of(a.html) == "plan"
        b.open()
        assert step_of(b.back()) == "email"  # tab B goes back one step
        html = a.back()  # tab A's Back, from its plan page: out of date, the wizard is on email now
        assert _is_notice(html) and step_of(html) == "email"
        assert _stored(wizard, http) == ({"name": "Ada", "email": "ada@example.com"}, "email")  # not moved to name
        assert step_of(a.submit(email="lovelace@example.com")) == "plan"  # forward again from the page it now shows
        assert step_of(b.submit(email="stale@example.com")) == "plan" and _is_notice(b.html)  # B's email page: stale
        assert step_of(a.back()) == "email" and step_of(a.back()) == "name"
        assert step_of(a.submit(name="Ada Lovelace")) == "email"
        assert _stored(wizard, http) == ({"name": "Ada Lovelace", "email": "lovelace@example.com"}, "email")


def test_a_post_without_the_field_behaves_as_before(store):
    "A client that did not get our form (no step field): StepFlow's routes as they are, unguarded."
    wizard, http, (tab, _) = _tabs(store)
    with http:
        tab.open()
        tab.submit(name="Ada")
        response = http.post(wizard.url("next_step"), data={"email": "ada@example.com"}, headers=Tab.headers)
        assert response.status_code == 200 and step_of(response.text) == "plan" and not _is_notice(response.text)
        response = http.get(wizard.url("back_step"), headers=Tab.headers)
        assert step_of(response.text) == "email" and not _is_notice(response.text)


def test_a_field_for_an_unknown_step_is_stale(store):
    "A forged or garbled step field is not the current step: nothing is written."
    wizard, http, (tab, _) = _tabs(store)
    with http:
        tab.open()
        tab.submit(name="Ada")
        for forged in ("", "nope", "email\x00", "e" * 10_000):
            response = http.post(
                wizard.url("next_step"), data={STEP_FIELD: forged, "email": "x@example.com"}, headers=Tab.headers
            )
            assert response.status_code == 200 and _is_notice(response.text) and step_of(response.text) == "email"
        assert _stored(wizard, http) == ({"name": "Ada"}, "email")


def test_a_page_whose_step_is_current_again_but_shows_older_answers_is_stale(store):
    "Tab A's confirmation lists plan pro; tab B goes back, picks free and returns: A's Sign up must not complete."
    wizard, http, (a, b) = _tabs(store)
    with http:
        a.open()
        a.submit(name="Ada")
        a.submit(email="ada@example.com")
        assert step_of(a.submit(plan="pro")) == "confirm"
        b.open()
        assert step_of(b.back()) == "plan" and step_of(b.submit(plan="free")) == "confirm"
        html = a.submit()  # the step is confirm again, but A's page shows plan pro
        assert _is_notice(html) and step_of(html) == "confirm" and wizard.completed == []
        assert "plan: free" in html  # A now sees what it confirms
        assert step_of(a.submit()) == "complete"
        assert wizard.completed == [{"name": "Ada", "email": "ada@example.com", "plan": "free"}]


def test_a_stale_cancel_clears_nothing(store):
    wizard, http, (a, b) = _tabs(store)
    with http:
        a.open()
        a.submit(name="Ada")
        b.open()
        b.submit(email="ada@example.com")
        response = http.get(
            wizard.url("reset"), params=a.hx_vals(), headers=Tab.headers
        )  # A's Cancel, as htmx sends it
        assert response.status_code == 200 and _is_notice(response.text) and step_of(response.text) == "plan"
        assert _stored(wizard, http) == ({"name": "Ada", "email": "ada@example.com"}, "plan")
        response = http.get(wizard.url("reset"), params=b.hx_vals(), headers=Tab.headers)  # B's, from the current page
        assert not _is_notice(response.text) and step_of(response.text) == "name"
        assert _stored(wizard, http)[0] == {}


def test_a_stored_step_the_flow_no_longer_has_is_left_to_stepflow(store):
    "A step renamed in a deploy while a user was on it: StepFlow starts the flow again, and the page it gives works."
    wizard, http, (tab, _) = _tabs(store)
    with http:
        tab.open()
        tab.submit(name="Ada")
        sid = decode_session_cookie(http.cookies.get(wizard.app.session_cookie))[store.session_key]
        store.set_current_step(wizard.flow_id, sid, "old_email")
        assert step_of(tab.submit(email="ada@example.com")) == "name"  # StepFlow's own answer: the first step
        assert step_of(tab.submit(name="Ada")) == "email" and not _is_notice(tab.html)  # and its page works


def test_the_demo_binds_pages_to_their_request(tmp_path):
    """The demo keeps several requests per browser: tab A's page of request 1, submitted after tab B started request
    2 and brought it to the same step, writes nothing into request 2."""
    from cjm_workflow_state.demo import FLOW_ID, create_app

    demo = InMemoryWorkflowStateStore()
    http, hx = TestClient(create_app(demo, secret_key="stale-tests")), {"HX-Request": "true"}

    def fields(html):
        return dict(re.findall(r'<input type="hidden" name="(__wfs_[a-z]+)" value="([^"]*)"', html))

    contact = {"name": "Ada Lovelace", "email": "ada@example.com", "company": "Analytical Engines"}
    with http:
        page = http.get("/").text
        page_a = http.post("/wizard/next_step", data={**fields(page), **contact}, headers=hx).text  # request 1: project
        http.post("/sessions/new", follow_redirects=False)  # tab B: a new request
        page_b = http.get("/").text
        page_b = http.post(
            "/wizard/next_step", data={**fields(page_b), **contact}, headers=hx
        ).text  # request 2: project
        assert fields(page_a)[STEP_FIELD] == fields(page_b)[STEP_FIELD] == "project"
        html = http.post(
            "/wizard/next_step",
            data={
                **fields(page_a),
                "project_title": "From tab A",
                "project_kind": "Website",
                "description": "Typed in tab A.",
            },
            headers=hx,
        ).text
        assert _is_notice(html)
        assert all("project_title" not in demo.get_state(FLOW_ID, s.session_id) for s in demo.list_sessions(FLOW_ID))


def test_hx_vals_of_the_flow_are_kept():
    "A flow that puts hx-vals of its own on a step keeps them; the step fields are added."
    from cjm_fasthtml_interactions.patterns.step_flow import StepFlow
    from wizard import SECRET_KEY, _steps
    from fasthtml.common import FastHTML
    from cjm_workflow_state.stepflow import create_stepflow_router

    class TenantFlow(StepFlow):
        def render_step_content(self, *args, **kwargs):
            return super().render_step_content(*args, **kwargs)(hx_vals=json.dumps({"tenant": "acme"}))

    flow = TenantFlow("signup", _steps(), state_store=InMemoryWorkflowStateStore())
    app = FastHTML(secret_key=SECRET_KEY)
    create_stepflow_router(flow, "/wizard").to_app(app)
    html = TestClient(app).get("/wizard/start", headers=Tab.headers).text
    vals = json.loads(re.findall(r"hx-vals='([^']*)'", html)[-1])
    assert vals["tenant"] == "acme" and vals[STEP_FIELD] == "name" and VERSION_FIELD in vals


def test_a_stale_page_gets_the_steps_on_enter_answer():
    """cjm-fasthtml-interactions 0.0.38: a step's on_enter hook may show something instead of the step (a gate); the
    stale answer shows what StepFlow would, so a stale tab is not handed the form the gate stands in front of."""
    from cjm_fasthtml_interactions.patterns.step_flow import Step, StepFlow

    if not hasattr(Step, "on_enter"):
        pytest.skip("on_enter hooks need cjm-fasthtml-interactions 0.0.38 (Python 3.12)")
    from fasthtml.common import Div, FastHTML, P
    from wizard import SECRET_KEY, Wizard, _steps
    from cjm_workflow_state.stepflow import create_stepflow_router

    steps = _steps()
    steps[-1].on_enter = lambda state, request, sess: (
        Div(P("Pro needs approval."), data_step="gate") if state.get("plan") == "pro" else None
    )
    completed = []
    flow = StepFlow(
        "signup",
        steps,
        state_store=InMemoryWorkflowStateStore(),
        on_complete=lambda state, request: completed.append(state) or Div("done", data_step="complete"),
    )
    app = FastHTML(secret_key=SECRET_KEY)
    create_stepflow_router(flow, "/wizard").to_app(app)
    wizard, http = Wizard(app, flow, flow.state_store, "/wizard"), TestClient(app)
    a, b = Tab(wizard, http), Tab(wizard, http)
    with http:
        a.open()
        a.submit(name="Ada")
        b.open()
        b.submit(email="ada@example.com")
        assert step_of(b.submit(plan="pro")) == "gate"
        html = a.submit(email="x@example.com")
        assert _is_notice(html) and step_of(html) == "gate" and completed == []


def test_a_page_the_app_renders_itself_is_current(store):
    """A step the app renders outside the router (its own page, outside any request scope, as the demo's home page)
    carries the same version the routes compute in their scopes: submitting it is not stale, whatever the answers."""
    wizard, http, (tab, _) = _tabs(store)
    flow = wizard.flow
    with http:
        tab.open()
        tab.submit(name='Ada \u00e9\u4e2d\U0001f600 "q" \\ 1.5e300')
        sid = decode_session_cookie(http.cookies.get(wizard.app.session_cookie))[store.session_key]
        store.update_state(wizard.flow_id, sid, {"extra": {"b": [1.0, -0.0, 1e-7, None, True], "a": "x"}})

        class Request:
            pass  # (the steps' render functions read only the context's state)

        page = flow.render_step_content(
            flow.get_step("email"),
            flow.create_context(Request(), {store.session_key: sid}, flow.get_step("email")),
            next_route="/wizard/next_step",
        )
        from fasthtml.common import to_xml

        tab.html = to_xml(page)
        html = tab.submit(email="ada@example.com")
        assert not _is_notice(html) and step_of(html) == "plan", html
