"""Redis expiry, for real (short ttls on the shared server, a prefix per test):
- issue 9 item 5: stores with and without a ttl on one prefix; the never-expiring sessions stay listed;
- issue 9 item 17: purge_expired removes sessions written without an expiry once they are older than the store's
  ttl by the Redis server's clock (never the client's), in batches;
- the ttl range the base accepts (0.001 s .. 1e10 s) works end to end.
"""

import random, time

import pytest

from cjm_workflow_state import SessionExistsError
from cjm_workflow_state.backends.redis import RedisWorkflowStateStore, escape_id
from servers import redis_url, unique_name

TTL = 0.5


@pytest.fixture
def prefix():
    "A fresh prefix; every key under it is deleted afterwards."
    name = unique_name("ttl")
    yield name
    with RedisWorkflowStateStore(redis_url(), prefix=name) as store:
        store.delete_all()


def seen(store, flow="f"):
    "The session ids a store lists, exports and pages through, and its flows."
    return (
        sorted(s.session_id for s in store.list_sessions(flow)),
        sorted(s["session_id"] for s in store.export_sessions(flow)),
        [s.session_id for s in store._list(flow, None, "session_id", False, 100, 0)],
        store.list_flows(),
    )


@pytest.mark.parametrize("timed_first", [False, True])
def test_sessions_without_expiry_stay_listed_next_to_a_ttl_store(prefix, timed_first):
    plain = RedisWorkflowStateStore(redis_url(), prefix=prefix)
    timed = RedisWorkflowStateStore(redis_url(), prefix=prefix, ttl=TTL)

    def plain_writes():
        plain.update_state("f", "forever", {"k": 1})
        plain.create_session("f", "forever-labelled", label="L")
        plain.set_current_step("f", "forever-step", "two")

    def timed_writes():
        timed.update_state("f", "brief", {"k": 1})
        timed.create_session("f", "brief-labelled", label="M")
        timed.set_current_step("f", "brief-step", "two")
        timed.set_session_label("f", "brief", "N")

    if timed_first:
        timed_writes()
        plain_writes()
    else:
        plain_writes()
        timed_writes()
    timed.update_state("f", "brief", {"k": 2})  # a ttl write after the plain ones too
    time.sleep(2.5 * TTL)
    forever = ["forever", "forever-labelled", "forever-step"]
    assert plain.get_state("f", "forever") == {"k": 1}
    for store in (plain, timed):
        assert seen(store) == (forever, forever, forever, ["f"])
    assert [s.session_id for s in plain.list_sessions("f", order_by="label", descending=False)][
        -1
    ] == "forever-labelled"
    # a ttl store that rekeys a never-expiring session leaves it listed too
    assert timed.rekey_session("forever", "forever-moved") == 1
    time.sleep(2.5 * TTL)
    assert seen(plain)[0] == ["forever-labelled", "forever-moved", "forever-step"]
    plain.close()
    timed.close()


def test_a_ttl_store_alone_leaves_no_key_behind(prefix):
    "Index keys of a prefix that only a ttl store writes expire with its sessions (none is made persistent)."
    timed = RedisWorkflowStateStore(redis_url(), prefix=prefix, ttl=TTL)
    timed.create_session("f", "a", label="x")
    timed.update_state("f", "b", {"k": 1})
    timed.delete_session("f", "b")
    timed.update_state("g", "c", {"k": 1})  # index keys deleted and created again
    timed.update_state("f", "b", {"k": 2})
    timed.rekey_session("b", "b2")
    time.sleep(2.5 * TTL)
    left = [key for key in timed._client.scan_iter(match=prefix + ":*", count=1000) if b":once:" not in key]
    assert left == []  # (the records of create/delete/rekey calls, see test_redis_faults.py, expire after a minute)
    timed.close()


@pytest.mark.parametrize("skew", [0, 3600, -3600])
def test_purge_expired_uses_the_server_clock(prefix, monkeypatch, skew):
    plain = RedisWorkflowStateStore(redis_url(), prefix=prefix)
    timed = RedisWorkflowStateStore(redis_url(), prefix=prefix, ttl=1)
    plain.update_state("f", "old", {"k": 1})
    timed.update_state("f", "has-expiry", {"k": 1})  # expires by itself, never counted by purge
    old_count = 1200 if skew == 0 else 1  # more than one batch
    for i in range(old_count - 1):
        plain.update_state("g", f"old{i:04}", {"k": i})
    time.sleep(2)
    plain.update_state("f", "fresh", {"k": 1})
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + skew)  # the app host's clock is off by `skew`
    assert timed.purge_expired() == old_count
    assert plain.session_exists("f", "fresh") and not plain.session_exists("f", "old")
    assert plain.list_flows() == ["f"] and [s.session_id for s in plain.list_sessions("f")] == ["fresh"]
    assert timed.purge_expired() == 0
    assert plain.purge_expired() == 0  # without a ttl nothing is old
    plain.close()
    timed.close()


@pytest.mark.parametrize("ttl", [0.001, 1e10])
def test_ttl_range_ends(prefix, ttl):
    store = RedisWorkflowStateStore(redis_url(), prefix=prefix, ttl=ttl)
    store.create_session("f", "s0", label="L")
    store.update_state("f", "s1", {"k": 1})
    store.set_current_step("f", "s1", "two")
    store.update_step_state("f", "s1", "st", {"x": 1})
    store.set_session_label("f", "s1", "M")
    store.restore_session("f", "s2", {"k": 2}, updated_ts=time.time())
    store.rekey_session("s1", "s3")
    if ttl > 1:
        assert store.get_state("f", "s3") == {"k": 1, "_step_st": {"x": 1}}
        hash_ms = store._client.pttl(f"{escape_id(prefix)}:{{s3}}:f:f")  # the session's hash (see "Key layout")
        assert 0.99e13 < hash_ms <= 1e13
        assert sorted(s.session_id for s in store.list_sessions("f")) == ["s0", "s2", "s3"]
    else:
        time.sleep(0.05)
        assert store.list_sessions("f") == [] and store.get_state("f", "s3") == {}
    assert store.purge_expired() == 0
    store.close()


