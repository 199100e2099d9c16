"""The demo app in a real browser: fill two steps, kill the server, start it again, reload, finish.

Debian's chromium driven by Playwright (`pip install playwright`; `apt-get install chromium`; never
`playwright install`). Outside CI the test skips when either is missing; in CI (CI=true) it fails.
Screenshots of every step go to $DEMO_ARTIFACTS_DIR (default: artifacts/demo-browser/ in the repo).
"""

import os, shutil, socket, subprocess, sys, time
from datetime import date, timedelta
from pathlib import Path

import pytest

from servers import in_ci

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("DEMO_ARTIFACTS_DIR") or Path(__file__).resolve().parent.parent / "artifacts" / "demo-browser"
)
IN_CI = in_ci()


def _require_browser():
    "Skip (outside CI) or fail (in CI) with the reason when playwright or chromium is missing."
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package is not installed (pip install playwright)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        reason = "browser test needs " + "; ".join(missing)
        if IN_CI:
            pytest.fail(reason + " -- CI must install both")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoServer:
    "`python -m cjm_workflow_state.demo` as a subprocess, in `workdir` (which also holds its cookie key)."

    def __init__(self, workdir: Path, store_url: str, port: int):
        self.workdir, self.store_url, self.port, self.proc = workdir, store_url, port, None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 30):
        log = open(self.workdir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cjm_workflow_state.demo", "--store", self.store_url, "--port", str(self.port)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"demo server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise AssertionError(f"demo server did not listen on port {self.port} within {timeout}s:\n{self.log()}")

    def kill(self):
        "SIGKILL: no clean shutdown, so what survives is what the store had committed."
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")


@pytest.fixture
def browser_page():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 860})
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def test_wizard_survives_restart_and_sessions_page(browser_page, tmp_path):
    page = browser_page
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    shots = iter(range(1, 100))

    def shot(name):
        page.screenshot(path=str(ARTIFACTS / f"{next(shots):02d}-{name}.png"), full_page=True)

    db = tmp_path / "demo.db"
    server = DemoServer(tmp_path, f"sqlite:///{db}", _free_port()).start()
    try:
        # Step 1, first with a bad email: the step comes back with a message, nothing moves on.
        page.goto(server.url + "/")
        page.wait_for_selector("[data-step=contact]")
        assert page.locator("script[src='/static/htmx.min.js']").count() == 1
        shot("contact")
        page.fill("#field-name", "Ada Lovelace")
        page.fill("#field-email", "ada@")
        page.click("#step-flow-next-btn")
        page.wait_for_selector("#field-email-error")
        assert "name@example.com" in page.inner_text("#field-email-error")
        shot("contact-invalid")
        page.fill("#field-email", "ada@example.com")
        page.fill("#field-company", "Analytical Engines")
        page.click("#step-flow-next-btn")

        # Step 2, first with a description too long to store: the step comes back with an alert, nothing is saved.
        page.wait_for_selector("[data-step=project]")
        page.fill("#field-project_title", "Engine dashboard")
        page.select_option("#field-project_kind", "Data pipeline")
        page.fill("#field-description", "x" * 70_000)  # over the demo's 64 KB per session
        page.click("#step-flow-next-btn")
        page.wait_for_selector(".wfs-error[role=alert]")
        assert "too long" in page.inner_text(".wfs-error") and page.locator("[data-step=project]").count() == 1
        shot("project-too-long")
        page.fill("#field-project_title", "Engine dashboard")
        page.select_option("#field-project_kind", "Data pipeline")
        page.fill("#field-description", "A dashboard for the difference engine's operators.")
        shot("project")
        page.click("#step-flow-next-btn")
        page.wait_for_selector("[data-step=budget]")
        shot("budget-before-restart")

        # Kill the server (no clean shutdown), start it again on the same database, reload.
        server.kill()
        server.start()
        page.reload()
        page.wait_for_selector("[data-step=budget]")
        so_far = page.inner_text("#so-far")
        assert "Ada Lovelace" in so_far and "ada@example.com" in so_far and "Engine dashboard" in so_far
        shot("budget-after-restart")

        # The earlier answers are in the store: Back shows step 2 filled in.
        page.click("#step-flow-back-btn")
        page.wait_for_selector("[data-step=project]")
        assert page.input_value("#field-project_title") == "Engine dashboard"
        assert page.input_value("#field-project_kind") == "Data pipeline"
        page.click("#step-flow-next-btn")
        page.wait_for_selector("[data-step=budget]")

        # The store cannot write (another process holds SQLite's write lock past the store's busy_timeout): Next
        # answers 503, and the page shows its message (htmx_config swaps it in). Once the lock is gone, a reload
        # finds the wizard where it was, nothing lost.
        import sqlite3

        lock = sqlite3.connect(db, timeout=1, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            page.check("input[name=budget][value='$5k to $20k']")  # (answers to write: the commit meets the lock)
            page.fill("#field-deadline", (date.today() + timedelta(days=120)).isoformat())
            page.check("input[name=priority][value='Firm deadline']")
            statuses = []
            page.on("response", lambda response: statuses.append(response.status))
            page.click("#step-flow-next-btn")
            page.wait_for_selector(".wfs-unavailable[role=alert]", timeout=30_000)  # (after busy_timeout, 5 s)
            assert 503 in statuses, statuses
            assert "unavailable for a moment" in page.inner_text(".wfs-unavailable")
            shot("store-unavailable")
        finally:
            lock.rollback()
            lock.close()
        page.reload()
        page.wait_for_selector("[data-step=budget]")
        assert "Engine dashboard" in page.inner_text("#so-far")

        # Step 3, then the review, which refuses to send without the confirmation box.
        page.check("input[name=budget][value='$5k to $20k']")
        page.fill("#field-deadline", (date.today() + timedelta(days=120)).isoformat())
        page.check("input[name=priority][value='Firm deadline']")
        page.click("#step-flow-next-btn")
        page.wait_for_selector("[data-step=review]")
        review = page.inner_text(".review")
        assert "Analytical Engines" in review and "Data pipeline" in review and "$5k to $20k" in review
        shot("review")
        page.click("#step-flow-submit-btn")
        page.wait_for_selector("#field-consent-error")
        page.check("#field-consent")
        page.click("#step-flow-submit-btn")
        page.wait_for_selector("#confirmation")
        reference = page.inner_text("#confirmation .reference")
        assert reference.startswith("PR-")
        shot("confirmation")

        # The sessions page lists it; rename it.
        page.goto(server.url + "/sessions")
        row = page.locator("#sessions tbody tr")
        assert row.count() == 1
        text = row.inner_text()
        assert "Engine dashboard" in text and "Submitted" in text and reference in text and "current" in text
        shot("sessions")
        row.locator("summary", has_text="Rename").click()
        row.locator("input[name=label]").fill("Difference engine dashboard")
        shot("rename")
        row.locator("button", has_text="Save").click()
        page.wait_for_selector("#sessions tbody tr >> text=Difference engine dashboard")
        shot("renamed")

        # A second request, left at step 1: the list shows both, newest first.
        page.click("#new-request")
        page.wait_for_selector("[data-step=contact]")
        page.fill("#field-name", "Charles Babbage")
        page.fill("#field-email", "charles@example.com")
        page.click("#step-flow-next-btn")
        page.wait_for_selector("[data-step=project]")
        page.goto(server.url + "/sessions")
        rows = page.locator("#sessions tbody tr")
        assert rows.count() == 2
        assert "Charles Babbage" in rows.nth(0).inner_text() and "Step 2 of 4" in rows.nth(0).inner_text()
        shot("two-sessions")

        # Resume the first one: its confirmation comes back.
        rows.nth(1).locator("button", has_text="Open").click()
        page.wait_for_selector("#confirmation")
        assert page.inner_text("#confirmation .reference") == reference

        # Delete it (accepting the confirm dialog): one row is left.
        page.goto(server.url + "/sessions")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#sessions tbody tr", has_text="Difference engine dashboard").locator(
            "button", has_text="Delete"
        ).click()
        page.wait_for_function("document.querySelectorAll('#sessions tbody tr').length === 1")
        assert "Difference engine dashboard" not in page.inner_text("#sessions")
        shot("deleted")
    except BaseException:
        try:
            shot("failure")
        except Exception:
            pass
        print(server.log())
        raise
    finally:
        server.kill()

    # What the browser saw is what the database holds.
    from cjm_workflow_state import open_store

    with open_store(f"sqlite:///{db}") as store:
        sessions = store.list_sessions("project_request")
        assert [s.label for s in sessions] == [None]
        assert store.get_state("project_request", sessions[0].session_id)["name"] == "Charles Babbage"


