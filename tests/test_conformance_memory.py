"The conformance suite against the in-memory store (and against `open_store('memory://')`)."
import pytest
from cjm_workflow_state import InMemoryWorkflowStateStore, open_store
from cjm_workflow_state.testing import conformance_checks

CHECKS = conformance_checks()
FACTORIES = {"class": InMemoryWorkflowStateStore, "open_store": lambda **options: open_store("memory://", **options)}

@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_conformance(check, factory):
    check(factory)

def test_bounded_store_conforms():
    "max_sessions large enough for the checks changes nothing else."
    for check in CHECKS.values(): check(lambda **options: InMemoryWorkflowStateStore(max_sessions=10_000, **options))
