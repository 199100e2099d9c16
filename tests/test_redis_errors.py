"""Issue 9 item 16 (Redis): failures that are not outages come out as our exception classes, naming the server's
address (never a password), the server's own words and what to do.

- `BackendError` (a `RuntimeError`, NOT a `ConnectionError`): the server refused the call for a reason retrying will
  not fix: a full server (maxmemory with noeviction), a db number the server does not have, missing or wrong
  credentials, an ACL user without the permissions, a read-only replica, a server that cannot save to disk (MISCONF),
  anything else the server refuses.
- `StoreUnavailableError` (a `ConnectionError`): worth retrying later: a server still loading its data set (LOADING),
  busy running a script (BUSY).
Each refusal leaves nothing written."""

import re, shutil, socketserver, threading, time

import pytest
import redis

from cjm_workflow_state import BackendError, StoreUnavailableError, WorkflowStateError
from cjm_workflow_state.backends.redis import RedisWorkflowStateStore
from servers import free_port, in_ci, redis_url, unique_name
from test_redis_outage import start_redis, stop_redis


def error_of(call, cls=BackendError) -> str:
    "Run `call`, which must raise `cls` (our class); return its message. A BackendError must not pass for a ConnectionError."
    with pytest.raises(cls) as info:
        call()
    assert isinstance(info.value, WorkflowStateError), repr(info.value)
    if cls is BackendError:
        assert not isinstance(info.value, ConnectionError), repr(info.value)
    else:
        assert isinstance(info.value, ConnectionError) and not isinstance(info.value, BackendError), repr(info.value)
    return str(info.value)


def own_server(*options):
    if shutil.which("redis-server") is None:
        message = "Redis error tests did not run: redis-server is not on PATH"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port = free_port()
    return port, start_redis(port, *options)


WRITES = {
    "update_state": lambda s: s.update_state("f", "s", {"k": "v" * 100}),
    "create_session": lambda s: s.create_session("f", "s"),
    "set_current_step": lambda s: s.set_current_step("f", "s", "two"),
    "update_step_state": lambda s: s.update_step_state("f", "s", "st", {"x": 1}),
    "delete_session": lambda s: s.delete_session("f", "s"),
    "rekey_session": lambda s: s.rekey_session("s", "s2"),
}


