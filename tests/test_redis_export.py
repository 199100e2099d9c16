"""Issue 9 item 4 (Redis part): `_list` by session id after an id, the keyset page `export_sessions` is built on
(the backend primitive of INTERFACES.md):
session ids in code point order, strictly after `after`, only live sessions, one round trip per call."""

import time
from urllib.parse import urlsplit

import pytest

from cjm_workflow_state.backends.redis import RedisWorkflowStateStore
from faultproxy import FaultProxy
from servers import redis_url, unique_name

IDS = ["a", "a:b", "a b", "ab", "B", "z", "é", "\ue000", "✓", "👋", "%41", "{x}"]


def page_after(store, flow, after_id, limit):
    "One keyset page: up to `limit` live sessions of `flow` whose id sorts after `after_id` (from the first when None)."
    return store._list(flow, None, "session_id", False, limit, 0, after_id)


@pytest.fixture
def store():
    url = redis_url()
    target = urlsplit(url)
    with FaultProxy(target.hostname, target.port or 6379) as proxy:
        s = RedisWorkflowStateStore(proxy.url(url), prefix=unique_name("after"))
        s.proxy = proxy
        yield s
        s.delete_all()
        s.close()


def test_pages_by_id_in_code_point_order(store):
    for sid in IDS:
        store.update_state("f", sid, {"id": sid})
    store.update_state("other", "zz", {"k": 1})
    expected = sorted(IDS)  # Python orders str by code point
    assert [s.session_id for s in page_after(store, "f", None, 100)] == expected
    pages, after = [], None
    while True:
        before = store.proxy.stats["requests_forwarded"]
        page = page_after(store, "f", after, 3)
        assert store.proxy.stats["requests_forwarded"] == before + 1  # one round trip per page
        if not page:
            break
        assert len(page) <= 3
        pages += [s.session_id for s in page]
        after = page[-1].session_id
    assert pages == expected
    assert [s.session_id for s in page_after(store, "f", "a:b", 2)] == [i for i in expected if i > "a:b"][:2]
    assert page_after(store, "f", expected[-1], 5) == []
    assert page_after(store, "f", None, 1)[0].state_size_bytes == len('{"id":"%s"}' % expected[0])


def test_deleted_and_expired_sessions_are_skipped_and_the_page_still_filled(store):
    for i in range(10):
        store.update_state("f", f"s{i}", {"k": i})
    timed = RedisWorkflowStateStore(store._client, prefix=store.prefix, ttl=0.2)
    for i in range(10):
        timed.update_state("f", f"s{i}x", {"k": i})  # s0x sorts between s0 and s1
    store.delete_session("f", "s1")
    time.sleep(0.4)
    assert [s.session_id for s in page_after(store, "f", None, 4)] == ["s0", "s2", "s3", "s4"]
    assert [s.session_id for s in page_after(store, "f", "s4", 100)] == [f"s{i}" for i in range(5, 10)]
