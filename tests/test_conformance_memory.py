"The conformance suite against the in-memory store (and against `open_store('memory://')`)."
import pytest
from cjm_workflow_state import InMemoryWorkflowStateStore, open_store
from cjm_workflow_state.testing import CheckNotRun, conformance_checks

CHECKS = conformance_checks()
FACTORIES = {"class": InMemoryWorkflowStateStore, "open_store": lambda **options: open_store("memory://", **options),
             "bounded": lambda **options: InMemoryWorkflowStateStore(max_sessions=10_000, **options)}
UNSHARED = {"concurrent_stores"}  # two in-memory stores never share data: the check must say it did not run


@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_conformance(check, factory):
    if check.__name__.removeprefix("check_") in UNSHARED:
        with pytest.raises(CheckNotRun, match="do not share data"): check(factory)
    else: check(factory)