def left_keys(store):
    "The keys under a store's prefix, but for the records of create/delete/rekey calls (they expire after a minute)."
    return sorted(
        key for key in store._client.scan_iter(match=store._key_prefix + b":*", count=1000) if b":once:" not in key
    )


def test_index_keys_a_ttl_write_empties_and_fills_again_still_expire(prefix):
    """A ttl write that removes a flow's last index entry (the key vanishes) and adds one (a new key) gives that key an
    expiry again: relabelling, rekeying or restoring the only session of a flow leaves no key behind either."""
    ttl = 1.0
    timed = RedisWorkflowStateStore(redis_url(), prefix=prefix, ttl=ttl)
    timed.create_session("relabel", "a", label="x")
    timed.set_session_label("relabel", "a", "y")
    timed.create_session("unlabel", "a", label="x")
    timed.set_session_label("unlabel", "a", None)
    timed.create_session("label", "a")
    timed.set_session_label("label", "a", "x")
    timed.update_state("rekey", "b", {"k": 1})
    timed.rekey_session("b", "b2")
    timed.create_session("rekey-labelled", "c", label="x")
    timed.rekey_session("c", "c2")
    timed.update_state("restore", "d", {"k": 1})
    timed.restore_session("restore", "d", {"k": 2}, label="x")
    time.sleep(2.5 * ttl)
    assert [key.decode() for key in left_keys(timed)] == []
    timed.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_interleaved_stores_with_and_without_ttl(prefix, seed):
    """Stores with (0.3 s) and without a ttl on one prefix, interleaving creates, updates, steps, labels, deletes,
    restores and rekeys at random on shared ids and flows: 3 ttl after the last write, every session last written
    without a ttl is readable, listed in every order, paged, exported and its flow listed; every other one is gone."""
    rng, ttl = random.Random(seed), 0.3
    plain = RedisWorkflowStateStore(redis_url(), prefix=prefix)
    timed = RedisWorkflowStateStore(redis_url(), prefix=prefix, ttl=ttl)
    kinds = {}  # (flow, session id) -> the store that wrote it last: "plain" or "timed"
    ids, flows, fresh = [f"s{i}" for i in range(6)], ["f", "g", "h"], iter(range(10**6))
    for step in range(400):
        store, kind = rng.choice([(plain, "plain"), (timed, "timed")])
        flow, sid = rng.choice(flows), rng.choice(ids)
        op = rng.choice(["update", "update", "step", "create", "label", "delete", "restore", "rekey", "sleep"])
        if op == "update":
            store.update_state(flow, sid, {"n": step})
            kinds[flow, sid] = kind
        elif op == "step":
            store.set_current_step(flow, sid, f"st{step}")
            kinds[flow, sid] = kind
        elif op == "create":
            try:
                store.create_session(flow, sid, label=rng.choice([None, f"L{step}"]))
                kinds[flow, sid] = kind
            except SessionExistsError:
                pass
        elif op == "label":
            if store.set_session_label(flow, sid, rng.choice([None, f"L{step}"])):
                kinds[flow, sid] = kind
        elif op == "delete":
            store.delete_session(flow, sid)
            kinds.pop((flow, sid), None)
        elif op == "restore":
            store.restore_session(flow, sid, {"n": step}, label=rng.choice([None, "R"]))
            kinds[flow, sid] = kind
        elif op == "rekey":
            new = f"r{next(fresh)}"
            store.rekey_session(sid, new)
            for f in flows:
                if (f, sid) in kinds:
                    kinds[f, new] = kinds.pop((f, sid))
            ids[ids.index(sid)] = new
        elif rng.random() < 0.2:
            time.sleep(ttl * 1.2)  # let the timed sessions written so far expire
    time.sleep(3 * ttl)
    kept = {flow: sorted(s for (f, s), k in kinds.items() if f == flow and k == "plain") for flow in flows}
    for store in (plain, timed):
        assert store.list_flows() == sorted(f for f in flows if kept[f])
        for flow in flows:
            for order in ("updated_at", "created_at", "label"):
                for descending in (True, False):
                    listed = store.list_sessions(flow, order_by=order, descending=descending)
                    assert sorted(s.session_id for s in listed) == kept[flow], (flow, order, descending)
            assert [s.session_id for s in store._list(flow, None, "session_id", False, 100, 0)] == kept[flow]
            assert sorted(s["session_id"] for s in store.export_sessions(flow)) == kept[flow]
            for sid in kept[flow]:
                assert store.session_exists(flow, sid)
    plain.close()
    timed.close()


def test_a_session_restored_with_a_later_expiry_stays_listed(prefix):
    """A session restored with an `updated_ts` ahead of now (a backup from a host whose clock runs ahead) lives until
    updated_ts + ttl, as on every backend; the index keys that list it must live as long, or it would vanish from
    list_sessions, list_flows and export while still readable."""
    ttl = 0.5
    timed = RedisWorkflowStateStore(redis_url(), prefix=prefix, ttl=ttl)
    timed.restore_session("f", "ahead", {"k": 1}, updated_ts=time.time() + 20 * ttl)
    time.sleep(3 * ttl)
    assert timed.get_state("f", "ahead") == {"k": 1}
    assert seen(timed) == (["ahead"], ["ahead"], ["ahead"], ["f"])
    timed.close()
