"""Shared test setup for tests/.

Import path: the helper modules beside the tests (servers, wizard, wizard_app, faultproxy, history) are imported by
name, e.g. `from servers import redis_url, unique_name`. pyproject.toml's `[tool.pytest.ini_options]
pythonpath = ["tests"]` puts this folder on sys.path for that, explicitly; nothing else is added (the repository
root is not), so a run against an installed package (CI's runtime venvs) imports the installed package. Scripts
outside pytest load a helper by its file path (see bench/bench_http.py), never by changing sys.path.

CI: `servers.in_ci()` is the one rule (CI=true, 1 or yes); in CI a missing server, driver, browser or client fails
its tests instead of skipping them. The `ci` fixture gives the same answer.

With CJM_TEST_INSTALLED=1 (tools/ci/runtime.sh sets it) the run stops at once unless cjm_workflow_state is imported
from site-packages, i.e. the installed package, not a source tree, is under test.
"""

import os

import pytest

import servers


def pytest_report_header(config):
    "Says whether CI rules apply and which cjm_workflow_state is under test."
    ci = (
        "on: a missing server, driver, browser or client fails its tests"
        if servers.in_ci()
        else "off: missing servers skip their tests"
    )
    try:
        import cjm_workflow_state as package

        where = f"cjm_workflow_state {package.__version__} from {os.path.dirname(package.__file__)}"
    except Exception as e:  # the tests that import it report it
        where = f"cjm_workflow_state does not import: {type(e).__name__}: {e}"
    return [f"CI mode {ci} (CI={os.environ.get('CI', '')!r})", where]


def pytest_sessionstart(session):
    if os.environ.get("CJM_TEST_INSTALLED") == "1":
        import cjm_workflow_state as package

        if "site-packages" not in package.__file__:
            raise pytest.UsageError(
                f"CJM_TEST_INSTALLED=1 but cjm_workflow_state comes from {package.__file__}: "
                "the installed package must be tested, not a source tree"
            )


@pytest.fixture(scope="session")
def ci() -> bool:
    "True in CI (`servers.in_ci()`): tests that need something missing must fail, not skip."
    return servers.in_ci()


@pytest.fixture(scope="session")
def redis_server() -> str:
    "REDIS_URL of a Redis server that answers (skips the test, or fails it in CI, when there is none)."
    return servers.redis_url()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    "DATABASE_URL of a PostgreSQL server that answers (skips the test, or fails it in CI, when there is none)."
    return servers.postgres_url()