def test_a_stale_tab_never_completes_the_wizard(browser_page, tmp_path):
    """Two tabs of one browser (one cookie session): tab B moves the wizard on; tab A's older page, submitted with
    other answers, writes nothing and shows where the wizard is, with a notice."""
    context = browser_page.context.browser.new_context(viewport={"width": 1100, "height": 860})  # one cookie jar
    tab_a, tab_b = context.new_page(), context.new_page()
    for tab in (tab_a, tab_b):
        tab.set_default_timeout(15_000)
    db = tmp_path / "demo.db"
    server = DemoServer(tmp_path, f"sqlite:///{db}", _free_port()).start()
    try:
        tab_a.goto(server.url + "/")
        tab_a.wait_for_selector("[data-step=contact]")
        tab_a.fill("#field-name", "Ada Lovelace")
        tab_a.fill("#field-email", "ada@example.com")
        tab_a.click("#step-flow-next-btn")
        tab_a.wait_for_selector("[data-step=project]")

        tab_b.goto(server.url + "/")  # the same wizard, in a second tab
        tab_b.wait_for_selector("[data-step=project]")
        tab_b.fill("#field-project_title", "Engine dashboard")
        tab_b.select_option("#field-project_kind", "Data pipeline")
        tab_b.fill("#field-description", "A dashboard for the difference engine's operators.")
        tab_b.click("#step-flow-next-btn")
        tab_b.wait_for_selector("[data-step=budget]")

        # Tab A still shows the project step: its submit is out of date.
        tab_a.fill("#field-project_title", "Stale title")
        tab_a.select_option("#field-project_kind", "Website")
        tab_a.fill("#field-description", "Typed in the old tab.")
        tab_a.click("#step-flow-next-btn")
        tab_a.wait_for_selector(".wfs-stale")
        assert "out of date" in tab_a.inner_text(".wfs-stale")
        assert tab_a.locator("[data-step=budget]").count() == 1 and tab_a.locator("[data-step=project]").count() == 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab_a.screenshot(path=str(ARTIFACTS / "stale-tab.png"), full_page=True)

        # Back in tab B, Back then Next from tab A's (now current) budget page: both tabs agree again.
        tab_a.click("#step-flow-back-btn")
        tab_a.wait_for_selector("[data-step=project]")
        assert tab_a.input_value("#field-project_title") == "Engine dashboard"  # tab B's answer, kept
        tab_b.click("#step-flow-next-btn")  # tab B's budget page: out of date now (tab A went back)
        tab_b.wait_for_selector(".wfs-stale")
        assert tab_b.locator("[data-step=project]").count() == 1
    except BaseException:
        print(server.log())
        raise
    finally:
        server.kill()

    from cjm_workflow_state import open_store

    with open_store(f"sqlite:///{db}") as store:
        (summary,) = store.list_sessions("project_request")
        state = store.get_state("project_request", summary.session_id)
        assert (state["project_title"], state["project_kind"], summary.current_step) == (
            "Engine dashboard",
            "Data pipeline",
            "project",
        )


