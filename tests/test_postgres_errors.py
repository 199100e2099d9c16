"""PostgresWorkflowStateStore names the cause of what goes wrong (issue 9 item 16, PostgreSQL part).

A wrong database, user or connection option raises BackendError (retrying will not fix it; not a ConnectionError) at
once, with the server's own message, the address (never the password) and what to do, instead of waiting
pool_timeout and blaming an outage; so do a foreign table where the store keeps its data or its layout version, a
newer layout version, a missing table the store may not create, a read-only database and a missing privilege. A table
dropped under a running store raises BackendError once (the data went with it: as on SQLite), and the store
re-creates it, so the next call works. Needs PostgreSQL at DATABASE_URL (see servers.py); everything is made in a schema of this module, dropped at
the end.
"""

import re, time
from urllib.parse import urlsplit

import pytest

from servers import make_postgres_store, postgres_schema, unique_name

POOL_TIMEOUT = 20  # a call that waits this long has not surfaced the cause "at once"


@pytest.fixture(scope="module")
def pg():
    "(url, schema) for this module; the schema is dropped afterwards."
    with postgres_schema("pgerr") as url_and_schema:
        yield url_and_schema


make_store = make_postgres_store


def with_url(url: str, *, user=None, password=None, dbname=None, query=None) -> str:
    "DATABASE_URL with its user, password, database or query replaced."
    p = urlsplit(url)
    user = user or p.username or "postgres"
    auth = user + (f":{password}" if password else "")
    return f"{p.scheme}://{auth}@{p.hostname or '127.0.0.1'}:{p.port or 5432}/{dbname or p.path.lstrip('/')}" + (
        f"?{query}" if query else ""
    )


def backend_error(call, *words) -> str:
    """The message of what `call()` raises, checked to be our BackendError (a refusal retrying will not fix, so not a
    StoreUnavailableError or ConnectionError) and to hold each of `words`."""
    from cjm_workflow_state import BackendError, WorkflowStateError

    with pytest.raises(Exception) as info:
        call()
    error, message = info.value, str(info.value)
    assert isinstance(error, BackendError) and isinstance(error, WorkflowStateError), repr(error)
    assert not isinstance(error, ConnectionError), repr(error)
    assert all(word in message for word in words), message
    return message


def first_call_error(store, server_says):
    "The BackendError message of the store's call, checked to hold `server_says`, and how long the call took."
    start = time.monotonic()
    message = backend_error(lambda: store.get_state("f", "s"), server_says)
    return message, time.monotonic() - start


@pytest.mark.parametrize(
    "wrong, server_says",
    [
        (dict(dbname="cjm_no_such_database"), 'database "cjm_no_such_database" does not exist'),
        (dict(user="cjm_no_such_role"), 'role "cjm_no_such_role" does not exist'),
        (
            dict(query="options=-c%20cjm_no_such_setting%3D1"),
            'unrecognized configuration parameter "cjm_no_such_setting"',
        ),
        (dict(query="sslmode=bogus"), "invalid sslmode value"),
    ],
    ids=["database", "user", "server_option", "client_option"],
)
def test_wrong_connection_settings_raise_the_servers_error_at_once(pg, wrong, server_says):
    url, schema = pg
    p = urlsplit(url)
    store = make_store(with_url(url, password="s3cret-pw", **wrong), schema, pool_timeout=POOL_TIMEOUT)
    try:
        message, took = first_call_error(store, server_says)
        assert f"{p.hostname}:{p.port or 5432}" in message
        assert "s3cret-pw" not in message
        assert "check" in message.lower()  # says what to do
        assert took < POOL_TIMEOUT / 2, f"took {took:.1f} s: waited for the pool instead of reporting the cause"
        message, took = first_call_error(store, server_says)  # and again on the next call: still the cause, at once
        assert took < POOL_TIMEOUT / 2
    finally:
        store.close()


def test_unknown_connection_option_is_our_error(pg):
    "A query parameter libpq does not know: our exception naming it, at construction, never the password."
    url, schema = pg
    message = backend_error(
        lambda: make_store(with_url(url, password="s3cret-pw", query="cjm_no_such_option=1"), schema),
        "cjm_no_such_option",
    )
    assert "s3cret-pw" not in message


@pytest.mark.parametrize(
    "conninfo, password",
    [
        ("postgresql://app:s3cret-pw@db.example:5432/app", "s3cret-pw"),
        ("postgresql://app:s%40cret-pw@db.example/app", "s@cret-pw"),  # percent-encoded in the URL
        ("postgresql://app@db.example/app?password=s3cret-pw", "s3cret-pw"),
        ("host=db.example dbname=app password=s3cret-pw", "s3cret-pw"),
        # key=value forms the shared hide_secrets (which reads `password=` as a URL writes it) does not read whole;
        # the store also hides the password as libpq reads it
        ("host=db.example dbname=app password='s3 cret pw'", "s3 cret pw"),
        ("host=db.example dbname=app password = s3cret-pw", "s3cret-pw"),
        (r"host=db.example dbname=app password='it\'s-pw'", "it's-pw"),
        ("host=db.example dbname=app password=abc&def-pw", "abc&def-pw"),
    ],
    ids=["url", "url_encoded", "url_query", "conninfo", "quoted", "spaced", "escaped_quote", "ampersand"],
)
def test_password_never_shown(conninfo, password):
    "A driver message quoting the password (as libpq reads it, or the conninfo as written) never shows it in our errors."
    from cjm_workflow_state.backends.postgres import PostgresWorkflowStateStore

    store = PostgresWorkflowStateStore(conninfo)  # (connects lazily: no server needed)
    try:
        message = str(store._unavailable(Exception(f'failed for "{password}" with {conninfo}')))
        assert "db.example" in message
        for piece in {password, *(p for p in re.split(r"[\s&']+", password) if len(p) >= 3)}:  # nor any part of it
            assert piece not in message, message
    finally:
        store.close()


