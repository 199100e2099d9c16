"""Issue 9 item 2: a Redis call whose connection drops after the server acted, before its reply arrived.

The fault proxy (tests/faultproxy.py) drops the server's reply and closes the connection: the server has run the
script, the client sees a dropped connection. A call must then either report what really happened (a call that is
idempotent by construction may be repeated) or raise StoreUnavailableError saying the outcome is unknown; it must
never report the opposite of what happened (SessionExistsError for the session it just created, False for the
session it just deleted). A connection the server closed while idle is not such a case: nothing was sent on it.
"""
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
        store.create_session("warm", "w1"); store.update_state("warm", "w1", {"k": 1})
        store.set_current_step("warm", "w1", "a"); store.set_session_label("warm", "w1", "L")
        store.rekey_session("w1", "w2"); store.delete_session("warm", "w2")
        store.restore_session("warm", "w3", {"k": 1}); store.get_state("warm", "w3")
        yield store, proxy, direct
        direct.delete_all(); direct.close(); store.close()


def test_create_session_reply_dropped(proxied):
    store, proxy, direct = proxied
    proxy.drop_replies(1)
    try: assert store.create_session("f", "s1", label="L") == "s1"   # repeated safely: it was created by this call
    except StoreUnavailableError as e: assert "unknown" in str(e) and f"127.0.0.1:{proxy.port}" in str(e)
    assert proxy.stats["replies_dropped"] == 1
    assert direct.get_session_summary("f", "s1").label == "L"       # the server did create it


def test_delete_session_reply_dropped(proxied):
    store, proxy, direct = proxied
    direct.update_state("f", "s1", {"k": 1})
    proxy.drop_replies(1)
    try: assert store.delete_session("f", "s1") is True             # it did delete: never False
    except StoreUnavailableError as e: assert "unknown" in str(e)
    assert proxy.stats["replies_dropped"] == 1
    assert not direct.session_exists("f", "s1")


def test_rekey_reply_dropped_rotate_keeps_the_data(proxied):
    store, proxy, direct = proxied
    for flow in ("a", "b"): direct.update_state(flow, "old", {"k": flow})
    sess = {"_workflow_session_id": "old"}
    proxy.drop_replies(1)
    try: new = rotate_session_id(sess, store)
    except StoreUnavailableError as e:
        assert "unknown" in str(e)
        pytest.fail(f"rotate_session_id lost track of the moved data: {e}")
    assert proxy.stats["replies_dropped"] == 1
    assert sess["_workflow_session_id"] == new != "old"
    assert [direct.get_state(flow, new) for flow in ("a", "b")] == [{"k": "a"}, {"k": "b"}]
    assert not direct.session_exists("a", "old")


def test_rekey_reply_dropped_reports_the_flows_moved(proxied):
    store, proxy, direct = proxied
    for flow in ("a", "b", "c"): direct.update_state(flow, "old", {"k": 1})
    proxy.drop_replies(1)
    assert store.rekey_session("old", "new") == 3
    assert proxy.stats["replies_dropped"] == 1


@pytest.mark.parametrize("call", ["update_state", "update_step_state", "set_current_step", "set_session_label",
                                  "restore_session", "clear_state"])
def test_write_reply_dropped_is_not_repeated(proxied, call):
    "A write that is not idempotent by construction raises StoreUnavailableError (outcome unknown), never repeats."
    store, proxy, direct = proxied
    direct.update_state("f", "s1", {"n": 0})
    proxy.drop_replies(1)
    calls = {"update_state": lambda: store.update_state("f", "s1", {"n": 1}),
             "update_step_state": lambda: store.update_step_state("f", "s1", "st", {"n": 1}),
             "set_current_step": lambda: store.set_current_step("f", "s1", "two"),
             "set_session_label": lambda: store.set_session_label("f", "s1", "L"),
             "restore_session": lambda: store.restore_session("f", "s1", {"n": 1}),
             "clear_state": lambda: store.clear_state("f", "s1")}
    before = proxy.stats["requests_forwarded"]
    try: calls[call]()
    except StoreUnavailableError as e:
        assert "unknown" in str(e) and f"127.0.0.1:{proxy.port}" in str(e)
    else:
        # only clear_state may hide the drop, and only by repeating nothing (it is idempotent by construction)
        assert call == "clear_state", f"{call} reported success after its reply was lost"
    assert proxy.stats["replies_dropped"] == 1
    if call != "clear_state": assert proxy.stats["requests_forwarded"] == before + 1, "the write was sent again"
    summary = direct.get_session_summary("f", "s1")   # the server did act
    if call == "clear_state": assert summary is None
    elif call == "set_current_step": assert summary.current_step == "two"
    elif call == "set_session_label": assert summary.label == "L"
    else: assert direct.get_state("f", "s1") != {"n": 0}


def test_reads_are_repeated(proxied):
    store, proxy, direct = proxied
    direct.update_state("f", "s1", {"k": 1})
    for read in (lambda: store.get_state("f", "s1"), lambda: store.get_current_step("f", "s1"),
                 lambda: store.list_sessions("f"), lambda: store.list_flows(), lambda: store.session_exists("f", "s1")):
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
