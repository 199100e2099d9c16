"""A SQLite file the store cannot use (issue 9 item 16), each raising one of our exception classes whose message names
the path, the cause and what to do, never a raw `sqlite3` error; nothing of the file is changed.

- `BackendError` (a `RuntimeError`, NOT a `ConnectionError`: retrying will not fix it): a corrupt file or one that is
  not a database, a directory, tables of the same name that another application made, a read-only file or folder, a
  folder that cannot be created, a full disk, a file written by a newer schema, the store's table dropped under it.
- `StoreUnavailableError` (a `ConnectionError`: worth retrying later): the write lock held by another connection for
  longer than `busy_timeout`; an I/O error, which leaves a write's outcome unknown.

The process runs as root in CI, where `chmod` does not stop writes: a file or folder is made read-only with
`chattr +i` (the immutable attribute, which binds root too) when running as root, and with `chmod` otherwise. A full
disk and an I/O error are made real by pointing the store's open `-wal` file descriptor at `/dev/full` (writes fail
with ENOSPC) or at a read-only descriptor (writes fail with EBADF), then putting it back."""

import contextlib, os, shutil, sqlite3, subprocess

import pytest

from cjm_workflow_state import BackendError, StoreUnavailableError
from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore


def error_of(fn, cls=BackendError) -> str:
    "Run `fn`, which must raise `cls`; return its message. A BackendError must not pass for a ConnectionError."
    with pytest.raises(cls) as info:
        fn()
    if cls is BackendError:
        assert not isinstance(info.value, ConnectionError), repr(info.value)
    else:
        assert isinstance(info.value, ConnectionError) and not isinstance(info.value, BackendError)
    return str(info.value)


def use(path, **options):
    "Open a store on `path` and write to it (the error may come at either)."
    with SQLiteWorkflowStateStore(path, **options) as store:
        store.update_state("flow", "s", {"k": 1})


def test_not_a_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    message = error_of(lambda: use(path))
    assert str(path) in message and "not a SQLite database" in message and "another file" in message, message
    assert path.read_bytes() == b"these are my notes, not a database\n" * 200


