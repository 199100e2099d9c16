"""SQLite-specific edges of issue 9: keyset paging (`_list` by session id after an id, item 4), the ttl bounds in
millisecond arithmetic (item 11), lone surrogates anywhere (item 12), deeply nested states stored before the depth
limit (item 13), and `_set_fields` under each rule with both fields (issue 10)."""

import sys

import pytest

from cjm_workflow_state.backends.sqlite import _READS, SQLiteWorkflowStateStore

IDS = ["b", "a", "A", "a:b", "a%", "a_", "é", "z", "Z", "\U0001f600", "\uffff", "0", "日本", "a b", "ab"]


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    s = SQLiteWorkflowStateStore(":memory:" if request.param == "memory" else tmp_path / "edges.db")
    yield s
    s.close()


# ---- item 4: keyset pages ----------------------------------------------------------------------------------------
def page_after(store, flow, last, limit, cutoff=None):
    "The keyset page of export_sessions: up to `limit` sessions whose id sorts after `last`, in session id order."
    return store._list(flow, cutoff, "session_id", False, limit, 0, last)


def test_list_after_pages_in_code_point_order(store):
    for sid in IDS:
        store.update_state("flow", sid, {"sid": sid})
    store.update_state("other", "a", {"x": 1})  # another flow is never listed
    ordered = sorted(IDS)  # Python compares str by code point
    assert [s.session_id for s in page_after(store, "flow", None, 100)] == ordered
    for limit in (1, 2, 4, 7):
        seen, last = [], None
        while True:
            page = page_after(store, "flow", last, limit)
            assert len(page) <= limit
            seen += [s.session_id for s in page]
            if len(page) < limit:
                break
            last = page[-1].session_id
        assert seen == ordered
    assert [s.session_id for s in page_after(store, "flow", "a_", 3)] == ordered[ordered.index("a_") + 1 :][:3]
    assert [s.session_id for s in page_after(store, "flow", "ab1", 100)] == [i for i in ordered if i > "ab1"]
    assert page_after(store, "flow", "\U0001f600", 5) == []
    first = page_after(store, "flow", None, 1)[0]
    assert first == store.get_session_summary("flow", first.session_id)  # full summaries


def test_list_after_skips_expired_sessions():
    clock = [1_000_000.0]
    store = SQLiteWorkflowStateStore(":memory:", ttl=60)
    store.clock = lambda: clock[0]
    for sid in ("a", "b", "c", "d"):
        store.update_state("flow", sid, {"k": 1})
    clock[0] += 30
    store.update_state("flow", "b", {"k": 2})
    store.update_state("flow", "d", {"k": 2})
    clock[0] += 40  # a and c expired
    cutoff = clock[0] - 60  # the base's cutoff
    assert [s.session_id for s in page_after(store, "flow", None, 10, cutoff)] == ["b", "d"]
    assert [s.session_id for s in page_after(store, "flow", "b", 10, cutoff)] == ["d"]
    assert [s.session_id for s in page_after(store, "flow", "b", 10)] == ["c", "d"]  # no cutoff: every stored row


