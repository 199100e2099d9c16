"""The conformance suite against RedisWorkflowStateStore, one pytest test per check (REDIS_URL, see servers.py)."""
import pytest

from cjm_workflow_state import open_store
from cjm_workflow_state.testing import conformance_checks
from servers import redis_url, unique_name

CHECKS = conformance_checks()


class RedisStores:
    """`make_store` for the suite: each store on a fresh key prefix, except that stores made while another one
    is still open share its prefix (so the suite's several-store-objects check really shares one backend)."""
    def __init__(self, url: str):
        self.url, self.made, self.prefixes = url, [], []

    def __call__(self, **options):
        if all(getattr(s, "_closed", False) for s in self.made): self.prefixes.append(unique_name("conformance"))
        store = open_store(self.url, prefix=self.prefixes[-1], **options)
        close = store.close
        def closing(): store._closed = True; close()
        store.close = closing
        self.made.append(store)
        return store

    def cleanup(self):
        "Delete every key of every prefix this factory used (nothing else)."
        for store in self.made: store.delete_all(); store.close()


@pytest.fixture
def make_store():
    stores = RedisStores(redis_url())
    yield stores
    stores.cleanup()


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_conformance(check, make_store):
    check(make_store)


def test_stores_open_together_share_the_backend(make_store):
    first = make_store()
    second = make_store()
    first.update_state("flow", "s", {"k": 1})
    assert second.get_state("flow", "s") == {"k": 1}
    first.close(); second.close()
    assert make_store().list_flows() == []
