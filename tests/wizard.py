"""A small FastHTML app with a StepFlow sign-up wizard on any store, driven in-process with Starlette's TestClient.

Backend-agnostic: every backend's tests can reuse it, e.g.

    wizard = make_wizard_app(open_store(url))
    with wizard.client() as wc:
        run_wizard(wc)
    assert wizard.completed == [EXPECTED_STATE]

(`tests/wizard_app.py` is the separate uvicorn-served app for multi-process tests.)
"""

import json, re
from base64 import b64decode
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import itsdangerous
from fasthtml.common import FastHTML, Div, H2, Input, Li, Option, P, Select, Ul
from starlette.testclient import TestClient
from cjm_fasthtml_interactions.patterns.step_flow import Step, StepFlow

from cjm_workflow_state.stepflow import create_stepflow_router

SECRET_KEY = "cjm-workflow-state-wizard-tests"  # Fixed signing key: the session cookie can be decoded in tests
FLOW_ID = "signup"  # Default flow id of the wizard
STEP_IDS = ("name", "email", "plan", "confirm")  # The wizard's steps, in order
PLANS = ("free", "pro")  # Accepted values of the plan step
EXPECTED_STATE = {"name": "Ada Lovelace", "email": "ada@example.com", "plan": "pro"}  # What `run_wizard` enters

_STEP_RE = re.compile(r'data-step="([^"]+)"')


def step_of(html: str) -> Optional[str]:
    """The id of the step (or "complete") a response renders, from its `data-step` attribute."""
    found = _STEP_RE.findall(html)
    return found[-1] if found else None


def _valid_name(state):
    return bool(str(state.get("name", "")).strip())


def _valid_email(state):
    return re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", str(state.get("email", ""))) is not None


def _valid_plan(state):
    return state.get("plan") in PLANS


def _field(step_id, ctx, control, valid, message):
    error = [P(message, cls="error")] if step_id in ctx.state and not valid(ctx.state) else []
    return Div(H2(step_id.title()), control, *error, data_step=step_id)


def _steps() -> List[Step]:
    return [
        Step(
            "name",
            "Name",
            data_keys=["name"],
            validate=_valid_name,
            render=lambda ctx: _field(
                "name", ctx, Input(name="name", value=ctx.state.get("name", "")), _valid_name, "Enter your name"
            ),
        ),
        Step(
            "email",
            "Email",
            data_keys=["email"],
            validate=_valid_email,
            render=lambda ctx: _field(
                "email",
                ctx,
                Input(name="email", type="email", value=ctx.state.get("email", "")),
                _valid_email,
                "Enter a valid email address",
            ),
        ),
        Step(
            "plan",
            "Plan",
            data_keys=["plan"],
            validate=_valid_plan,
            render=lambda ctx: _field(
                "plan",
                ctx,
                Select(*[Option(p, value=p, selected=ctx.state.get("plan") == p) for p in PLANS], name="plan"),
                _valid_plan,
                "Choose a plan",
            ),
        ),
        Step(
            "confirm",
            "Confirm",
            next_button_text="Sign up",
            render=lambda ctx: Div(
                H2("Confirm"),
                Ul(*[Li(f"{k}: {ctx.state.get(k)}") for k in ("name", "email", "plan")]),
                data_step="confirm",
            ),
        ),
    ]


@dataclass
class Wizard:
    """The app, its flow and router, the store, and the states `on_complete` received."""

    app: FastHTML  # The FastHTML app serving the wizard
    flow: StepFlow  # The wizard
    store: Any  # The workflow state store it uses
    prefix: str  # URL prefix of the wizard's routes
    completed: List[Dict[str, Any]] = field(default_factory=list)  # State passed to each `on_complete` call

    @property
    def flow_id(self) -> str:
        return self.flow.flow_id

    def url(self, route: str) -> str:
        """The URL of one of the wizard's routes (start, next_step, back_step, reset)."""
        return f"{self.prefix}/{route}"

    def client(self, **kw) -> "WizardClient":
        """A fresh browser: its own cookie jar, hence its own workflow session."""
        return WizardClient(self, TestClient(self.app, **kw))


