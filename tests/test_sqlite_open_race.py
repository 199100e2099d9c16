"""Several threads (or processes) opening a new SQLite file at once: each store switches the file to WAL journal mode
and creates the schema once; none fails with "database is locked" (SQLite does not wait, whatever busy_timeout, when
the journal mode cannot change because another connection is using the file)."""

import concurrent.futures

from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore


def test_many_stores_opening_a_new_file_at_once_all_open(tmp_path):
    "A race, so tried many times: on the code before the fix, 1-5 of 300 rounds failed."
    failures = []
    for i in range(300):
        path = tmp_path / str(i) / "race.db"  # a folder of its own, as a new deployment's

        def open_one(_):
            try:
                return SQLiteWorkflowStateStore(path)
            except Exception as e:
                failures.append(f"{type(e).__name__}: {e}")

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            opened = list(pool.map(open_one, range(4)))
        for store in opened:
            if store is not None:
                store.close()
    assert not failures, f"{len(failures)} of 1200 opens failed, e.g. {failures[0]}"
    with SQLiteWorkflowStateStore(tmp_path / "0" / "race.db") as store:
        assert store._cx()[0].execute("PRAGMA journal_mode").fetchone()[0] == "wal"
