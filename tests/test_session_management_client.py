"""cjm-fasthtml-workflow-session-management (written for cjm-workflow-state 0.0.3) runs unchanged on our SQLite store.

It needs Python 3.12 and pins the published cjm-workflow-state, which shares our import name, so it is installed
without its dependencies, then its other requirements:

    pip install --no-deps cjm-fasthtml-workflow-session-management==0.0.15
    pip install "cjm-fasthtml-app-core>=0.0.21" "cjm-fasthtml-daisyui>=0.0.15" "cjm-fasthtml-tailwind>=0.0.44" \\
        "cjm-fasthtml-lucide-icons>=0.0.1" "cjm-fasthtml-virtual-collection>=0.0.27" \\
        "cjm-fasthtml-keyboard-navigation>=0.0.27" "cjm-fasthtml-viewport-fit>=0.0.16" \\
        "cjm-fasthtml-interactions>=0.0.38" "cjm_fasthtml_design_system>=0.0.13"

Outside CI the test is skipped when the package is missing; with CI=true it fails instead.
"""

import sys, time
from datetime import datetime, timezone

import pytest

from servers import in_ci

if sys.version_info < (3, 12):
    pytest.skip("cjm-fasthtml-workflow-session-management requires Python 3.12", allow_module_level=True)
try:
    from cjm_fasthtml_workflow_session_management.services.management import SessionManagementService
    from cjm_fasthtml_workflow_session_management.utils import default_label, parse_sqlite_timestamp
    from cjm_fasthtml_workflow_session_management.components.session_list import render_session_list  # noqa: F401 (its UI imports too)
except ImportError as e:
    if in_ci():
        raise
    pytest.skip(
        f"cjm-fasthtml-workflow-session-management is not installed ({e}); see this file's docstring",
        allow_module_level=True,
    )

from cjm_workflow_state.state_store import SQLiteWorkflowStateStore, SessionSummary  # the import path it uses


@pytest.fixture
def store(tmp_path):
    store = SQLiteWorkflowStateStore(tmp_path / "workflow_state.db")
    yield store
    store.close()


def enricher(state):  # host callback: display fields from a session's state
    return {"files": len(state.get("files", [])), "model": state.get("model", "—")}


def label_generator(summary, state):  # host callback: a label for sessions that have none
    return f"{state['files'][0]} ({summary.current_step})" if state.get("files") else None


def test_lifecycle(store):
    service = SessionManagementService(store, "transcription", enricher=enricher, label_generator=label_generator)
    assert service.flow_id == "transcription"
    assert service.list_sessions() == []

    first = service.create_session(label="Interview")
    time.sleep(0.002)  # distinct timestamps, well below the one-second resolution of the time strings
    second = service.create_session()
    assert service.session_exists(first) and service.session_exists(second)
    assert not service.session_exists("no-such-session")
    assert service.get_session("no-such-session") is None

    # the wizard writes its state through the same store, with a plain session-id string or a cookie session
    store.update_state("transcription", second, {"files": ["talk.wav", "q&a.wav"], "model": "large"})
    store.set_current_step("transcription", {"_workflow_session_id": second}, "review")

    listed = service.list_sessions()  # most recently updated first
    assert [e.summary.session_id for e in listed] == [second, first]
    assert all(isinstance(e.summary, SessionSummary) for e in listed)
    by_id = {e.summary.session_id: e for e in listed}
    assert by_id[first].resolved_label == "Interview"  # stored label
    assert by_id[second].resolved_label == "talk.wav (review)"  # from label_generator
    assert by_id[second].enriched_fields == {"files": "2", "model": "large"}
    assert by_id[first].enriched_fields == {"files": "0", "model": "—"}
    assert by_id[second].summary.state_size_bytes == len('{"files":["talk.wav","q&a.wav"],"model":"large"}')

    # its time helpers parse our summaries' 0.0.3-format UTC strings
    created = parse_sqlite_timestamp(by_id[first].summary.created_at)
    assert created is not None and abs(created.timestamp() - by_id[first].summary.created_ts) < 1
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 60

    assert [e.summary.session_id for e in service.list_sessions(order_by="created_at", descending=False)] == [
        first,
        second,
    ]
    assert [e.resolved_label for e in service.list_sessions(order_by="label", descending=False)] == [
        "talk.wav (review)",
        "Interview",
    ]

    service.rename_session(second, "Talk")
    assert service.get_session(second).resolved_label == "Talk"
    assert store.get_state("transcription", second)["model"] == "large"  # renaming keeps the state
    service.rename_session(second, None)
    assert service.get_session(second).resolved_label == "talk.wav (review)"
    service.rename_session("no-such-session", "x")  # a no-op, as in 0.0.3
    assert not service.session_exists("no-such-session")

    service.delete_session(first)
    service.delete_session(first)  # idempotent
    assert not service.session_exists(first)
    assert [e.summary.session_id for e in service.list_sessions()] == [second]


def test_default_label_and_failing_callbacks(store):
    "Without a label or a generator the label comes from created_at; callbacks that raise are ignored."

    def broken(*args):
        raise RuntimeError("host bug")

    service = SessionManagementService(store, "flow", enricher=broken, label_generator=broken)
    sid = service.create_session()
    (entry,) = service.list_sessions()
    assert entry.resolved_label == default_label(entry.summary.created_at) != "Untitled Session"
    assert entry.enriched_fields == {}
    plain = SessionManagementService(store, "flow")
    assert plain.get_session(sid).resolved_label.startswith("Session ")


def test_flows_are_separate(store):
    "Two services on one store, one per flow, see only their own flow (even with ':' in the ids)."
    a, b = SessionManagementService(store, "a"), SessionManagementService(store, "a:b")
    sid = a.create_session(label="in a")
    b.create_session(label="in a:b")
    store.create_session("a", "b:" + sid, label="colon")
    assert sorted(e.resolved_label for e in a.list_sessions()) == ["colon", "in a"]
    assert [e.resolved_label for e in b.list_sessions()] == ["in a:b"]
    a.delete_session(sid)
    assert [e.resolved_label for e in b.list_sessions()] == ["in a:b"]


def test_opens_a_0_0_3_database(tmp_path):
    "A database written by 0.0.3 (its schema, built with sqlite3) is listed by the service after the migration."
    import json, sqlite3

    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.execute("""CREATE TABLE workflow_state (flow_session_key TEXT PRIMARY KEY, current_step TEXT,
                        state_json TEXT DEFAULT '{}', created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                        updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, label TEXT)""")
        conn.execute(
            "INSERT INTO workflow_state VALUES ('transcription:s1', 'review', ?, '2026-04-08 19:11:50', "
            "'2026-04-08 19:12:00', NULL)",
            (json.dumps({"files": ["old.wav"]}),),
        )
    conn.close()
    with SQLiteWorkflowStateStore(path) as store:
        (entry,) = SessionManagementService(store, "transcription", label_generator=label_generator).list_sessions()
        assert (entry.summary.session_id, entry.resolved_label) == ("s1", "old.wav (review)")
        assert entry.summary.created_at == "2026-04-08 19:11:50"
