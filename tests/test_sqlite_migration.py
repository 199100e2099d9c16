"""Migrating a 0.0.3 file whose keys hold ids the current rules refuse (issue 9 item 10): over 256 characters, a
newline or other control characters, no `:` (so no session id), an empty flow id. Such a session is moved to a valid,
deterministic id (its original 0.0.3 key is kept in its state under `_legacy_key`, and the warning of the migration
lists each move); labels and steps the rules refuse are kept in the state too. Afterwards every session can be
read, exported, imported elsewhere and deleted, and the valid rows are migrated exactly as before."""

import contextlib, json, shutil, sqlite3, warnings


from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore
from cjm_workflow_state.core.base import is_valid_id
from cjm_workflow_state.core.state_store import InMemoryWorkflowStateStore

LONG = "x" * 300
ROWS = [  # flow_session_key, current_step, state_json, created_at, updated_at, label
    ("signup:ok", "details", json.dumps({"name": "Alice"}), "2026-03-01 09:15:00", "2026-03-01 09:20:30", "Alice"),
    (f"signup:{LONG}", "details", json.dumps({"n": 1}), "2026-03-01 10:00:00", "2026-03-01 10:00:00", "long"),
    ("signup:line\nbreak", None, json.dumps({"n": 2}), "2026-03-01 10:00:00", "2026-03-01 10:00:01", None),
    ("signup:tab\there\x7f", None, json.dumps({"n": 3}), "2026-03-01 10:00:00", "2026-03-01 10:00:02", None),
    ("nocolon", None, json.dumps({"n": 4}), "2026-03-01 10:00:00", "2026-03-01 10:00:03", None),
    (":emptyflow", None, json.dumps({"n": 5}), "2026-03-01 10:00:00", "2026-03-01 10:00:04", None),
    (f"{'F' * 300}:s", None, json.dumps({"n": 6}), "2026-03-01 10:00:00", "2026-03-01 10:00:05", None),
    (
        "signup:badlabel",
        "step\x1b[31m",
        json.dumps({"n": 7}),
        "2026-03-01 10:00:00",
        "2026-03-01 10:00:06",
        "two\nlines\x07" + "y" * 2000,
    ),
]


def make_v003(path):
    "A database as cjm-workflow-state 0.0.3 wrote it."
    with contextlib.closing(sqlite3.connect(path)) as c:
        c.execute("""CREATE TABLE workflow_state (flow_session_key TEXT PRIMARY KEY, current_step TEXT,
                     state_json TEXT DEFAULT '{}', created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                     updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, label TEXT)""")
        c.execute("CREATE INDEX idx_workflow_state_updated ON workflow_state(updated_at)")
        c.executemany("INSERT INTO workflow_state VALUES (?, ?, ?, ?, ?, ?)", ROWS)
        c.commit()


