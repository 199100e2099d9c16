"""Benchmark RedisWorkflowStateStore against raw redis-py round trips on the same connection, in one run.

    python bench/bench_redis.py [--url redis://127.0.0.1:6379/0] [--sizes 1000,10000,100000]

Prints ops/s of the store's protocol calls next to redis-py `GET` (reads) and `HSET` (writes), their ratios
against the target (>= 0.77 of the raw round trip of the same kind), and `list_sessions` page latency for flows
of different sizes. Measurements are interleaved in rounds and the median round is reported, so load from other
processes on the machine hits store and raw calls alike. Everything lives under a unique key prefix, deleted at
the end. Runtime: well under 2 minutes.
"""
import argparse, os, statistics, sys, time, uuid

from cjm_workflow_state.backends.redis import RedisWorkflowStateStore, label_sort_key
from cjm_workflow_state.core.base import encode_json

TARGET = 0.77  # Each protocol read/write >= this fraction of the raw single round trip of the same kind
FLOW = "signup"
STATE = {"name": "Ada Lovelace", "email": "ada@example.com", "plan": "pro", "_step_upload": {"files": ["a.wav"]}}


def rate(fn, n: int) -> float:
    "Calls per second of fn() over n calls."
    start = time.perf_counter()
    for _ in range(n): fn()
    return n / (time.perf_counter() - start)