def make_wizard_app(
    store,  # Any workflow state store (InMemoryWorkflowStateStore, open_store(url), ...)
    prefix: str = "/wizard",  # URL prefix of the wizard's routes
    flow_id: str = FLOW_ID,  # Flow id the wizard stores under
    clear_on_complete: bool = True,  # Forget the workflow session once on_complete has the state
) -> Wizard:
    """A FastHTML app (fixed secret key) whose 4-step StepFlow wizard keeps its state in `store`."""
    completed: List[Dict[str, Any]] = []

    def on_complete(state, request):
        completed.append(state)
        if clear_on_complete:
            flow.clear_workflow(request.session)
        return Div(P(f"Welcome, {state['name']}! You are on the {state['plan']} plan."), data_step="complete")

    flow = StepFlow(flow_id, _steps(), state_store=store, on_complete=on_complete)
    app = FastHTML(secret_key=SECRET_KEY)
    create_stepflow_router(flow, prefix).to_app(app)

    @app.get("/")
    def index():
        return Div(hx_get=f"{prefix}/start", hx_trigger="load", id=flow.container_id)

    return Wizard(app, flow, store, prefix, completed)


def decode_session_cookie(
    cookie: str,  # Value of FastHTML's signed `session_` cookie
    secret_key: str = SECRET_KEY,  # Key the app signs with
) -> Dict[str, Any]:  # The session mapping the cookie carries
    """Verify and decode a Starlette session cookie (base64 JSON signed with itsdangerous)."""
    return json.loads(b64decode(itsdangerous.TimestampSigner(secret_key).unsign(cookie, max_age=None)))


class WizardClient:
    """One user's browser on the wizard: route helpers that return the rendered HTML."""

    headers = {"HX-Request": "true"}  # StepFlow's routes answer htmx requests with the step fragment

    def __init__(self, wizard: Wizard, client: TestClient):
        self.wizard, self.http = wizard, client

    def __enter__(self):
        self.http.__enter__()
        return self

    def __exit__(self, *exc):
        return self.http.__exit__(*exc)

    def _ok(self, response) -> str:
        assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.status_code}"
        return response.text

    def start(self) -> str:
        """GET {prefix}/start: the current step (the first one for a new user)."""
        return self._ok(self.http.get(self.wizard.url("start"), headers=self.headers))

    def submit(self, **fields) -> str:
        """POST the current step's form to {prefix}/next_step."""
        return self._ok(self.http.post(self.wizard.url("next_step"), data=fields, headers=self.headers))

    def back(self) -> str:
        """GET {prefix}/back_step: the previous step."""
        return self._ok(self.http.get(self.wizard.url("back_step"), headers=self.headers))

    def reset(self) -> str:
        """GET {prefix}/reset: forget this user's workflow and show the first step."""
        return self._ok(self.http.get(self.wizard.url("reset"), headers=self.headers))

    def post_form(self, html: str, **fields) -> str:
        """Submit the form in `html` to the URL its `hx-post` names, as the browser would."""
        target = re.search(r'hx-post="([^"]+)"', html)
        assert target, "no hx-post form in the response"
        return self._ok(self.http.post(target.group(1), data=fields, headers=self.headers))

    @property
    def cookie(self) -> Optional[str]:
        """The raw signed session cookie, or None before the first write."""
        return self.http.cookies.get(self.wizard.app.session_cookie)

    @property
    def session(self) -> Dict[str, Any]:
        """The decoded session cookie ({} before the first write)."""
        return decode_session_cookie(self.cookie) if self.cookie else {}

    @property
    def session_id(self) -> Optional[str]:
        """This browser's workflow session id, as the cookie carries it."""
        return self.session.get(getattr(self.wizard.store, "session_key", "_workflow_session_id"))

    @property
    def current_step(self) -> Optional[str]:
        """The step the store holds for this browser."""
        return self.wizard.store.get_current_step(self.wizard.flow_id, self.session_id) if self.session_id else None

    @property
    def state(self) -> Dict[str, Any]:
        """The state the store holds for this browser."""
        return self.wizard.store.get_state(self.wizard.flow_id, self.session_id) if self.session_id else {}


def run_wizard(
    wc: WizardClient,  # A browser on the wizard
    **values,  # Field values overriding EXPECTED_STATE's
) -> str:  # The completion page's HTML
    """Walk a browser through every step with valid values and submit."""
    values = {**EXPECTED_STATE, **values}
    assert step_of(wc.start()) == "name"
    assert step_of(wc.submit(name=values["name"])) == "email"
    assert step_of(wc.submit(email=values["email"])) == "plan"
    assert step_of(wc.submit(plan=values["plan"])) == "confirm"
    html = wc.submit()
    assert step_of(html) == "complete", html
    return html
