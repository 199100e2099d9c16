"""`open_store` with degenerate `sqlite://` URLs (issue 9 item 18): a URL without a file name must not silently open a
throwaway in-memory database (the demo then promised persistence); an in-memory SQLite store is asked for by name."""
import pytest

from cjm_workflow_state import open_store
from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite://", "SQLite:///", "sqlite:////", "sqlite:///data/",
                                 "sqlite:////tmp/", "sqlite:///."])
def test_url_without_a_file_name_is_refused(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info: open_store(url)
    message = str(info.value)
    assert repr(url) in message and "sqlite://:memory:" in message and "memory://" in message, message
    assert "sqlite:///relative.db" in message and "sqlite:////absolute/path.db" in message, message
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("url", ["sqlite://:memory:", "sqlite:///:memory:"])
def test_in_memory_on_purpose(url):
    with open_store(url, ttl=60) as store:
        assert type(store) is SQLiteWorkflowStateStore and store.memory and store.ttl == 60
        store.update_state("flow", "s", {"k": 1})
        assert store.get_state("flow", "s") == {"k": 1}


def test_relative_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///relative.db") as store:
        store.update_state("flow", "s", {"k": 1})
        assert store.path.resolve() == tmp_path / "relative.db"
    with open_store("sqlite:///sub/dir/nested.db") as store:
        store.update_state("flow", "s", {"k": 2})
    absolute = tmp_path / "abs" / "path.db"
    with open_store(f"sqlite:///{absolute}") as store:  # f"sqlite:///{'/tmp/...'}": four slashes
        store.update_state("flow", "s", {"k": 3})
        assert store.path == absolute
    for path, value in (("relative.db", 1), ("sub/dir/nested.db", 2), (absolute, 3)):
        with SQLiteWorkflowStateStore(tmp_path / path) as store: assert store.get_state("flow", "s") == {"k": value}


def test_host_or_query_still_refused():
    for url in ("sqlite://localhost/app.db", "sqlite:///app.db?mode=ro"):
        with pytest.raises(ValueError): open_store(url)