def open_migrated(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = SQLiteWorkflowStateStore(path)
    return store, "\n".join(str(w.message) for w in caught)


def test_invalid_legacy_ids_are_migrated_to_valid_ones(tmp_path):
    make_v003(tmp_path / "v003.db")
    shutil.copy(tmp_path / "v003.db", tmp_path / "copy.db")
    store, report = open_migrated(tmp_path / "v003.db")
    with store:
        exported = list(store.export_sessions())  # the whole store exports (it raised before)
        assert len(exported) == len(ROWS)
        by_key = {}
        for record in exported:
            assert is_valid_id(record["flow_id"]) and is_valid_id(record["session_id"]), record
            key = record["state"].get("_legacy_key", f"{record['flow_id']}:{record['session_id']}")
            by_key[key] = record
        assert sorted(by_key) == sorted(row[0] for row in ROWS)  # every 0.0.3 key, each once, reversibly
        ok = by_key["signup:ok"]  # a valid row migrates exactly as before
        assert (ok["flow_id"], ok["session_id"], ok["label"], ok["current_step"], ok["state"]) == (
            "signup",
            "ok",
            "Alice",
            "details",
            {"name": "Alice"},
        )
        for key, step, state, _, _, label in ROWS[1:-1]:
            record = by_key[key]
            assert {k: v for k, v in record["state"].items() if k != "_legacy_key"} == json.loads(state)
            assert (record["label"], record["current_step"]) == (label, step)
            assert repr(key)[:40] in report and record["session_id"] in report, report  # the report lists the move
        assert by_key[f"signup:{LONG}"]["flow_id"] == "signup"  # a valid flow part keeps its flow
        bad = by_key["signup:badlabel"]  # valid ids, but a label and a step the rules refuse
        assert (bad["flow_id"], bad["session_id"], bad["current_step"]) == ("signup", "badlabel", None)
        assert bad["state"]["_legacy_label"] == ROWS[-1][5] and bad["state"]["_legacy_current_step"] == ROWS[-1][1]
        assert bad["label"] == "two lines " + "y" * 1014
        # every session can be read, listed and deleted through the API
        for record in exported:
            flow, sid = record["flow_id"], record["session_id"]
            assert store.get_state(flow, sid) == record["state"]
            assert sid in [s.session_id for s in store.list_sessions(flow)]
        imported = InMemoryWorkflowStateStore()  # and imported elsewhere
        for record in exported:
            imported.restore_session(
                record["flow_id"],
                record["session_id"],
                record["state"],
                record["current_step"],
                record["label"],
                record["created_ts"],
                record["updated_ts"],
            )
        assert sorted(imported.export_sessions(), key=repr) == sorted(exported, key=repr)
        for record in exported:
            assert store.delete_session(record["flow_id"], record["session_id"]) is True
        assert store.list_flows() == []
    # the new ids are deterministic: migrating another copy gives the same ones
    again, _ = open_migrated(tmp_path / "copy.db")
    with again:
        assert sorted((r["flow_id"], r["session_id"]) for r in again.export_sessions()) == sorted(
            (r["flow_id"], r["session_id"]) for r in exported
        )


def test_a_new_id_never_replaces_another_session(tmp_path):
    """A moved session's new id already taken by a valid 0.0.3 key (however unlikely, it is the key's hash): both
    sessions are kept, the moved one under another deterministic id; nothing is silently replaced."""
    from cjm_workflow_state.backends.sqlite import _legacy_ids

    flow, taken, _ = _legacy_ids("signup")  # no ':': no session id, so it moves to ("signup", "legacy-<hash>")
    assert flow == "signup" and taken.startswith("legacy-")
    rows = [
        ("signup", None, json.dumps({"n": 1}), "2026-03-01 10:00:00", "2026-03-01 10:00:00", None),
        (f"signup:{taken}", None, json.dumps({"n": 2}), "2026-03-01 10:00:00", "2026-03-01 10:00:01", None),
    ]
    for order in (rows, rows[::-1]):  # whichever 0.0.3 row SQLite reads first
        path = tmp_path / f"collide{len(list(tmp_path.iterdir()))}.db"
        with contextlib.closing(sqlite3.connect(path)) as c:
            c.execute(
                "CREATE TABLE workflow_state (flow_session_key TEXT PRIMARY KEY, current_step TEXT, "
                "state_json TEXT, created_at TIMESTAMP, updated_at TIMESTAMP, label TEXT)"
            )
            c.executemany("INSERT INTO workflow_state VALUES (?, ?, ?, ?, ?, ?)", order)
            c.commit()
        copy = shutil.copy(path, tmp_path / f"copy-{path.name}")
        store, report = open_migrated(path)
        with store:
            exported = {r["session_id"]: r["state"] for r in store.export_sessions()}
            assert exported[taken] == {"n": 2}, exported  # the valid key keeps its id
            moved = [sid for sid in exported if sid != taken]
            assert len(exported) == 2 and exported[moved[0]] == {"n": 1, "_legacy_key": "signup"}, exported
            assert is_valid_id(moved[0]) and moved[0] in report, report
        again, _ = open_migrated(copy)  # deterministic: another copy of the file migrates to the same ids
        with again:
            assert sorted(r["session_id"] for r in again.export_sessions()) == sorted(exported)
