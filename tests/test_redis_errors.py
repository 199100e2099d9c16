"""Issue 9 item 16 (Redis): failures that are not outages come out as our exception classes, naming the server's
address (never a password) and what to do: a full server (maxmemory with noeviction), a db number the server does
not have, missing or wrong credentials."""
import re, shutil

import pytest
import redis

from cjm_workflow_state import StoreUnavailableError
from cjm_workflow_state.backends.redis import RedisWorkflowStateStore
from servers import free_port, in_ci, redis_url, unique_name
from test_redis_outage import start_redis, stop_redis


def own_server(*options):
    if shutil.which("redis-server") is None:
        message = "Redis error tests did not run: redis-server is not on PATH"
        if in_ci(): pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port = free_port()
    return port, start_redis(port, *options)


@pytest.fixture
def full_server():
    "Port of a private redis-server that is out of memory (maxmemory reached, noeviction)."
    port, server = own_server("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    client = redis.Redis(port=port)
    try:
        for i in range(10000):
            client.set(f"filler:{i}", b"x" * 10000)
    except redis.exceptions.OutOfMemoryError: pass
    else: pytest.fail("the server never ran out of memory")
    client.close()
    yield port
    stop_redis(server)


def test_out_of_memory(full_server):
    address = f"127.0.0.1:{full_server}"
    store = RedisWorkflowStateStore(f"redis://{address}/0", prefix=unique_name("oom"))
    # (restore_session is let through: its first write deletes the old session, and Redis refuses a script only
    # before its first write, so that nothing is ever half done)
    for write in (lambda: store.update_state("f", "s", {"k": "v" * 100}), lambda: store.create_session("f", "s"),
                  lambda: store.set_current_step("f", "s", "two"), lambda: store.update_step_state("f", "s", "st", {"x": 1})):
        with pytest.raises(StoreUnavailableError) as info: write()
        message = str(info.value)
        assert address in message and "maxmemory" in message and "nothing was written" in message
    assert store.get_state("f", "s") == {}       # reads still work, and nothing was written
    assert store.list_sessions("f") == []
    store.close()


def test_bad_db_number():
    url = redis_url()
    base = url.rsplit("/", 1)[0] if re.search(r"/\d+$", url) else url.rstrip("/")
    store = RedisWorkflowStateStore(base + "/987", prefix=unique_name("db"))
    for call in (lambda: store.get_state("f", "s"), lambda: store.update_state("f", "s", {"k": 1})):
        with pytest.raises(StoreUnavailableError) as info: call()
        message = str(info.value)
        assert store.address in message and "987" in message and "database" in message
    store.close()


@pytest.fixture
def locked_server():
    port, server = own_server("--requirepass", "s3cr3t-pw")
    yield port
    stop_redis(server)


@pytest.mark.parametrize("credentials", ["", ":wrong-pw@", "someone:wrong-pw@"])
def test_bad_credentials(locked_server, credentials):
    address = f"127.0.0.1:{locked_server}"
    store = RedisWorkflowStateStore(f"redis://{credentials}{address}/0", prefix=unique_name("auth"))
    with pytest.raises(StoreUnavailableError) as info: store.update_state("f", "s", {"k": 1})
    message = str(info.value)
    assert address in message and "password" in message and "wrong-pw" not in message
    assert "credentials" in message
    store.close()
    with RedisWorkflowStateStore(f"redis://:s3cr3t-pw@{address}/0", prefix=unique_name("auth")) as good:
        good.update_state("f", "s", {"k": 1})
        assert good.get_state("f", "s") == {"k": 1}
