"""Issue 9 item 2: a Redis call whose connection drops after the server acted, before its reply arrived.

The fault proxy (tests/faultproxy.py) drops the server's reply and closes the connection: the server has run the
script, the client sees a dropped connection. A call must then either report what really happened (a call that is
idempotent by construction may be repeated) or raise StoreUnavailableError saying the outcome is unknown; it must
never report the opposite of what happened (SessionExistsError for the session it just created, False for the
session it just deleted). A connection the server closed while idle is not such a case: nothing was sent on it.
"""

import threading

import pytest
from urllib.parse import urlsplit

from cjm_workflow_state import StoreUnavailableError
from cjm_workflow_state.backends.redis import RedisWorkflowStateStore
from cjm_workflow_state.core.state_store import rotate_session_id
from faultproxy import FaultProxy
from servers import redis_url, unique_name


@pytest.fixture
def proxied():
    "(store through a fault proxy, the proxy, a direct store on the same prefix); the prefix is deleted afterwards."
    url = redis_url()
    target = urlsplit(url)
    with FaultProxy(target.hostname, target.port or 6379) as proxy:
        prefix = unique_name("faults")
        store = RedisWorkflowStateStore(proxy.url(url), prefix=prefix)
        direct = RedisWorkflowStateStore(url, prefix=prefix)
        # every script the tests run, once, so the server knows them and the connection is open (its handshake
        # replies are not the ones dropped)
        store.create_session("warm", "w1")
        store.update_state("warm", "w1", {"k": 1})
        store.set_current_step("warm", "w1", "a")
        store.set_session_label("warm", "w1", "L")
        store.rekey_session("w1", "w2")
        store.delete_session("warm", "w2")
        store.restore_session("warm", "w3", {"k": 1})
        store.get_state("warm", "w3")
        yield store, proxy, direct
        direct.delete_all()
        direct.close()
        store.close()


def test_create_session_reply_dropped(proxied):
    store, proxy, direct = proxied
    proxy.drop_replies(1)
    try:
        assert store.create_session("f", "s1", label="L") == "s1"  # repeated safely: it was created by this call
    except StoreUnavailableError as e:
        assert "unknown" in str(e) and f"127.0.0.1:{proxy.port}" in str(e)
    assert proxy.stats["replies_dropped"] == 1
    assert direct.get_session_summary("f", "s1").label == "L"  # the server did create it


def test_delete_session_reply_dropped(proxied):
    store, proxy, direct = proxied
    direct.update_state("f", "s1", {"k": 1})
    proxy.drop_replies(1)
    try:
        assert store.delete_session("f", "s1") is True  # it did delete: never False
    except StoreUnavailableError as e:
        assert "unknown" in str(e)
    assert proxy.stats["replies_dropped"] == 1
    assert not direct.session_exists("f", "s1")


def test_rekey_reply_dropped_rotate_keeps_the_data(proxied):
    store, proxy, direct = proxied
    for flow in ("a", "b"):
        direct.update_state(flow, "old", {"k": flow})
    sess = {"_workflow_session_id": "old"}
    proxy.drop_replies(1)
    try:
        new = rotate_session_id(sess, store)
    except StoreUnavailableError as e:
        assert "unknown" in str(e)
        pytest.fail(f"rotate_session_id lost track of the moved data: {e}")
    assert proxy.stats["replies_dropped"] == 1
    assert sess["_workflow_session_id"] == new != "old"
    assert [direct.get_state(flow, new) for flow in ("a", "b")] == [{"k": "a"}, {"k": "b"}]
    assert not direct.session_exists("a", "old")


def test_rekey_reply_dropped_reports_the_flows_moved(proxied):
    store, proxy, direct = proxied
    for flow in ("a", "b", "c"):
        direct.update_state(flow, "old", {"k": 1})
    proxy.drop_replies(1)
    assert store.rekey_session("old", "new") == 3
    assert proxy.stats["replies_dropped"] == 1


@pytest.mark.parametrize(
    "call",
    ["update_state", "update_step_state", "set_current_step", "set_session_label", "restore_session", "clear_state"],
)
def test_write_reply_dropped_is_not_repeated(proxied, call):
    "A write that is not idempotent by construction raises StoreUnavailableError (outcome unknown), never repeats."
    store, proxy, direct = proxied
    direct.update_state("f", "s1", {"n": 0})
    proxy.drop_replies(1)
    calls = {
        "update_state": lambda: store.update_state("f", "s1", {"n": 1}),
        "update_step_state": lambda: store.update_step_state("f", "s1", "st", {"n": 1}),
        "set_current_step": lambda: store.set_current_step("f", "s1", "two"),
        "set_session_label": lambda: store.set_session_label("f", "s1", "L"),
        "restore_session": lambda: store.restore_session("f", "s1", {"n": 1}),
        "clear_state": lambda: store.clear_state("f", "s1"),
    }
    before = proxy.stats["requests_forwarded"]
    try:
        calls[call]()
    except StoreUnavailableError as e:
        assert "unknown" in str(e) and f"127.0.0.1:{proxy.port}" in str(e)
    else:
        # only clear_state may hide the drop, and only by repeating nothing (it is idempotent by construction)
        assert call == "clear_state", f"{call} reported success after its reply was lost"
    assert proxy.stats["replies_dropped"] == 1
    if call != "clear_state":
        assert proxy.stats["requests_forwarded"] == before + 1, "the write was sent again"
    summary = direct.get_session_summary("f", "s1")  # the server did act
    if call == "clear_state":
        assert summary is None
    elif call == "set_current_step":
        assert summary.current_step == "two"
    elif call == "set_session_label":
        assert summary.label == "L"
    else:
        assert direct.get_state("f", "s1") != {"n": 0}


