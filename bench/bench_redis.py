"""Benchmark RedisWorkflowStateStore in one interleaved run: against raw redis-py round trips, against an earlier
commit's store, and against Flask-Session's Redis sessions on a 64 KB state.

    python bench/bench_redis.py [--url redis://127.0.0.1:6379/0] [--baseline DIR] [--rounds 7] [--n 2000]
                                [--big-n 150] [--sizes 1000,10000,100000] [--check]

Needs a Redis server (REDIS_URL) and, for the 64 KB comparison, `pip install Flask-Session msgpack` (bench only,
never a dependency of the package). `--baseline DIR` (a checkout of an earlier commit, e.g. /work/baseline; see
bench/baseline.py) adds that commit's store to every round. Parts:

1. Protocol calls on a 4-key state: ops/s of `get_current_step`, `get_state`, `update_state` (one key) and
   `set_current_step`, next to redis-py's own `HGET` and `HSET` through a client of the same URL (targets:
   `get_state` >= 0.90 x HGET, `update_state` >= 0.85 x HSET), and store / baseline store (target >= 0.90).
2. A 64 KB state (bench_memory's `large_state`): `get_state`, and writing the whole state into a new session, next
   to Flask-Session 0.8's `RedisSessionInterface` (`open_session` / `save_session` in one request context: msgspec
   msgpack + GET / SET) and to a plain SET / GET of a `msgpack` blob (target: >= 1.0 x Flask-Session). Every value
   written is read back and compared (exact round trips), and the store's `state_size_bytes` is checked against
   the canonical JSON's length.
3. `list_sessions` page latency for flows of different sizes (`--sizes ""` skips it).

Every round runs every operation (`--n` calls each, `--big-n` on the 64 KB state) one after the other, so load from
other processes hits all alike; ops/s is the median round, a ratio the median of the rounds' ratios. Everything
lives under unique key prefixes, deleted at the end. Runtime: about 2 minutes with the defaults. `--check` exits
with status 1 when a target is missed.
"""

import argparse, os, statistics, sys, time, uuid

import redis

from cjm_workflow_state.backends.redis import RedisWorkflowStateStore
from cjm_workflow_state.core.base import encode_json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import large_state  # the same 64 KB workload as the other benchmarks

FLOW = "signup"
STATE = {"name": "Ada Lovelace", "email": "ada@example.com", "plan": "pro", "_step_upload": {"files": ["a.wav"]}}
TARGETS = {
    ("get_state", "raw HGET"): 0.90,
    ("update_state", "raw HSET"): 0.85,
    ("64 KB get_state", "Flask-Session read"): 1.0,
    ("64 KB write new", "Flask-Session write"): 1.0,
}
BASELINE_TARGET = 0.90  # each protocol call >= this fraction of the baseline store's ops/s


def rate(fn, n: int) -> float:
    "Calls per second of fn() over n calls."
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def protocol_ops(stores: dict, raw: redis.Redis, prefix: str) -> dict:
    "name -> call: each store's protocol calls on a 4-key state, and raw redis-py HGET / HSET of one short field."
    raw_hash = f"{prefix}:raw:hash"
    raw.hset(raw_hash, "f", "v")
    ops = {"raw HGET": lambda: raw.hget(raw_hash, "f"), "raw HSET": lambda: raw.hset(raw_hash, "f", "v")}
    for tag, store in stores.items():
        sess = {}
        store.update_state(FLOW, sess, STATE)
        store.set_current_step(FLOW, sess, "email")
        ops.update(
            {
                f"{tag}get_current_step": lambda s=store, x=sess: s.get_current_step(FLOW, x),
                f"{tag}get_state": lambda s=store, x=sess: s.get_state(FLOW, x),
                f"{tag}update_state": lambda s=store, x=sess: s.update_state(FLOW, x, {"email": "ada@example.com"}),
                f"{tag}set_current_step": lambda s=store, x=sess: s.set_current_step(FLOW, x, "plan"),
            }
        )
    return ops


