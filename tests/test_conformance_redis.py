"""The conformance suite against RedisWorkflowStateStore, one pytest test per check (REDIS_URL, see servers.py):
through the sync API; and, but for the checks that wait on the server's clock (seconds each, the same scripts),
with each call inside a request scope (its writes commit in one `batch` script call) and through the async API.
Each backend is a fresh key prefix; every key of every prefix made is deleted afterwards (nothing else)."""

import pytest

from cjm_workflow_state import open_store
from cjm_workflow_state.testing import AsyncCalls, ScopedCalls, SharedStores, conformance_checks
from servers import redis_url, unique_name

CHECKS = conformance_checks()
REAL_CLOCK = {"ttl", "purge_expired", "export_during_expiry"}  # checks that sleep: Redis keeps time itself
WRAPS = {"sync": lambda store: store, "scoped": ScopedCalls, "async": AsyncCalls}
CASES = [
    pytest.param(check, wrap, id=f"{name}-{wrap}")
    for name, check in CHECKS.items()
    for wrap in WRAPS
    if wrap == "sync" or name not in REAL_CLOCK
]


def delete_prefix(url: str, prefix: str) -> None:
    with open_store(url, prefix=prefix) as store:
        store.delete_all()


@pytest.fixture
def make_store(request):
    url, wrap = redis_url(), WRAPS[request.node.callspec.params["wrap"]]
    stores = SharedStores(
        lambda prefix, **options: wrap(open_store(url, prefix=prefix, **options)),
        new_backend=lambda: unique_name("conformance"),
        remove_backend=lambda prefix: delete_prefix(url, prefix),
    )
    yield stores
    stores.cleanup()


@pytest.mark.parametrize("check, wrap", CASES)
def test_conformance(check, wrap, make_store):
    check(make_store)
