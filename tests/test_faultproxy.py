"""Self-test of tests/faultproxy.py against a local echo server (no database needed)."""

import socket, threading, time

import pytest

from faultproxy import FaultProxy


@pytest.fixture
def echo():
    "(port, received) of an echo server on 127.0.0.1; `received` lists every chunk it got (so a test sees it acted)."
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    received = []

    def serve(conn):
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                received.append(data)
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], received
    listener.close()


def connect(proxy, timeout=5.0):
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def ask(sock, data: bytes) -> bytes:
    sock.sendall(data)
    return sock.recv(65536)


def closed(sock) -> bool:
    "True when the peer closed `sock` (recv returns b'' or the connection was reset)."
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_forwards_and_counts(echo):
    port, _ = echo
    with FaultProxy("127.0.0.1", port) as proxy, connect(proxy) as sock:
        assert ask(sock, b"ping") == b"ping"
        assert ask(sock, b"again") == b"again"
        assert proxy.stats["connections"] == 1
        assert proxy.stats["requests_forwarded"] == 2 and proxy.stats["replies_forwarded"] == 2


def test_url_replaces_only_host_and_port(echo):
    proxy = FaultProxy("127.0.0.1", echo[0])
    try:
        assert proxy.url("redis://:s3cret@db.example:6379/2?x=1") == f"redis://:s3cret@127.0.0.1:{proxy.port}/2?x=1"
        assert proxy.url("postgresql://u@h:5432/test") == f"postgresql://u@127.0.0.1:{proxy.port}/test"
        assert proxy.url("redis://localhost") == f"redis://127.0.0.1:{proxy.port}"
    finally:
        proxy.close()


def test_drop_replies_after_the_server_acted(echo):
    port, received = echo
    with FaultProxy("127.0.0.1", port) as proxy:
        with connect(proxy) as sock:
            assert ask(sock, b"warm") == b"warm"
            proxy.drop_replies(1)
            sock.sendall(b"acted")
            assert closed(sock)  # the client never gets the reply ...
        assert received[-1] == b"acted"  # ... though the server got the request and answered
        assert proxy.stats["replies_dropped"] == 1
        with connect(proxy) as sock:  # only one was dropped: the next connection works
            assert ask(sock, b"next") == b"next"


def test_cut_all(echo):
    with FaultProxy("127.0.0.1", echo[0]) as proxy, connect(proxy) as a, connect(proxy) as b:
        assert ask(a, b"1") == b"1" and ask(b, b"2") == b"2"
        proxy.cut_all()
        assert closed(a) and closed(b)
        with connect(proxy) as c:
            assert ask(c, b"3") == b"3"


def test_freeze_and_thaw(echo):
    with FaultProxy("127.0.0.1", echo[0]) as proxy, connect(proxy, timeout=0.3) as sock:
        assert ask(sock, b"a") == b"a"
        proxy.freeze()
        sock.sendall(b"held")
        with pytest.raises(socket.timeout):
            sock.recv(65536)  # hangs while frozen
        proxy.thaw()
        sock.settimeout(5)
        assert sock.recv(65536) == b"held"  # and arrives once thawed


def test_refuse(echo):
    with FaultProxy("127.0.0.1", echo[0]) as proxy:
        proxy.refuse()
        try:
            with connect(proxy) as sock:
                sock.sendall(b"x")
                assert closed(sock)
        except ConnectionError:
            pass  # reset while connecting or sending: refused just as well
        assert proxy.stats["refused"] == 1
        proxy.refuse(False)
        with connect(proxy) as sock:
            assert ask(sock, b"ok") == b"ok"


def test_delay(echo):
    with FaultProxy("127.0.0.1", echo[0]) as proxy, connect(proxy) as sock:
        proxy.set_delay(0.2)
        start = time.monotonic()
        assert ask(sock, b"slow") == b"slow"
        assert time.monotonic() - start >= 0.4  # delayed once each way (a lower bound only)
        proxy.set_delay(0)
        assert ask(sock, b"fast") == b"fast"
