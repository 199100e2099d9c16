"""The conformance suite against the in-memory store (and against `open_store('memory://')`), through the sync API,
through the async API, and with each call inside a request scope."""

import pytest
from cjm_workflow_state import InMemoryWorkflowStateStore, open_store
from cjm_workflow_state.testing import AsyncCalls, CheckNotRun, ScopedCalls, conformance_checks

CHECKS = conformance_checks()
FACTORIES = {
    "class": InMemoryWorkflowStateStore,
    "open_store": lambda **options: open_store("memory://", **options),
    "bounded": lambda **options: InMemoryWorkflowStateStore(max_sessions=10_000, **options),
    "scoped": lambda **options: ScopedCalls(InMemoryWorkflowStateStore(**options)),
    "async": lambda **options: AsyncCalls(InMemoryWorkflowStateStore(**options)),
}
UNSHARED = {"concurrent_stores"}  # two in-memory stores never share data: the check must say it did not run


@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_conformance(check, factory):
    if check.__name__.removeprefix("check_") in UNSHARED:
        with pytest.raises(CheckNotRun, match="do not share data"):
            check(factory)
    else:
        check(factory)