@pytest.fixture
def full_server():
    "Port of a private redis-server that is out of memory (maxmemory reached, noeviction)."
    port, server = own_server("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    client = redis.Redis(port=port)
    try:
        for i in range(10000):
            client.set(f"filler:{i}", b"x" * 10000)
    except redis.exceptions.OutOfMemoryError:
        pass
    else:
        pytest.fail("the server never ran out of memory")
    client.close()
    yield port
    stop_redis(server)


def test_out_of_memory(full_server):
    "A full server is a BackendError (retrying will not free memory): nothing written, what to do."
    address = f"127.0.0.1:{full_server}"
    store = RedisWorkflowStateStore(f"redis://{address}/0", prefix=unique_name("oom"))
    # (restore_session is let through: its first write deletes the old session, and Redis refuses a script only
    # before its first write, so that nothing is ever half done)
    for name in ("update_state", "create_session", "set_current_step", "update_step_state"):
        message = error_of(lambda: WRITES[name](store))
        assert address in message and "maxmemory" in message and "nothing was written" in message, (name, message)
        assert "OOM" in message or "memory" in message  # the server's own words
    assert store.get_state("f", "s") == {}  # reads still work, and nothing was written
    assert store.list_sessions("f") == []
    store.close()


def test_bad_db_number():
    url = redis_url()
    base = url.rsplit("/", 1)[0] if re.search(r"/\d+$", url) else url.rstrip("/")
    store = RedisWorkflowStateStore(base + "/987", prefix=unique_name("db"))
    for call in (
        lambda: store.get_state("f", "s"),
        lambda: store.update_state("f", "s", {"k": 1}),
        lambda: store.delete_all(),
    ):
        message = error_of(call)
        assert store.address in message and "987" in message and "database" in message
        assert "DB index is out of range" in message  # the server's own words
    store.close()


@pytest.fixture(scope="module")
def locked_server():
    port, server = own_server("--requirepass", "s3cr3t-pw")
    yield port
    stop_redis(server)


@pytest.mark.parametrize("credentials", ["", ":wrong-pw@", "someone:wrong-pw@"])
def test_bad_credentials(locked_server, credentials):
    address = f"127.0.0.1:{locked_server}"
    store = RedisWorkflowStateStore(f"redis://{credentials}{address}/0", prefix=unique_name("auth"))
    for call in (
        lambda: store.update_state("f", "s", {"k": 1}),
        lambda: store.get_state("f", "s"),
        lambda: store.delete_all(),
    ):
        message = error_of(call)
        assert address in message and "password" in message and "wrong-pw" not in message
        assert "credentials" in message
    store.close()
    with RedisWorkflowStateStore(f"redis://:s3cr3t-pw@{address}/0", prefix=unique_name("auth")) as good:
        good.update_state("f", "s", {"k": 1})
        assert good.get_state("f", "s") == {"k": 1}


@pytest.fixture
def acl_server():
    "Port of a private redis-server with a user `reader` (password `r-pw`) who may read but not run scripts."
    port, server = own_server()
    client = redis.Redis(port=port)
    client.acl_setuser("reader", enabled=True, passwords=["+r-pw"], keys=["*"], commands=["+@read", "+@connection"])
    client.close()
    yield port
    stop_redis(server)


def test_acl_denied(acl_server):
    address = f"127.0.0.1:{acl_server}"
    prefix = unique_name("acl")
    store = RedisWorkflowStateStore(f"redis://reader:r-pw@{address}/0", prefix=prefix)
    assert store.get_current_step("f", "s") is None  # what the user may do works
    message = error_of(lambda: store.update_state("f", "s", {"k": 1}))
    assert address in message and "r-pw" not in message and "ACL" in message and prefix in message
    assert "NOPERM" in message or "permission" in message  # the server's own words
    store.close()


@pytest.fixture
def replica_server():
    "Port of a private redis-server that is a read-only replica (of a primary that does not answer)."
    port, server = own_server("--replicaof", "127.0.0.1", str(free_port()))
    yield port
    stop_redis(server)


def test_read_only_replica(replica_server):
    address = f"127.0.0.1:{replica_server}"
    store = RedisWorkflowStateStore(f"redis://{address}/0", prefix=unique_name("replica"))
    assert store.get_state("f", "s") == {}
    for name in ("update_state", "create_session", "delete_session", "rekey_session"):
        message = error_of(lambda: WRITES[name](store))
        assert address in message and "read-only replica" in message and "primary" in message, (name, message)
        assert "READONLY" in message or "read only" in message, message
    store.close()


@pytest.fixture
def unsaving_server(tmp_path):
    "Port of a private redis-server whose last snapshot failed (its directory vanished): it refuses writes (MISCONF)."
    folder = tmp_path / "gone"
    folder.mkdir()
    port, server = own_server("--dir", str(folder), "--save", "3600 1", "--stop-writes-on-bgsave-error", "yes")
    shutil.rmtree(folder)
    client = redis.Redis(port=port)
    client.bgsave()
    deadline = time.monotonic() + 10
    while client.info("persistence")["rdb_last_bgsave_status"] != "err":
        if time.monotonic() > deadline:
            pytest.fail("the snapshot did not fail")
        time.sleep(0.05)
    client.close()
    yield port
    stop_redis(server)


def test_cannot_save_to_disk(unsaving_server):
    address = f"127.0.0.1:{unsaving_server}"
    store = RedisWorkflowStateStore(f"redis://{address}/0", prefix=unique_name("misconf"))
    for name in ("update_state", "create_session"):
        message = error_of(lambda: WRITES[name](store))
        assert address in message and "MISCONF" in message and "disk" in message, message
    assert store.get_state("f", "s") == {}
    store.close()


class _Refuser(socketserver.ThreadingTCPServer):
    "A fake Redis that answers every data command with one error reply (connection set-up commands get +OK)."

    daemon_threads = allow_reuse_address = True

    def __init__(self, reply: bytes):
        self.reply = reply
        super().__init__(("127.0.0.1", 0), _RefuserHandler)


class _RefuserHandler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            line = self.rfile.readline()
            if not line:
                return
            if not line.startswith(b"*"):
                continue
            args = []
            for _ in range(int(line[1:])):
                size = int(self.rfile.readline()[1:])
                args.append(self.rfile.read(size + 2)[:-2])
            command = args[0].upper()
            if command == b"HELLO":
                self.wfile.write(b"%%1\r\n$5\r\nproto\r\n:%s\r\n" % args[1])
            elif command in (b"CLIENT", b"SELECT", b"AUTH", b"PING"):
                self.wfile.write(b"+OK\r\n")
            else:
                self.wfile.write(self.server.reply)
            self.wfile.flush()


@pytest.mark.parametrize(
    "reply,words",
    [
        (b"-LOADING Redis is loading the dataset in memory\r\n", "loading"),
        (b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n", "busy"),
    ],
)
def test_worth_retrying_later(reply, words):
    "A server loading its data set or busy with a script: StoreUnavailableError (a ConnectionError), try again shortly."
    with _Refuser(reply) as fake:
        threading.Thread(target=fake.serve_forever, daemon=True).start()
        address = f"127.0.0.1:{fake.server_address[1]}"
        store = RedisWorkflowStateStore(f"redis://{address}/0", prefix=unique_name("fake"))
        for call in (lambda: store.update_state("f", "s", {"k": 1}), lambda: store.get_state("f", "s")):
            message = error_of(call, StoreUnavailableError)
            assert address in message and words in message.lower() and "again" in message, message
            assert "unknown" not in message  # the server refused it: nothing was done
        store.close()
        fake.shutdown()


def test_anything_else_the_server_refuses_is_a_backend_error():
    "A refusal the store has no special words for still names the address and quotes the server."
    with _Refuser(b"-ERR something no client expects\r\n") as fake:
        threading.Thread(target=fake.serve_forever, daemon=True).start()
        address = f"127.0.0.1:{fake.server_address[1]}"
        store = RedisWorkflowStateStore(f"redis://{address}/0", prefix=unique_name("fake"))
        message = error_of(lambda: store.update_state("f", "s", {"k": 1}))
        assert address in message and "something no client expects" in message
        store.close()
        fake.shutdown()
