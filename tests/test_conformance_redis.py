"""The conformance suite against RedisWorkflowStateStore, one pytest test per check (REDIS_URL, see servers.py).
Each backend is a fresh key prefix; every key of every prefix made is deleted afterwards (nothing else)."""
import pytest

from cjm_workflow_state import open_store
from cjm_workflow_state.testing import SharedStores, conformance_checks
from servers import redis_url, unique_name

CHECKS = conformance_checks()


def delete_prefix(url: str, prefix: str) -> None:
    with open_store(url, prefix=prefix) as store: store.delete_all()


@pytest.fixture
def make_store():
    url = redis_url()
    stores = SharedStores(lambda prefix, **options: open_store(url, prefix=prefix, **options),
                          new_backend=lambda: unique_name("conformance"),
                          remove_backend=lambda prefix: delete_prefix(url, prefix))
    yield stores
    stores.cleanup()


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_conformance(check, make_store):
    check(make_store)