def test_reads_are_repeated(proxied):
    store, proxy, direct = proxied
    direct.update_state("f", "s1", {"k": 1})
    for read in (
        lambda: store.get_state("f", "s1"),
        lambda: store.get_current_step("f", "s1"),
        lambda: store.list_sessions("f"),
        lambda: store.list_flows(),
        lambda: store.session_exists("f", "s1"),
    ):
        proxy.drop_replies(1)
        read()
    assert proxy.stats["replies_dropped"] == 5
    assert store.get_state("f", "s1") == {"k": 1}


def test_connection_closed_while_idle_is_not_an_unknown_outcome(proxied):
    "A connection the server (or a proxy, a firewall) closed while idle is replaced before a write is sent on it."
    store, proxy, direct = proxied
    for i in range(3):
        proxy.cut_all()
        store.update_state("f", "s1", {"i": i})
        assert direct.get_state("f", "s1") == {"i": i}


ONCE_CALLS = {  # the calls that run once per token, each with the state the server is in once it acted
    "create_session": (
        lambda store: store.create_session("f", "s1", label="L"),
        lambda direct: direct.get_session_summary("f", "s1").label == "L",
    ),
    "delete_session": (
        lambda store: store.delete_session("f", "s0"),
        lambda direct: not direct.session_exists("f", "s0"),
    ),
    "rekey_session": (
        lambda store: store.rekey_session("s0", "s9"),
        lambda direct: direct.get_state("f", "s9") == {"k": 0} and not direct.session_exists("f", "s0"),
    ),
}


@pytest.mark.parametrize("call", ONCE_CALLS)
def test_repeat_that_cannot_reach_the_server_is_an_unknown_outcome(proxied, call):
    """The reply of a run-once call is lost, and its repeat cannot even connect: the first send may have run, so the
    call raises StoreUnavailableError saying the outcome is unknown (never "unavailable", which reads as "not done")."""
    store, proxy, direct = proxied
    direct.update_state("f", "s0", {"k": 0})
    run, acted = ONCE_CALLS[call]
    proxy.drop_replies(1)
    proxy.refuse(True)  # the server is "down" for new connections: the repeat fails before it is sent
    with pytest.raises(StoreUnavailableError) as info:
        run(store)
    assert "unknown" in str(info.value), str(info.value)
    assert proxy.stats["replies_dropped"] == 1 and proxy.stats["refused"] >= 1
    assert acted(direct)  # the server did act
    proxy.refuse(False)


@pytest.mark.parametrize("call", ONCE_CALLS)
def test_repeat_after_the_record_expired_is_an_unknown_outcome(proxied, monkeypatch, call):
    """The reply of a run-once call is lost and the network then freezes for longer than the call's record lasts
    (a minute; 0.3 s here): the repeat can no longer tell it already ran, so it must not run again and report the
    opposite of what happened (SessionExistsError for the session it created, False for the one it deleted, a rekey
    that "moved 0 flows"); the call raises StoreUnavailableError saying the outcome is unknown."""
    store, proxy, direct = proxied
    monkeypatch.setattr(store, "_once_ms", 300)
    direct.update_state("f", "s0", {"k": 0})
    run, acted = ONCE_CALLS[call]
    pool = store._client.connection_pool  # the redis-py pool every call takes its connection from
    get_connection, attempts = pool.get_connection, []

    def get_then_freeze(
        *args, **kwargs
    ):  # the repeat's connection hangs (network frozen) for 3 times the record's life
        attempts.append(args)
        if len(attempts) == 2:
            proxy.freeze()
            threading.Timer(0.9, proxy.thaw).start()
        return get_connection(*args, **kwargs)

    monkeypatch.setattr(pool, "get_connection", get_then_freeze)
    proxy.drop_replies(1)
    try:
        result = run(store)
    except StoreUnavailableError as e:
        assert "unknown" in str(e), str(e)
    else:
        pytest.fail(f"{call} reported {result!r} from a repeat that could not know whether it already ran")
    assert len(attempts) == 2 and proxy.stats["replies_dropped"] == 1
    assert acted(direct)


def test_run_once_records_are_beside_their_key(proxied):
    """A create/delete/rekey call's record lies under the store's prefix (so delete_all removes it and other prefixes
    never see it) and in the hash slot of the key the call is about (Redis Cluster-shaped), and lives a minute."""
    from redis.crc import key_slot

    store, proxy, direct = proxied
    client, prefix = direct._client, direct._key_prefix
    direct.delete_all()
    store.create_session("f", "s1")
    store.delete_session("f", "s1")
    store.update_state("f", "s2", {"k": 1})
    store.rekey_session("s2", "s3")
    records = sorted(client.scan_iter(match=b"*:once:*", count=1000))
    records = [r for r in records if r.startswith(prefix + b":")]
    homes = [prefix + b":{s1}:f:f"] * 2 + [prefix + b":{s2}:flows"]  # the session's hash, the old id's flow set
    assert len(records) == 3
    assert sorted(key_slot(r) for r in records) == sorted(key_slot(h) for h in homes)
    assert all(55_000 < client.pttl(r) <= 60_000 for r in records)
    direct.delete_all()
    assert list(client.scan_iter(match=prefix + b":*", count=1000)) == []