def test_table_dropped_under_a_running_store(pg):
    """DROP TABLE while a store runs: the next call raises our error naming the table (no raw psycopg error), and the
    store re-creates the (empty) table, so the call after that works again."""
    import psycopg

    url, schema = pg
    store = make_store(url, schema, max_size=2)
    try:
        store.update_state("f", "s", {"k": 1})
        for _ in range(6):
            store.get_state("f", "s")  # prepared on the server too (prepare_threshold=5)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {store._quoted['table']}")
        # the data is gone: not an outage an app should retry quietly
        backend_error(lambda: store.get_state("f", "s"), store.table, "does not exist", "creates it again")
        assert store.get_state("f", "s") == {}  # the data went with the table; the store works again
        store.update_state("f", "s", {"k": 2})
        assert store.get_state("f", "s") == {"k": 2}
    finally:
        store.close()


def test_table_dropped_with_create_table_false(pg):
    "With create_table=False the store never creates it: BackendError (retrying will not fix it) naming the table, saying to create it."
    import psycopg

    url, schema = pg
    table = unique_name("t")
    fixed = make_store(url, schema, table, create_table=False)
    with make_store(url, schema, table) as creator:
        creator.list_flows()  # creates it
    try:
        fixed.update_state("f", "s", {"k": 1})
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {fixed._quoted['table']}")
        for _ in range(2):
            backend_error(lambda: fixed.update_state("f", "s", {"k": 2}), table, "create_table")
    finally:
        fixed.close()


@pytest.mark.parametrize("theirs", ["{table}", "{table}_meta"], ids=["store_table", "meta_table"])
def test_foreign_table_of_a_store_name(pg, theirs):
    """A table of another application named as the store's table `X` or as its `X_meta` (layout-version) table: on
    every call our error naming it and what to do; it is left as is, and the store creates nothing beside it."""
    import psycopg

    url, schema = pg
    table = unique_name("t")
    name = theirs.format(table=table)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}"."{name}" (id integer PRIMARY KEY, note text)')
        conn.execute(f'INSERT INTO "{schema}"."{name}" VALUES (1, \'theirs\')')
    store = make_store(url, schema, table)
    try:
        for _ in range(2):
            backend_error(lambda: store.update_state("f", "s", {"k": 1}), name, "table=")
    finally:
        store.close()
    other = f"{table}_meta" if name == table else table
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(f'SELECT * FROM "{schema}"."{name}"').fetchall() == [(1, "theirs")]
        assert conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{other}"',)).fetchone() == (None,)


def test_newer_layout_version(pg):
    "A table written by a newer cjm-workflow-state (a higher layout version): BackendError saying to upgrade; nothing changed."
    import psycopg

    url, schema = pg
    table = unique_name("t")
    with make_store(url, schema, table) as creator:
        creator.update_state("f", "s", {"k": 1})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE \"{schema}\".\"{table}_meta\" SET value = '999' WHERE key = 'schema_version'")
    store = make_store(url, schema, table)
    try:
        backend_error(lambda: store.get_state("f", "s"), table, "999", "upgrade")
    finally:
        store.close()


@pytest.mark.parametrize(
    "option, server_says, todo",
    [
        ("default_transaction_read_only=on", "read-only transaction", "writable"),
        ("role=pg_read_all_data", "permission denied", "grant"),
    ],
    ids=["read_only", "no_privilege"],
)
def test_refused_writes_are_backend_errors(pg, option, server_says, todo):
    """A database that refuses the store's writes (read-only, a user without the privilege): reads work, each write
    raises BackendError at once with the server's words, the address and what to do; nothing is written."""
    url, schema = pg
    table = unique_name("t")
    with make_store(url, schema, table) as creator:
        creator.update_state("f", "s", {"k": 1})
    store = make_store(
        with_url(url, query="options=-c%20" + option.replace("=", "%3D")), schema, table, create_table=False
    )
    try:
        assert store.get_state("f", "s") == {"k": 1}
        for write in (
            lambda: store.update_state("f", "s", {"k": 2}),
            lambda: store.delete_session("f", "s"),
            lambda: store.create_session("f", "new"),
        ):
            message = backend_error(write, server_says, urlsplit(url).hostname)
            assert todo in message.lower(), message
        assert store.get_state("f", "s") == {"k": 1} and not store.session_exists("f", "new")
    finally:
        store.close()