def protocol_rates(store: RedisWorkflowStateStore, rounds: int, n: int) -> dict:
    "ops/s of each store call and each raw redis-py call, per round (rounds interleave all calls)."
    r = store._client  # the store's own client: same pool, hence the same connection in this thread
    raw_key, raw_hash = f"{store.prefix}:raw:get", f"{store.prefix}:raw:hash"
    r.set(raw_key, encode_json(STATE)); r.hset(raw_hash, "f", "v")
    sess = {}
    store.update_state(FLOW, sess, STATE); store.set_current_step(FLOW, sess, "email")
    steps = ["name", "email", "plan", "confirm"]
    counter = iter(range(10**9))

    def wizard_step():
        store.get_current_step(FLOW, sess)
        store.get_state(FLOW, sess)
        store.update_state(FLOW, sess, {"email": "ada@example.com"})
        store.set_current_step(FLOW, sess, steps[next(counter) % 4])

    def raw_wizard_step():
        r.get(raw_key); r.get(raw_key); r.hset(raw_hash, "f", "v"); r.hset(raw_hash, "f", "v")

    ops = {  # each protocol call right after the raw call it is compared with
        "raw GET": lambda: r.get(raw_key),
        "get_current_step": lambda: store.get_current_step(FLOW, sess),
        "get_state": lambda: store.get_state(FLOW, sess),
        "raw HSET": lambda: r.hset(raw_hash, "f", "v"),
        "update_state": lambda: store.update_state(FLOW, sess, {"email": "ada@example.com"}),
        "set_current_step": lambda: store.set_current_step(FLOW, sess, "plan"),
        "raw 2 GET + 2 HSET": raw_wizard_step,
        "wizard step": wizard_step,
    }
    for fn in ops.values(): rate(fn, 200)  # warm up: connection, scripts loaded
    samples = {name: [] for name in ops}
    for _ in range(rounds):
        for name, fn in ops.items():
            samples[name].append(rate(fn, n // 4 if "wizard" in name or "2 GET" in name else n))
    return samples


def populate(store: RedisWorkflowStateStore, flow: str, count: int, batch: int = 1000) -> None:
    "Create `count` sessions in `flow` (a third of them labelled), sending the store's own scripts in batches."
    store.update_state(flow, "seed", {"k": 1}); store.set_session_label(flow, "seed", "x"); store.delete_session(flow, "seed")
    conn = store._pool.make_connection()
    try:
        for start in range(0, count, batch):
            commands = []
            for i in range(start, min(start + batch, count)):
                c = store._cmds(flow, f"s{i:07d}")
                commands.append(store._packed_write("merge", c, store._max, b"", b"0", b'"name"', encode_json(f"user {i}").encode()))
                if i % 3 == 0: commands.append(store._packed_write("set_label", c, label_sort_key(f"label {count - i:07d}")))
            conn.send_packed_command(commands)
            for _ in commands: conn.read_response()
            store._commands.clear()
    finally:
        conn.disconnect()


def page_latency(store: RedisWorkflowStateStore, flow: str, order_by: str, offset: int, calls: int) -> float:
    "Median milliseconds of one list_sessions page of 20."
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        page = store.list_sessions(flow, order_by=order_by, limit=20, offset=offset)
        times.append((time.perf_counter() - start) * 1000)
        assert len(page) == 20
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--sizes", default="1000,10000,100000", help="sessions per flow for the list benchmark")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=2000, help="calls per round and op")
    args = parser.parse_args()
    started = time.perf_counter()
    store = RedisWorkflowStateStore(args.url, prefix=f"cjm-wfs-bench-{uuid.uuid4().hex[:8]}", ttl=3600)
    try:
        info = store._client.info("server")
        print(f"Redis {info['redis_version']} at {store.address}; redis-py {__import__('redis').__version__}; "
              f"Python {sys.version.split()[0]}; hiredis: {'yes' if __import__('redis').utils.HIREDIS_AVAILABLE else 'no'}; "
              f"store ttl={store.ttl:g}s, prefix {store.prefix}")
        samples = protocol_rates(store, args.rounds, args.n)
        median = {name: statistics.median(v) for name, v in samples.items()}
        rows = [("get_current_step", "raw GET"), ("get_state", "raw GET"), ("update_state", "raw HSET"),
                ("set_current_step", "raw HSET"), ("wizard step", "raw 2 GET + 2 HSET")]
        print(f"\nProtocol calls ({args.rounds} rounds of {args.n} calls, each call measured right after its raw "
              f"counterpart; ops/s = median round, ratio = median of the rounds' ratios):")
        for name in ("raw GET", "raw HSET", "raw 2 GET + 2 HSET"):
            print(f"  {name:<20}{median[name]:>9,.0f} ops/s")
        failed = []
        for name, raw_name in rows:
            ratio = statistics.median(a / b for a, b in zip(samples[name], samples[raw_name]))
            ok = ratio >= TARGET
            if not ok: failed.append(name)
            print(f"  {name:<20}{median[name]:>9,.0f} ops/s  {ratio:5.2f} x {raw_name:<20} target >= {TARGET}  "
                  f"{'ok' if ok else 'MISSED'}")

        sizes = [int(x) for x in args.sizes.split(",") if x]
        print(f"\nlist_sessions page of 20 (median of 50 calls, ms):")
        print(f"  {'sessions':>9}  {'updated_at':>10}  {'created_at':>10}  {'label':>10}  {'offset 500':>10}  populate")
        latencies = {}
        for size in sizes:
            flow = f"list-{size}"
            t0 = time.perf_counter(); populate(store, flow, size); t_pop = time.perf_counter() - t0
            lat = [page_latency(store, flow, o, 0, 50) for o in ("updated_at", "created_at", "label")]
            lat.append(page_latency(store, flow, "updated_at", 500, 50))
            latencies[size] = lat
            print(f"  {size:>9,}  {lat[0]:>10.3f}  {lat[1]:>10.3f}  {lat[2]:>10.3f}  {lat[3]:>10.3f}  {t_pop:.1f}s")
        if len(sizes) > 1:
            small, big = min(sizes), max(sizes)
            growth = max(b / s for s, b in zip(latencies[small], latencies[big]))
            ok = growth <= 1.5
            if not ok: failed.append("list_sessions")
            print(f"  worst page latency {big:,} vs {small:,} sessions: {growth:.2f} x (target <= 1.5: independent of size) "
                  f"{'ok' if ok else 'MISSED'}")
    finally:
        t0 = time.perf_counter()
        deleted = store.delete_all()
        store.close()
        print(f"\ncleanup: {deleted:,} keys deleted in {time.perf_counter() - t0:.1f}s; total runtime "
              f"{time.perf_counter() - started:.0f}s")
    if failed:
        print(f"targets missed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