def _fill_contact(page, name="Ada Lovelace", email="ada@example.com"):
    page.wait_for_selector("[data-step=contact]")
    page.fill("#field-name", name)
    page.fill("#field-email", email)
    page.click("#step-flow-next-btn")
    page.wait_for_selector("[data-step=project]")


def _overflow(page) -> int:
    "How many CSS pixels the page is wider than the viewport (0: no horizontal scrolling)."
    return page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - window.innerWidth"
    )


def test_phone_width_sessions_page_fits(browser_page, tmp_path):
    """Issue 12: at 390 px the saved-requests table fits the screen (no horizontal scrolling of the page or of the
    table), its buttons and the rename box are on screen; the page has an icon (no request 404s)."""
    page = browser_page.context.browser.new_page(viewport={"width": 390, "height": 844})
    page.set_default_timeout(15_000)
    missing = []
    page.on("response", lambda response: missing.append(response.url) if response.status == 404 else None)
    server = DemoServer(tmp_path, f"sqlite:///{tmp_path / 'demo.db'}", _free_port()).start()
    try:
        page.goto(server.url + "/")
        _fill_contact(page, "Ada Augusta King, Countess of Lovelace", "ada.lovelace@analytical-engines.example.com")
        page.fill("#field-project_title", "Dashboard for the difference engine's operators and maintainers")
        page.select_option("#field-project_kind", "Data pipeline")
        page.fill("#field-description", "A dashboard for the difference engine's operators.")
        page.click("#step-flow-next-btn")
        page.wait_for_selector("[data-step=budget]")
        assert _overflow(page) <= 0, "the wizard is wider than the screen"
        page.click("#new-request")
        _fill_contact(page, "Charles Babbage", "charles@example.com")
        page.goto(server.url + "/sessions")
        page.wait_for_selector("#sessions")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "sessions-390px.png"), full_page=True)
        assert _overflow(page) <= 0, f"the page scrolls sideways by {_overflow(page)} px"
        assert (
            page.evaluate(
                "(() => { const w = document.querySelector('#sessions').parentElement;"
                " return w.scrollWidth - w.clientWidth; })()"
            )
            <= 0
        ), "the table scrolls inside its box"
        rows = page.locator("#sessions tbody tr")
        assert rows.count() == 2
        for i in range(2):
            for button in ("Resume", "Rename", "Delete"):
                box = rows.nth(i).locator(".btn", has_text=button).bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (i, button, box)
        rows.nth(0).locator("summary", has_text="Rename").click()
        form = rows.nth(0).locator(".rename form")
        form.wait_for()
        box = form.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        assert _overflow(page) <= 0, "the rename box widens the page"
        page.screenshot(path=str(ARTIFACTS / "sessions-390px-rename.png"), full_page=True)
        assert not missing, missing
    except BaseException:
        print(server.log())
        raise
    finally:
        server.kill()
        page.close()


