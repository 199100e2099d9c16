"""The conformance suite against SQLiteWorkflowStateStore, one pytest test per check: on a :memory: database, on
files (opened by path and by `open_store("sqlite:///...")`), and on a file with the JSON single-statement merge
turned off (so every merge takes the BEGIN IMMEDIATE transaction path)."""
import pytest

from cjm_workflow_state import open_store
from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore
from cjm_workflow_state.testing import conformance_checks

CHECKS = conformance_checks()


class FileStores:
    """`make_store` on files in `folder`: a new, empty file for each store, except that stores made while another one
    is still open open its file too (so the suite's several-store-objects check really shares one database)."""
    def __init__(self, folder, opener):
        self.folder, self.opener, self.open, self.n = folder, opener, [], 0

    def __call__(self, **options):
        self.open = [s for s in self.open if s._conns]  # the stores not closed yet
        if not self.open: self.n += 1
        store = self.opener(self.folder / f"conformance-{self.n}.db", **options)
        self.open.append(store)
        return store

    def cleanup(self):
        for store in self.open: store.close()


def transaction_only(path, **options):
    store = SQLiteWorkflowStateStore(path, **options)
    store._json_merge = False
    return store


OPENERS = {
    "file": SQLiteWorkflowStateStore,
    "open_store": lambda path, **options: open_store(f"sqlite:///{path}", **options),
    "transaction_path": transaction_only,
}


@pytest.fixture(params=["memory", *OPENERS])
def make_store(request, tmp_path):
    if request.param == "memory":
        yield lambda **options: SQLiteWorkflowStateStore(":memory:", **options)
        return
    stores = FileStores(tmp_path, OPENERS[request.param])
    yield stores
    stores.cleanup()


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_conformance(check, make_store):
    check(make_store)


def test_stores_open_together_share_the_file(tmp_path):
    stores = FileStores(tmp_path, SQLiteWorkflowStateStore)
    first, second = stores(), stores()
    first.update_state("flow", "s", {"k": 1})
    assert second.get_state("flow", "s") == {"k": 1}
    first.close(); second.close()
    assert stores().list_flows() == []
    stores.cleanup()