def test_damaged_database(tmp_path):
    "A database whose pages were overwritten: the error comes at open or at the first call touching a bad page."
    path = tmp_path / "damaged.db"
    with SQLiteWorkflowStateStore(path) as store:
        for i in range(300):
            store.update_state("flow", f"s{i}", {"blob": "x" * 2000})
    size = path.stat().st_size
    with open(path, "r+b") as f:  # keep the header page, overwrite the rest with junk
        f.seek(4096)
        f.write(b"\xde\xad\xbe\xef" * ((size - 4096) // 4))

    def use_all():
        with SQLiteWorkflowStateStore(path) as damaged:
            damaged.list_flows()
            for i in range(300):
                damaged.get_state("flow", f"s{i}")
            damaged.update_state("flow", "s0", {"k": 1})

    message = error_of(use_all)
    assert str(path) in message and "damaged" in message and "backup" in message, message


def test_directory_as_path(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    message = error_of(lambda: use(folder))
    assert str(folder) in message and "is a directory" in message and "file" in message, message
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    "table, columns, row",
    [
        ("workflow_sessions", "id INTEGER PRIMARY KEY, user TEXT, started TEXT", (1, "bob", "2020-01-01")),
        ("workflow_sessions_meta", "id INTEGER PRIMARY KEY, note TEXT", (1, "theirs")),
    ],
)
def test_foreign_table_of_the_same_name(tmp_path, table, columns, row):
    """Another application's table named like one of the store's (other columns): our error naming it, the same each
    time; its table and rows are left as they were, and nothing is created."""
    path = tmp_path / "shared.db"
    with contextlib.closing(sqlite3.connect(path)) as c:
        c.execute(f"CREATE TABLE {table} ({columns})")
        c.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
        c.commit()
    for _ in range(2):  # the same answer each time, nothing created meanwhile
        message = error_of(lambda: use(path))
        assert str(path) in message and repr(table) in message and "another file" in message, message
    with contextlib.closing(sqlite3.connect(path)) as c:
        assert c.execute(f"SELECT * FROM {table}").fetchall() == [row]
        assert c.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == [(table,)]


def test_table_dropped_under_a_running_store(tmp_path):
    """DROP TABLE while a store runs: the next call raises our error naming the path and the table, and the store
    makes the (empty) table again, so the call after that works (as the PostgreSQL store does)."""
    path = tmp_path / "dropped.db"
    store = SQLiteWorkflowStateStore(path)
    try:
        for call in (
            lambda: store.get_state("flow", "s"),
            lambda: store.update_state("flow", "s", {"k": 2}),
            lambda: store.update_state("flow", "s", {"é": 2}),
        ):  # the statement, then the transaction path
            store.update_state("flow", "s", {"k": 1})
            with contextlib.closing(sqlite3.connect(path)) as c:
                c.execute("DROP TABLE workflow_sessions")
            message = error_of(call)
            assert str(path) in message and "workflow_sessions" in message and "made them again" in message, message
            assert store.get_state("flow", "s") == {}  # the data went with the table; the store works again
            store.update_state("flow", "s", {"k": 3})
            assert store.get_state("flow", "s") == {"k": 3}
    finally:
        store.close()
    with SQLiteWorkflowStateStore(path) as reopened:
        assert reopened.get_state("flow", "s") == {"k": 3}


@contextlib.contextmanager
def read_only(path):
    "Make a file or folder read-only for this process, even as root; restore it afterwards."
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip(
            "running as root without a working `chattr +i` (needs CAP_LINUX_IMMUTABLE and an ext2/3/4-like "
            "file system): root ignores file modes, so nothing can make the path read-only here"
        )
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_file(tmp_path):
    "Reads still work; a write says the file is read-only and what to do; the data is intact."
    path = tmp_path / "ro.db"
    use(path)
    with read_only(path):
        with SQLiteWorkflowStateStore(path) as store:
            assert store.get_state("flow", "s") == {"k": 1}
            message = error_of(lambda: store.update_state("flow", "s", {"k": 2}))
            assert str(path) in message and "read-only" in message and "permissions" in message, message
    with SQLiteWorkflowStateStore(path) as store:
        assert store.get_state("flow", "s") == {"k": 1}


def test_new_file_in_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder):
        for path in (folder / "new.db", folder / "sub" / "new.db"):
            message = error_of(lambda: use(path))
            assert str(path) in message and "permissions" in message, message
    assert list(folder.iterdir()) == []


def test_existing_file_in_read_only_folder(tmp_path):
    "SQLite must create the -wal and -shm files beside the database: the error says so."
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "app.db"
    use(path)
    with read_only(folder):
        message = error_of(lambda: use(path))
        assert str(path) in message and "folder" in message and "permissions" in message, message
    with SQLiteWorkflowStateStore(path) as store:
        assert store.get_state("flow", "s") == {"k": 1}


def test_folder_that_cannot_be_created(tmp_path):
    "A path under a regular file: its folder cannot be made."
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    path = not_a_folder / "sub" / "app.db"
    message = error_of(lambda: use(path))
    assert str(path) in message and "folder" in message and "writable folder" in message, message


def test_file_of_a_newer_schema(tmp_path):
    path = tmp_path / "newer.db"
    use(path)
    with contextlib.closing(sqlite3.connect(path)) as c:
        c.execute("UPDATE workflow_sessions_meta SET value = '99' WHERE key = 'schema_version'")
        c.commit()
    message = error_of(lambda: use(path))
    assert str(path) in message and "version 99" in message and "upgrade cjm-workflow-state" in message, message
    with pytest.raises(RuntimeError):
        use(path)  # what it raised before BackendError existed, still caught


def test_locked_beyond_busy_timeout_is_worth_retrying(tmp_path):
    "Another connection holds the write lock: StoreUnavailableError saying nothing was written; afterwards it works."
    path = tmp_path / "busy.db"
    use(path)
    with SQLiteWorkflowStateStore(path, busy_timeout=0.05) as store:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as blocker:
            blocker.execute("BEGIN IMMEDIATE")
            for call in (
                lambda: store.update_state("flow", "s", {"k": 2}),  # the statement path
                lambda: store.update_state("flow", "s", {"é": 2}),  # the transaction path
                lambda: store.create_session("flow", "new"),
                lambda: store.delete_session("flow", "s"),
            ):
                message = error_of(call, StoreUnavailableError)
                assert str(path) in message and "busy_timeout" in message and "nothing was written" in message, message
            assert store.get_state("flow", "s") == {"k": 1}  # readers are not blocked
            blocker.execute("ROLLBACK")
        store.update_state("flow", "s", {"k": 3})
        assert store.get_state("flow", "s") == {"k": 3}


@contextlib.contextmanager
def wal_writes_fail(path, target: str):
    """Make every write to `path`'s open `-wal` file fail, then put the descriptors back: `target` "full" points them
    at /dev/full (ENOSPC), "io" at a read-only descriptor (EBADF, which SQLite reports as an I/O error)."""
    wal = str(path) + "-wal"
    fds = [
        int(fd)
        for fd in os.listdir("/proc/self/fd")
        if os.path.realpath(f"/proc/self/fd/{fd}") == os.path.realpath(wal)
    ]
    assert fds, "the store has no open -wal file"
    saved = {fd: os.dup(fd) for fd in fds}
    bad = os.open("/dev/full", os.O_WRONLY) if target == "full" else os.open(wal, os.O_RDONLY)
    try:
        for fd in fds:
            os.dup2(bad, fd)
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(bad)


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc/self/fd")


@needs_proc
def test_disk_full(tmp_path):
    "A write to a full disk: BackendError saying so and that nothing was written; the data is intact, and once there is space the store writes again."
    path = tmp_path / "full.db"
    with SQLiteWorkflowStateStore(path) as store:
        store.update_state("flow", "s", {"k": 1})
        for call in (
            lambda: store.update_state("flow", "s", {"k": 2, "big": "x" * 100_000}),  # the statement path
            lambda: store.update_state("flow", "s", {"é": "x" * 100_000}),
        ):  # the transaction path
            with wal_writes_fail(path, "full"):
                message = error_of(call)
                assert str(path) in message and "disk is full" in message and "nothing was written" in message, message
            assert store.get_state("flow", "s") == {"k": 1}
            # a write once there is space (the first transaction after a failed commit must read the WAL back, which
            # the fault injected here would break as well)
            store.update_state("flow", "s", {"k": 1})
        store.update_state("flow", "s", {"k": 3})
    with SQLiteWorkflowStateStore(path) as store:
        assert store.get_state("flow", "s") == {"k": 3}


@needs_proc
def test_io_error_leaves_the_outcome_unknown(tmp_path):
    "An I/O error during a write: StoreUnavailableError saying the write may or may not have been saved."
    path = tmp_path / "io.db"
    with SQLiteWorkflowStateStore(path) as store:
        store.update_state("flow", "s", {"k": 1})
        for call in (
            lambda: store.update_state("flow", "s", {"k": 2, "big": "x" * 100_000}),
            lambda: store.create_session("flow", "new"),
        ):
            with wal_writes_fail(path, "io"):
                message = error_of(call, StoreUnavailableError)
                assert (
                    str(path) in message and "I/O error" in message and "may or may not have been saved" in message
                ), message
            store.update_state("flow", "s", {"k": 1})  # the same store object works again
        store.update_state("flow", "s", {"k": 3})  # the same store object works again
        assert store.get_state("flow", "s")["k"] == 3


def sqlite_error(cls, message, code, name):
    "An exception as sqlite3 raises it, with its result codes (for the cases no test here can provoke for real)."
    e = cls(message)
    e.sqlite_errorcode, e.sqlite_errorname = code, name
    return e


def test_error_classes_for_what_cannot_be_provoked_here(tmp_path):
    "An I/O error on a read, a locking-protocol error, any other refusal, and a misuse of sqlite3."
    path = tmp_path / "codes.db"
    with SQLiteWorkflowStateStore(path) as store:
        read = store._error(
            sqlite_error(sqlite3.OperationalError, "disk I/O error", 266, "SQLITE_IOERR_READ"), writing=False
        )
        assert type(read) is StoreUnavailableError and str(path) in str(read) and "nothing was written" in str(read)
        protocol = store._error(sqlite_error(sqlite3.OperationalError, "locking protocol", 15, "SQLITE_PROTOCOL"))
        assert type(protocol) is StoreUnavailableError and "network file system" in str(protocol)
        other = store._error(
            sqlite_error(sqlite3.IntegrityError, "NOT NULL constraint failed", 1299, "SQLITE_CONSTRAINT_NOTNULL")
        )
        assert type(other) is BackendError and str(path) in str(other) and "SQLITE_CONSTRAINT_NOTNULL" in str(other)
        misuse = sqlite3.ProgrammingError("Cannot operate on a closed database.")
        assert store._error(misuse) is misuse  # a bug, raised as it is


@pytest.mark.parametrize("stored", ['{"a":1,}', '{"a":"}', '{"a"}', "[1, 2]", '"text"', "not json", '{"a":1} {}'])
def test_update_on_a_state_another_program_broke(tmp_path, stored):
    """A state text no store wrote, not one JSON object: an update (statement or transaction path) raises BackendError
    naming the session; nothing is written (an array took a statement-path update as applied, changing nothing)."""
    path = tmp_path / "broken.db"
    use(path)
    with contextlib.closing(sqlite3.connect(path)) as c:
        c.execute("UPDATE workflow_sessions SET state_json = ?", (stored,))
        c.commit()
    with SQLiteWorkflowStateStore(path) as store:
        for updates in ({"k": 2}, {"é": 2}):
            message = error_of(lambda: store.update_state("flow", "s", updates))
            assert str(path) in message and "'s'" in message and "'flow'" in message and "backup" in message, message
        message = error_of(lambda: store.update_step_state("flow", "s", "x", {"b": 1}))
        assert "delete_session" in message, message
        assert store._get_state_text("flow", "s", None) == stored
        assert store.delete_session("flow", "s") is True
        store.update_state("flow", "s", {"k": 3})
        assert store.get_state("flow", "s") == {"k": 3}