def test_list_after_uses_the_primary_key(store):
    "One b-tree range scan in key order: no sort, no scan of other flows."
    for sid in IDS:
        store.update_state("flow", sid, {"k": 1})
    for live, params in ((False, ("flow", "", 3, 0)), (True, ("flow", "", 0.0, 3, 0))):
        sql = _READS[live]["list", "session_id", False]
        plan = " ".join(row[-1] for row in store._cx()[0].execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, plan


# ---- _set_fields: every combination of fields and rules (the base uses three) -------------------------------------
@pytest.mark.parametrize("ttl", [None, 60])
def test_set_fields_sets_both_fields_under_each_rule(ttl):
    clock = [1_000_000.0]
    store = SQLiteWorkflowStateStore(":memory:", ttl=ttl)
    store.clock = lambda: clock[0]
    cutoff = lambda: None if ttl is None else clock[0] - ttl
    fields = lambda s: (s.current_step, s.label)
    assert store._set_fields("f", "s", {"step": "one", "label": "L"}, "live", cutoff()) is False
    assert store.get_session_summary("f", "s") is None  # nothing written
    assert store._set_fields("f", "s", {"label": "L", "step": "one"}, "absent", cutoff()) is True
    assert fields(store.get_session_summary("f", "s")) == ("one", "L")
    assert store._set_fields("f", "s", {"step": "two", "label": "M"}, "absent", cutoff()) is False  # live: kept
    clock[0] += 1
    assert store._set_fields("f", "s", {"label": "M", "step": "two"}, "live", cutoff()) is True
    s = store.get_session_summary("f", "s")
    assert (fields(s), s.created_ts, s.updated_ts) == (("two", "M"), 1_000_000.0, clock[0])
    store.update_state("f", "s", {"k": 1})
    assert store._set_fields("f", "s", {"step": "three", "label": None}, "any", cutoff()) is True
    assert (fields(store.get_session_summary("f", "s")), store.get_state("f", "s")) == (("three", None), {"k": 1})
    if ttl is None:
        return
    clock[0] += 61  # expired: "any" and "absent" start it afresh, "live" writes nothing
    assert store._set_fields("f", "s", {"label": "N"}, "live", cutoff()) is False
    assert store._set_fields("f", "s", {"label": "N"}, "any", cutoff()) is True
    s = store.get_session_summary("f", "s")
    assert (fields(s), s.created_ts, store.get_state("f", "s")) == ((None, "N"), clock[0], {})
    clock[0] += 61
    assert store._set_fields("f", "s", {"step": "x", "label": "O"}, "absent", cutoff()) is True
    s = store.get_session_summary("f", "s")
    assert (fields(s), s.created_ts, store.get_state("f", "s")) == (("x", "O"), clock[0], {})


# ---- item 11: ttl bounds ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ttl", [1e10, 0.001])
def test_extreme_ttls_work_on_every_call(ttl):
    clock = [1_000_000.0]
    store = SQLiteWorkflowStateStore(":memory:", ttl=ttl)
    store.clock = lambda: clock[0]
    store.create_session("flow", "s", label="L")
    store.set_current_step("flow", "s", "one")
    store.update_state("flow", "s", {"k": 1})
    store.update_step_state("flow", "s", "one", {"x": 1})
    assert store.get_state("flow", "s") == {"k": 1, "_step_one": {"x": 1}}
    for order in ("updated_at", "created_at", "label"):
        for descending in (True, False):
            assert [s.session_id for s in store.list_sessions("flow", order, descending)] == ["s"]
    assert store.list_flows() == ["flow"]
    assert [r["session_id"] for r in store.export_sessions()] == ["s"]
    assert store.purge_expired() == 0
    assert store.rekey_session("s", "t") == 1
    clock[0] += ttl / 2
    assert store.get_current_step("flow", "t") == "one"
    clock[0] += ttl  # now expired
    assert store.list_sessions("flow") == [] and store.list_flows() == [] and store.get_state("flow", "t") == {}
    assert store.purge_expired() == 1


@pytest.mark.parametrize("ttl", [float("inf"), 1e16, float("nan"), 0.0005])
def test_out_of_range_ttl_refused_at_construction(ttl):
    with pytest.raises(ValueError):
        SQLiteWorkflowStateStore(":memory:", ttl=ttl)


# ---- item 12: lone surrogates -------------------------------------------------------------------------------------
def test_lone_surrogates_never_reach_sqlite_as_text(store):
    "Each is refused by validation (ValueError/TypeError) or stored escaped; never UnicodeEncodeError."
    bad = "a\ud800b"
    store.update_state("flow", "s", {"k": 1})
    calls = {
        "flow_id": lambda: store.update_state(bad, "s", {"k": 1}),
        "session_id": lambda: store.update_state("flow", bad, {"k": 1}),
        "step_id": lambda: store.set_current_step("flow", "s", bad),
        "step state": lambda: store.update_step_state("flow", "s", bad, {"k": 1}),
        "create label": lambda: store.create_session("flow", "new", label=bad),
        "set label": lambda: store.set_session_label("flow", "s", bad),
        "restore label": lambda: store.restore_session("flow", "r", {}, label=bad),
        "restore step": lambda: store.restore_session("flow", "r", {}, current_step=bad),
        "rekey": lambda: store.rekey_session("s", bad),
        "list": lambda: store.list_sessions(bad),
        "export": lambda: list(store.export_sessions(bad)),
    }
    for name, call in calls.items():
        try:
            call()
        except UnicodeError as e:
            pytest.fail(f"{name}: {e!r}")
        except (ValueError, TypeError):
            pass
        else:
            pytest.fail(f"{name}: accepted an id or label with a lone surrogate")
    for key_or_value in ({bad: 1}, {"k": bad}, {"k": {bad: [bad]}}):  # state keys and values: refused, or escaped
        try:
            store.update_state("flow", "s", key_or_value)
        except UnicodeError as e:
            pytest.fail(f"state {key_or_value!r}: {e!r}")
        except (ValueError, TypeError):
            continue
        assert store.get_state("flow", "s").items() >= key_or_value.items()
    assert store.get_state("flow", "s")["k"] is not None and "new" not in [
        s.session_id for s in store.list_sessions("flow")
    ]


# ---- item 13: deep states stored before the depth limit -----------------------------------------------------------
def deep_text(depth):
    'A state `{"deep": [[...[1]...]]}` nested `depth` levels, as JSON text.'
    return '{"deep":' + "[" * depth + "1" + "]" * depth + "}"


def insert_raw(store, flow, sid, text):
    "Store a state as an older version (or another tool) might have left it, without the write-time depth limit."
    now = store._now()
    store._cx()[0].execute(
        "INSERT INTO workflow_sessions (flow_id, session_id, state_json, created_at, updated_at, updated_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (flow, sid, text, now, now, int(now * 1000)),
    )


def call_from_depth(frames, fn):
    "Call `fn` from `frames` frames deeper than here, as a framework's stack would."
    return fn() if frames == 0 else call_from_depth(frames - 1, fn)


@pytest.mark.parametrize("depth", [900, 990, 2500])
@pytest.mark.parametrize("json_merge", [True, False])
def test_a_deep_stored_state_never_blocks_updates(store, depth, json_merge):
    store._json_merge = json_merge
    text = deep_text(depth)
    insert_raw(store, "flow", "s", text)
    frames = sys.getrecursionlimit() - 150  # deep in the stack, far from the limit for the store's own calls
    call_from_depth(frames, lambda: store.update_state("flow", "s", {"plain": 1}))
    call_from_depth(frames, lambda: store.update_state("flow", "s", {"é": 2, 'q"': 3}))  # keys json_set cannot name
    call_from_depth(frames, lambda: store.update_step_state("flow", "s", "é", {"x": 1}))
    call_from_depth(frames, lambda: store.update_step_state("flow", "s", "one", {"y": 1}))
    call_from_depth(frames, lambda: store.clear_step_state("flow", "s", "one"))
    call_from_depth(frames, lambda: store.update_state("flow", "s", {f"k{i}": i for i in range(100)}))  # many keys
    expected = (
        text[:-1]
        + ',"plain":1,"\\u00e9":2,"q\\"":3,"_step_\\u00e9":{"x":1},'
        + ",".join(f'"k{i}":{i}' for i in range(100))
        + "}"
    )
    stored = store._cx()[0].execute("SELECT state_json, state_size FROM workflow_sessions").fetchone()
    assert stored == (expected, len(expected))  # the deep value untouched, the rest canonical
    assert store.get_session_summary("flow", "s").state_size_bytes == len(expected)
    assert store.delete_session("flow", "s") is True
