"""A fault-injection TCP proxy for system tests against real servers (Redis, PostgreSQL).

`FaultProxy(host, port)` listens on 127.0.0.1 (a free port) and forwards every connection to the target. Between
client and server it can inject the faults a network or a crash produces, at a moment the test chooses:

    with FaultProxy("127.0.0.1", 6379) as proxy:
        store = RedisWorkflowStateStore(proxy.url("redis://127.0.0.1:6379/0"), prefix=...)
        store.get_state("f", "s")        # warm the connection up (its handshake replies pass)
        proxy.drop_replies(1)            # the server runs the next request, its reply never arrives
        store.create_session("f", "s2")  # -> the client sees a dropped connection after the server acted

API (tests/INTERFACES.md §3):
- `port`: where clients connect; `url(url)`: the same URL with host:port replaced by the proxy's.
- `start()` / `close()`, or use it as a context manager (`__enter__` starts it).
- `set_delay(seconds)`: sleep that long before forwarding every chunk, both directions (0 = none).
- `drop_replies(n=1)`: the next `n` server->client chunks are not forwarded; each closes its connection (both
  sides) instead. The server has acted on the request; the client sees its connection drop before the reply.
- `cut_all()`: close every open connection now (new ones are still accepted).
- `freeze()` / `thaw()`: stop forwarding (connections stay open and hang) / forward again what was held.
- `refuse(on=True)`: new connections are closed at once ("server down"); `refuse(False)` accepts again.
- `stats`: counters `connections` (accepted and forwarded), `requests_forwarded` (client->server chunks),
  `replies_forwarded` (server->client chunks), `replies_dropped`, `refused`, and `round_trips`: how many times a
  connection's server answered after its client had sent (a client that sends several chunks before it reads
  any reply, as a pipeline does, makes one round trip).

Threads and blocking sockets (no asyncio), so delays are accurate to well under a millisecond. A "chunk" is what
one `recv` returns: a small request or reply is one chunk, so `drop_replies(1)` drops one reply; a reply larger than
the socket buffer may arrive as several chunks, and dropping the first one closes the connection anyway.
"""

import socket, threading, time
from typing import List, Optional
from urllib.parse import urlsplit, urlunsplit

__all__ = ["FaultProxy"]

_CHUNK = 65536


class _Link:
    "One proxied connection: the client's socket, the server's socket and their two pump threads."

    def __init__(self, client: socket.socket, server: socket.socket):
        self.client, self.server = client, server
        self.closed = False
        self.lock = threading.Lock()
        self.awaiting = False  # the client sent something the server has not answered yet (see `round_trips`)

    def close(self) -> None:
        "Close both sides (idempotent); shutting down first wakes the pump threads blocked in recv."
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


class FaultProxy:
    "A TCP proxy on 127.0.0.1 that forwards to (target_host, target_port) and injects faults on demand."

    def __init__(
        self,
        target_host: str,  # Host of the real server
        target_port: int,  # Its port
    ):
        self.target = (target_host, int(target_port))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: List[_Link] = []
        self._delay = 0.0
        self._to_drop = 0
        self._refusing = False
        self._flowing = threading.Event()
        self._flowing.set()  # cleared while frozen
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self.stats = {
            "connections": 0,
            "requests_forwarded": 0,
            "replies_forwarded": 0,
            "replies_dropped": 0,
            "refused": 0,
            "round_trips": 0,
        }

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        "Start accepting connections; returns the proxy."
        if self._thread is None:
            self._listener.listen(128)
            self._thread = threading.Thread(target=self._accept_loop, name=f"faultproxy:{self.port}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        "Stop listening and close every connection."
        self._closed = True
        self._flowing.set()  # release pumps held by freeze() so they can exit
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self.cut_all()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def url(
        self,
        url: str,  # A server URL such as redis://user:pw@host:6379/0 or postgresql://u@host:5432/db
    ) -> str:
        "The same URL with its host:port replaced by the proxy's (credentials, path and query kept)."
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{self.port}"))

    # --- faults ----------------------------------------------------------------------------------------------
    def set_delay(self, seconds: float) -> None:
        "Delay every chunk forwarded, in both directions, by `seconds` (0 = no delay)."
        self._delay = max(0.0, float(seconds))

    def drop_replies(self, n: int = 1) -> None:
        "Do not forward the next `n` server->client chunks: close that connection (both sides) instead."
        with self._lock:
            self._to_drop += int(n)

    def cut_all(self) -> None:
        "Close every open connection now."
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def freeze(self) -> None:
        "Stop forwarding in both directions: connections stay open and hang until `thaw()`."
        self._flowing.clear()

    def thaw(self) -> None:
        "Resume forwarding (what was held while frozen is forwarded now)."
        self._flowing.set()

    def refuse(self, on: bool = True) -> None:
        "While on, close every new connection at once (the client sees the server as down)."
        self._refusing = bool(on)

    # --- machinery -------------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            if self._refusing:
                self._count("refused")
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the target is down: the client sees it as down too
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            self._count("connections")
            threading.Thread(target=self._pump, args=(link, client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, server, client, True), daemon=True).start()

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def _take_drop(self) -> bool:
        "True (and one fewer to drop) if the next reply is to be dropped."
        with self._lock:
            if self._to_drop <= 0:
                return False
            self._to_drop -= 1
            self.stats["replies_dropped"] += 1
            return True

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket, is_reply: bool) -> None:
        "Forward chunks from `source` to `sink` until either side closes, applying the faults set."
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                if is_reply and self._take_drop():
                    break  # the server acted; the client never hears of it
                if self._delay:
                    time.sleep(self._delay)
                self._flowing.wait()
                if link.closed:
                    break
                with self._lock:  # counted before forwarding: the peer may act on it at once
                    self.stats["replies_forwarded" if is_reply else "requests_forwarded"] += 1
                    if is_reply and link.awaiting:
                        self.stats["round_trips"] += 1
                    link.awaiting = not is_reply
                sink.sendall(data)
        except OSError:
            pass
        finally:
            link.close()
            with self._lock:
                if link in self._links:
                    self._links.remove(link)