def test_cancel_asks_first(browser_page, tmp_path):
    "Issue 12: Cancel asks before wiping the answers; dismissed, nothing changes; accepted, the request starts over."
    page = browser_page
    db = tmp_path / "demo.db"
    server = DemoServer(tmp_path, f"sqlite:///{db}", _free_port()).start()
    asked = []
    try:
        page.goto(server.url + "/")
        _fill_contact(page)

        def answer(accept):
            def handle(dialog):
                asked.append((dialog.type, dialog.message))
                dialog.accept() if accept else dialog.dismiss()

            page.once("dialog", handle)

        answer(False)
        page.click("#step-flow-cancel-btn")
        page.wait_for_timeout(500)  # (a request, if one were sent, has its answer by now)
        assert len(asked) == 1 and asked[0][0] == "confirm", asked
        assert page.locator("[data-step=project]").count() == 1 and "Ada Lovelace" in page.inner_text("#so-far")
        page.reload()  # the store still has the answers
        page.wait_for_selector("[data-step=project]")
        assert "Ada Lovelace" in page.inner_text("#so-far")

        answer(True)
        page.click("#step-flow-cancel-btn")
        page.wait_for_selector("[data-step=contact]")
        assert len(asked) == 2 and asked[1][0] == "confirm", asked
        assert page.input_value("#field-name") == ""
    except BaseException:
        print(server.log())
        raise
    finally:
        server.kill()
    from cjm_workflow_state import open_store

    with open_store(f"sqlite:///{db}") as store:
        for s in store.list_sessions("project_request"):
            assert "name" not in store.get_state("project_request", s.session_id)