class FlaskSessions:
    "Flask-Session 0.8's RedisSessionInterface, driven as a request drives it (one request context, reused)."

    def __init__(self, url: str, prefix: str):
        from flask import Flask
        from flask_session.redis import RedisSessionInterface

        self.app = Flask(__name__)
        self.app.secret_key = "bench"
        self.client = redis.Redis.from_url(url)
        self.prefix = f"{prefix}:flask:"
        self.interface = RedisSessionInterface(
            self.app,
            client=self.client,
            key_prefix=self.prefix,
            use_signer=False,
            permanent=True,
            sid_length=32,
            serialization_format="msgpack",
        )
        self.response = self.app.response_class()

    def write(self, sid: str, state: dict) -> None:
        "save_session of a new session holding `state` (msgspec msgpack encode, SET with an expiry, the cookie)."
        session = self.interface.session_class(state, sid=sid, permanent=True)
        session.modified = True
        self.interface.save_session(self.app, session, self.response)

    def reader(self, sid: str):
        "A call that does open_session for the request whose cookie names `sid` (GET, msgspec msgpack decode)."
        context = self.app.test_request_context(headers={"Cookie": f"{self.app.config['SESSION_COOKIE_NAME']}={sid}"})
        context.push()
        request = context.request
        return lambda: self.interface.open_session(self.app, request)

    def cleanup(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            self.client.delete(*keys[i : i + 500])


def large_ops(store, old, flask: FlaskSessions, raw: redis.Redis, prefix: str, state: dict, big_n: int) -> tuple:
    """name -> call on the 64 KB state (reads of one session; writes of a fresh session each call), and a function
    that checks every value written round trips exactly, then removes the written sessions."""
    import msgpack

    text = encode_json(state)
    store.update_state("big", "reader", state)
    if old is not None:
        old.update_state("big", "reader", state)
    flask.write("reader" + "0" * 26, state)
    raw.set(f"{prefix}:raw:blob", msgpack.packb(state))
    fresh = iter(range(10**9))
    written = {"store": [], "old": [], "flask": [], "raw": []}

    def store_write(s, kind):
        sid = f"w{next(fresh)}"
        s.update_state("big-w", sid, state)
        written[kind].append(sid)

    def flask_write():
        sid = f"{next(fresh):032d}"
        flask.write(sid, state)
        written["flask"].append(sid)

    def raw_write():
        key = f"{prefix}:raw:w{next(fresh)}"
        raw.set(key, msgpack.packb(state), ex=3600)
        written["raw"].append(key)

    ops = {
        "Flask-Session read": flask.reader("reader" + "0" * 26),
        "msgpack GET": lambda: msgpack.unpackb(raw.get(f"{prefix}:raw:blob")),
        "64 KB get_state": lambda: store.get_state("big", "reader"),
        "Flask-Session write": flask_write,
        "msgpack SET": raw_write,
        "64 KB write new": lambda: store_write(store, "store"),
    }
    if old is not None:
        ops["baseline 64 KB get_state"] = lambda: old.get_state("big", "reader")
        ops["baseline 64 KB write new"] = lambda: store_write(old, "old")

    def check_and_clear():
        "Every session written reads back equal, its size is the canonical JSON's length; then it is deleted."
        for kind, s in (("store", store), ("old", old)):
            for sid in written[kind]:
                assert s.get_state("big-w", sid) == state, f"{kind}: session {sid} did not read back equal"
                assert s.get_session_summary("big-w", sid).state_size_bytes == len(text), f"{kind}: size of {sid}"
                s.delete_session("big-w", sid)
        for sid in written["flask"]:
            data = flask.interface._retrieve_session_data(flask.prefix + sid)
            assert {k: v for k, v in data.items() if k != "_permanent"} == state, f"Flask-Session {sid}"
        if written["flask"]:
            flask.client.delete(*(flask.prefix + sid for sid in written["flask"]))
        for key in written["raw"]:
            assert msgpack.unpackb(raw.get(key)) == state
        if written["raw"]:
            raw.delete(*written["raw"])
        for kind in written:
            written[kind].clear()

    assert ops["64 KB get_state"]() == state
    assert {k: v for k, v in ops["Flask-Session read"]().items() if k != "_permanent"} == state  # (Flask's own flag)
    assert store.get_session_summary("big", "reader").state_size_bytes == len(text)
    return ops, check_and_clear


def page_latency(store, flow: str, order_by: str, offset: int, calls: int) -> float:
    "Median milliseconds of one list_sessions page of 20."
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        page = store.list_sessions(flow, order_by=order_by, limit=20, offset=offset)
        times.append((time.perf_counter() - start) * 1000)
        assert len(page) == 20
    return statistics.median(times)


def populate(store, flow: str, count: int) -> None:
    "`count` sessions in `flow`, a third of them labelled, written with restore_session."
    now = time.time()
    for i in range(count):
        label = f"label {count - i:07d}" if i % 3 == 0 else None
        store.restore_session(
            flow, f"s{i:07d}", {"name": f"user {i}"}, label=label, created_ts=now - count + i, updated_ts=now - i / 2
        )


def median_ratio(samples: dict, a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--baseline", help="checkout of an earlier commit to compare with (see bench/baseline.py)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=2000, help="calls per round and protocol op")
    parser.add_argument("--big-n", type=int, default=150, help="calls per round and op on the 64 KB state")
    parser.add_argument("--sizes", default="1000,10000,100000", help="sessions per flow for the list benchmark")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args()
    started = time.perf_counter()
    prefix = f"cjm-wfs-bench-{uuid.uuid4().hex[:8]}"
    store = RedisWorkflowStateStore(args.url, prefix=prefix, ttl=3600)
    old = None
    if args.baseline:
        from baseline import load_baseline

        Old = load_baseline(args.baseline).backends.redis.RedisWorkflowStateStore
        old = Old(args.url, prefix=prefix + "-base", ttl=3600)
    raw = redis.Redis.from_url(args.url)
    flask = FlaskSessions(args.url, prefix)
    failed = []
    try:
        info = raw.info("server")
        from cjm_workflow_state.core.codec import _fast_decode

        print(
            f"Redis {info['redis_version']} at {store.address}; redis-py {redis.__version__}; Python "
            f"{sys.version.split()[0]}; hiredis: {'yes' if redis.utils.HIREDIS_AVAILABLE else 'no'}; "
            f"msgspec decoder: {'yes' if _fast_decode else 'no'}; store ttl={store.ttl:g}s; "
            f"baseline: {args.baseline or 'none'}"
        )
        stores = {"": store, **({"baseline ": old} if old else {})}
        ops = protocol_ops(stores, raw, prefix)
        big, check_and_clear = large_ops(store, old, flask, raw, prefix, large_state(), args.big_n)
        for fn in ops.values():
            rate(fn, 200)  # warm up: connections, scripts loaded
        for fn in big.values():
            rate(fn, 10)
        check_and_clear()
        samples = {name: [] for name in [*ops, *big]}
        for _ in range(args.rounds):
            for name, fn in ops.items():
                samples[name].append(rate(fn, args.n))
            for name, fn in big.items():
                samples[name].append(rate(fn, args.big_n))
            check_and_clear()  # (untimed) every value written read back equal, sizes right
        median = {name: statistics.median(v) for name, v in samples.items()}

        print(
            f"\n{args.rounds} interleaved rounds ({args.n} calls per protocol op, {args.big_n} per 64 KB op); "
            f"ops/s = median round, ratio = median of the rounds' ratios\n"
        )
        print(f"  {'operation':<26}{'ops/s':>10}   {'ratio':>6}  {'against':<26}{'target':>8}")

        def row(name, against, target=None):
            ratio = median_ratio(samples, name, against)
            verdict = "" if target is None else ("ok" if ratio >= target else "MISSED")
            if verdict == "MISSED":
                failed.append(f"{name} vs {against}")
            goal = "" if target is None else f">= {target:.2f}"
            print(f"  {name:<26}{median[name]:>10,.0f}   {ratio:>6.2f}  {against:<26}{goal:>8}  {verdict}")

        for name in ("raw HGET", "raw HSET"):
            print(f"  {name:<26}{median[name]:>10,.0f}")
        row("get_current_step", "raw HGET")
        row("get_state", "raw HGET", TARGETS["get_state", "raw HGET"])
        row("update_state", "raw HSET", TARGETS["update_state", "raw HSET"])
        row("set_current_step", "raw HSET")
        if old:
            for name in ("get_current_step", "get_state", "update_state", "set_current_step"):
                row(name, f"baseline {name}", BASELINE_TARGET)
        print()
        for name in ("Flask-Session read", "msgpack GET", "Flask-Session write", "msgpack SET"):
            print(f"  {name:<26}{median[name]:>10,.0f}")
        row("64 KB get_state", "Flask-Session read", 1.0)
        row("64 KB get_state", "msgpack GET")
        row("64 KB write new", "Flask-Session write", 1.0)
        row("64 KB write new", "msgpack SET")
        if old:
            row("64 KB get_state", "baseline 64 KB get_state")
            row("64 KB write new", "baseline 64 KB write new")
        print("  (every 64 KB value written was read back equal; state_size_bytes == len(canonical JSON))")

        sizes = [int(x) for x in args.sizes.split(",") if x]
        if sizes:
            print("\nlist_sessions page of 20 (median of 50 calls, ms):")
            print(
                f"  {'sessions':>9}  {'updated_at':>10}  {'created_at':>10}  {'label':>10}  {'offset 500':>10}  "
                f"populate"
            )
            latencies = {}
            for size in sizes:
                flow = f"list-{size}"
                t0 = time.perf_counter()
                populate(store, flow, size)
                t_pop = time.perf_counter() - t0
                lat = [page_latency(store, flow, o, 0, 50) for o in ("updated_at", "created_at", "label")]
                lat.append(page_latency(store, flow, "updated_at", 500, 50))
                latencies[size] = lat
                print(f"  {size:>9,}  {lat[0]:>10.3f}  {lat[1]:>10.3f}  {lat[2]:>10.3f}  {lat[3]:>10.3f}  {t_pop:.1f}s")
            if len(sizes) > 1:
                small, big_size = min(sizes), max(sizes)
                growth = max(b / s for s, b in zip(latencies[small], latencies[big_size]))
                ok = growth <= 1.5
                if not ok:
                    failed.append("list_sessions")
                print(
                    f"  worst page latency {big_size:,} vs {small:,} sessions: {growth:.2f} x (target <= 1.5: "
                    f"independent of size) {'ok' if ok else 'MISSED'}"
                )
    finally:
        t0 = time.perf_counter()
        deleted = store.delete_all()
        if old:
            deleted += old.delete_all()
            old.close()
        flask.cleanup()
        deleted += raw.delete(*raw.keys(f"{prefix}:raw:*")) if raw.keys(f"{prefix}:raw:*") else 0
        store.close()
        raw.close()
        print(
            f"\ncleanup: {deleted:,} keys deleted in {time.perf_counter() - t0:.1f}s; total runtime "
            f"{time.perf_counter() - started:.0f}s"
        )
    if failed:
        print(f"targets missed: {', '.join(failed)}")
        if args.check:
            sys.exit(1)


if __name__ == "__main__":
    main()
