"""Faults, for real: a Redis server this test starts itself on a spare port (never the shared one) goes down,
hangs and comes back; the same store object reports it promptly and then works again."""

import os, shutil, signal, subprocess, time

import pytest
import redis

from cjm_workflow_state import StoreUnavailableError
from cjm_workflow_state.backends.redis import RedisWorkflowStateStore
from servers import free_port, in_ci, unique_name

BOUND = 10.0  # Seconds any call may take to report an unavailable server


def start_redis(port: int, *options: str) -> subprocess.Popen:
    "A throw-away redis-server on 127.0.0.1:`port` (no persistence, more redis-server `options`), once it answers."
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            client.close()
            return server
        except redis.AuthenticationError:  # up, and asks for a password
            client.close()
            return server
        except redis.ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)


def stop_redis(server: subprocess.Popen) -> None:
    "Kill a throw-away server at once: it holds nothing to keep (a clean SIGTERM can wait on a failing snapshot)."
    if server.poll() is None:
        server.kill()
        server.wait(10)


@pytest.fixture
def own_redis():
    "Port and process of a private redis-server; stopped afterwards."
    if shutil.which("redis-server") is None:
        message = "Redis outage tests did not run: redis-server is not on PATH (install Redis to run them)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port = free_port()
    servers = [start_redis(port)]
    yield port, servers
    for server in servers:
        stop_redis(server)


def calls(store):
    "Every kind of call a request may make, by name."
    return {
        "get_state": lambda: store.get_state("signup", "s1"),
        "get_current_step": lambda: store.get_current_step("signup", "s1"),
        "update_state": lambda: store.update_state("signup", "s1", {"k": 1}),
        "set_current_step": lambda: store.set_current_step("signup", "s1", "two"),
        "clear_state": lambda: store.clear_state("signup", "s2"),
        "update_step_state": lambda: store.update_step_state("signup", "s1", "st", {"x": 1}),
        "get_session_summary": lambda: store.get_session_summary("signup", "s1"),
        "list_sessions": lambda: store.list_sessions("signup"),
        "list_flows": lambda: store.list_flows(),
        "rekey_session": lambda: store.rekey_session("s1", "s9"),
    }


def test_down_then_back(own_redis):
    port, servers = own_redis
    address = f"127.0.0.1:{port}"
    store = RedisWorkflowStateStore(f"redis://{address}/0", prefix=unique_name("outage"))
    store.update_state("signup", "s1", {"name": "Ada"})
    assert store.get_state("signup", "s1") == {"name": "Ada"}

    stop_redis(servers.pop())
    for name, call in calls(store).items():
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=address) as info:
            call()
        elapsed = time.monotonic() - start
        assert elapsed < BOUND, f"{name} took {elapsed:.1f}s to report the outage"
        assert isinstance(info.value, ConnectionError)

    servers.append(start_redis(port))  # same port, an empty server that knows none of the store's scripts
    store.update_state("signup", "s1", {"name": "Ada", "back": True})  # the same store object, no restart
    store.set_current_step("signup", "s1", "two")
    assert store.get_state("signup", "s1") == {"name": "Ada", "back": True}
    assert store.get_current_step("signup", "s1") == "two"
    assert [s.session_id for s in store.list_sessions("signup")] == ["s1"]
    store.close()


def test_hung_server_times_out_then_recovers(own_redis):
    port, servers = own_redis
    address = f"127.0.0.1:{port}"
    store = RedisWorkflowStateStore(f"redis://{address}/0", prefix=unique_name("outage"), socket_timeout=1.0)
    store.update_state("signup", "s1", {"k": 1})
    os.kill(servers[0].pid, signal.SIGSTOP)  # accepts connections (kernel backlog), never answers
    try:
        for name in ("get_state", "update_state", "list_sessions"):
            start = time.monotonic()
            with pytest.raises(StoreUnavailableError, match=address):
                calls(store)[name]()
            elapsed = time.monotonic() - start
            assert elapsed < 3, f"{name} hung for {elapsed:.1f}s with socket_timeout=1"
    finally:
        os.kill(servers[0].pid, signal.SIGCONT)
    assert store.get_state("signup", "s1") == {"k": 1}  # the update sent while it hung may still run: same value
    store.update_state("signup", "s1", {"k": 2})
    assert store.get_state("signup", "s1") == {"k": 2}
    store.close()


def test_forgotten_scripts_are_loaded_again(own_redis):
    "A server that lost the store's scripts (SCRIPT FLUSH, a failover to a fresh replica) never shows NOSCRIPT."
    port, _ = own_redis
    store = RedisWorkflowStateStore(f"redis://127.0.0.1:{port}/0", prefix=unique_name("noscript"))
    store.update_state("signup", "s1", {"k": 1})
    assert store.get_state("signup", "s1") == {"k": 1}
    redis.Redis(port=port).script_flush()
    store.update_state("signup", "s1", {"k": 2})
    assert store.get_state("signup", "s1") == {"k": 2}
    assert [s.session_id for s in store.list_sessions("signup")] == ["s1"]
    store.close()
