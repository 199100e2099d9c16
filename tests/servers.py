"""Where the Redis and PostgreSQL test servers are, and what happens when one is missing.

Tests call `redis_url()` / `postgres_url()` to get the server's URL (from REDIS_URL / DATABASE_URL, with the
defaults below). When the server does not answer, or its driver is not installed, the test is skipped with a
reason that names the backend ("Redis tests did not run: ..."; `pytest -rs` lists them), except in CI
(`in_ci()`: CI=true, 1 or yes), where it fails: a CI run must never pass by skipping a backend.

Tests import it by name (`from servers import redis_url`): pyproject.toml's pytest `pythonpath = ["tests"]` puts
tests/ on sys.path (see tests/conftest.py).
"""

import functools, os, socket, uuid
from contextlib import contextmanager
from typing import Optional

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


def in_ci() -> bool:
    """The project's one CI rule (tools/ci/lib.sh's `in_ci` is the same in shell): CI is on when the environment
    variable CI, trimmed and lower-cased, is "true", "1" or "yes" (GitHub Actions and most CI services set CI=true).
    In CI a test whose server, driver, browser or client is missing fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _unavailable(backend: str, url: str, problem: str, how: str):
    "Skip the calling test (fail it when CI=true) because `backend`'s server or driver is missing."
    message = f"{backend} tests did not run: {problem}. {how}"
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


@functools.lru_cache(maxsize=None)
def _probe_redis(url: str) -> Optional[str]:
    "None if a Redis server answers PING at `url`, else what went wrong."
    try:
        import redis
    except ImportError:
        return 'the redis driver is not installed (pip install "cjm-workflow-state[redis]")'
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as e:
        return f"no Redis server answers at {url} ({type(e).__name__}: {e})"
    return None


@functools.lru_cache(maxsize=None)
def _probe_postgres(url: str) -> Optional[str]:
    "None if PostgreSQL answers `SELECT 1` at `url`, else what went wrong."
    try:
        import psycopg
    except ImportError:
        return 'the psycopg driver is not installed (pip install "cjm-workflow-state[postgres]")'
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as e:
        return f"no PostgreSQL server answers at {url} ({type(e).__name__}: {str(e).strip()})"
    return None


def redis_url() -> str:
    """REDIS_URL (default redis://127.0.0.1:6379/0) if a Redis server answers there; else skip (fail when CI=true)."""
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    problem = _probe_redis(url)
    if problem:
        _unavailable(
            "Redis",
            url,
            problem,
            "Start one (e.g. `redis-server`, or `docker run -p 6379:6379 redis:7`) or point REDIS_URL at one.",
        )
    return url


def postgres_url() -> str:
    """DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test) if PostgreSQL answers there; else skip (fail when CI=true)."""
    url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    problem = _probe_postgres(url)
    if problem:
        _unavailable(
            "PostgreSQL",
            url,
            problem,
            "Start one (e.g. `docker run -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust "
            "-e POSTGRES_DB=test postgres:16`) or point DATABASE_URL at one.",
        )
    return url


def unique_name(kind: str = "test") -> str:
    "A name no other test run uses (a Redis key prefix, a schema or table name): letters, digits, '_' only."
    return f"cjm_wfs_{kind}_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    "A TCP port on 127.0.0.1 that nothing listens on right now."
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_schema(kind: str):
    """(DATABASE_URL, a fresh schema name) for one test module; the schema and everything in it is dropped afterwards."""
    url, schema = postgres_url(), unique_name(kind)
    try:
        yield url, schema
    finally:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def make_postgres_store(url: str, schema: str, table: Optional[str] = None, **options):
    "A PostgresWorkflowStateStore in `schema` (see `postgres_schema`), on a fresh table unless `table` is given."
    from cjm_workflow_state.backends.postgres import PostgresWorkflowStateStore

    return PostgresWorkflowStateStore(url, schema=schema, table=table or f"t_{uuid.uuid4().hex[:12]}", **options)
