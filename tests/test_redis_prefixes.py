"""Issue 9 item 3: stores on different prefixes of one Redis server never see, list, expire, move or delete each
other's data, whatever characters the prefixes hold (one extending the other across ':', glob characters, hash-tag
braces, backslashes, spaces, unicode, text that looks like an escape)."""

import pytest

from cjm_workflow_state.backends.redis import RedisWorkflowStateStore
from servers import redis_url, unique_name

PAIRS = [
    ("app", "app:x"),
    ("app:x", "app"),
    ("a*", "ab"),
    ("ab", "a*"),
    ("a?", "ab"),
    ("a[b]", "ab"),
    ("a{b}", "a"),
    ("a", "a{b}"),
    ("a\\", "a"),
    ("a b", "a"),
    ("ü", "%C3%BC"),
    ("%C3%BC", "ü"),
    ("app", "app:flows"),
    ("app", "app:x:{f}"),
    ("a:b", "a%3Ab"),
    ("a%3Ab", "a:b"),
    ("a%", "a%25"),
    ("a%25", "a%"),
    ("a%3A", "a:"),
]


def snapshot(store):
    "Everything a store shows: its flows and every session with its state."
    return store.list_flows(), sorted(
        (s["flow_id"], s["session_id"], s["label"], repr(s["state"])) for s in store.export_sessions()
    )


def fill(store, tag):
    for flow in ("f", "g"):
        store.update_state(flow, "shared-id", {"owner": tag})
        store.create_session(flow, f"only-{tag}", label=tag)
    store.set_current_step("f", "shared-id", tag)


@pytest.mark.parametrize("mine,theirs", PAIRS)
def test_every_operation_leaves_the_other_prefix_alone(mine, theirs):
    base, url = unique_name("prefix"), redis_url()
    a = RedisWorkflowStateStore(url, prefix=base + mine)
    a_ttl = RedisWorkflowStateStore(url, prefix=base + mine, ttl=60)
    b = RedisWorkflowStateStore(url, prefix=base + theirs)
    try:
        fill(a, "A")
        fill(b, "B")
        theirs_before = snapshot(b)
        assert theirs_before[0] == ["f", "g"] and len(theirs_before[1]) == 4

        # a sees only its own
        assert a.list_flows() == ["f", "g"]
        assert sorted(s.session_id for s in a.list_sessions("f")) == ["only-A", "shared-id"]
        assert {s["state"]["owner"] for s in a.export_sessions() if s["state"]} == {"A"}
        assert a.get_state("f", "shared-id") == {"owner": "A"}
        assert a._list("f", None, "session_id", False, 10, 0)[0].session_id == "only-A"

        # and everything it does leaves b's data as it was
        a_ttl.purge_expired()
        assert a.rekey_session("shared-id", "moved") == 2
        assert a.rekey_session("only-A", "only-B") == 2  # b's id of that name is not "taken" for a
        a.delete_session("g", "moved")
        a.clear_state("f", "only-B")
        assert snapshot(b) == theirs_before
        a.delete_all()
        assert snapshot(a) == ([], [])
        assert snapshot(b) == theirs_before
        assert b.get_current_step("f", "shared-id") == "B"
    finally:
        for s in (a, a_ttl, b):
            s.delete_all()
            s.close()


def test_delete_all_leaves_no_key_behind_and_touches_no_other(monkeypatch):
    "delete_all removes exactly the keys of its own prefix (checked against a raw SCAN of both)."
    base, url = unique_name("prefix"), redis_url()
    a = RedisWorkflowStateStore(url, prefix=base + "app")
    b = RedisWorkflowStateStore(url, prefix=base + "app:x")
    try:
        fill(a, "A")
        fill(b, "B")
        client = a._client
        keys_b = set(client.scan_iter(match=base + "*", count=1000)) - set(
            client.scan_iter(match=a._key_prefix.decode() + ":*", count=1000)
        )
        assert keys_b  # b has keys a does not own
        a.delete_all()
        assert set(client.scan_iter(match=base + "*", count=1000)) == keys_b
    finally:
        for s in (a, b):
            s.delete_all()
            s.close()


def test_ids_that_are_escapes_of_each_other_stay_apart():
    "Within one store, flow and session ids where one is the other's escaped form ('a:b', 'a%3Ab') never meet."
    ids = ["a:b", "a%3Ab", "a%253Ab", "{a}", "%7Ba%7D"]
    store = RedisWorkflowStateStore(redis_url(), prefix=unique_name("escapes"))
    try:
        for flow in ids:
            for sid in ids:
                store.update_state(flow, sid, {"at": [flow, sid]})
        assert store.list_flows() == sorted(ids)
        for flow in ids:
            assert sorted(s.session_id for s in store.list_sessions(flow)) == sorted(ids)
            for sid in ids:
                assert store.get_state(flow, sid) == {"at": [flow, sid]}
        assert store.rekey_session("a:b", "moved") == len(ids)
        store.delete_session("a%3Ab", "a%3Ab")
        for flow in ids:
            assert store.get_state(flow, "moved") == {"at": [flow, "a:b"]}
            assert store.get_state(flow, "a%3Ab") == ({} if flow == "a%3Ab" else {"at": [flow, "a%3Ab"]})
            assert store.get_state(flow, "a%253Ab") == {"at": [flow, "a%253Ab"]}
    finally:
        store.delete_all()
        store.close()
