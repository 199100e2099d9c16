"""Benchmark PostgresWorkflowStateStore against raw psycopg round trips on the same connection, in one run.

    python bench/bench_postgres.py [--seconds 45] [--rounds 9] [--big 100000] [--baseline DIR]

With `--baseline DIR` (a checkout of an earlier commit, see bench/baseline.py) it also times that commit's
PostgresWorkflowStateStore (on a table of its own, same pool) in the same interleaved rounds and prints
ours / baseline for get_state, update_state, set_current_step and get_current_step (target >= 0.90).

Reads DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test). Works in its own schema
(cjm_bench_<random>), dropped at the end. Every statement autocommits (durable commit: the server's
synchronous_commit is left as it is). The store and the raw statements share one pooled connection
(min_size = max_size = 1), so the ratios compare like with like: each store call against the raw single
round trip of the same kind (reads vs a primary-key jsonb SELECT, writes vs the
INSERT ... ON CONFLICT DO UPDATE SET state = state || excluded.state upsert). The operations run in
alternating batches of 25 calls for the whole measuring time, so a burst of load from other processes
(commit latency on a shared disk varies a lot) hits all of them alike. The time is split into `--rounds` rounds:
ops/s is the median round, a ratio the median of the rounds' ratios.
Runtime: about `--seconds`, plus ~15 s to fill and time 100k sessions.
"""

import argparse, os, statistics, sys, time, uuid

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from cjm_workflow_state.backends.postgres import PostgresWorkflowStateStore

URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TARGET = 0.77  # each protocol read/write at least 77% of the raw single round trip of the same kind
BASELINE_TARGET = 0.90  # each against the baseline commit's store, same run
BASELINE_OPS = ("get_state", "update_state", "set_current_step", "get_current_step")
FLOW = "signup"
STATE = {"name": "Ada Lovelace", "email": "ada@example.com", "plan": "pro", "age": 36, "tags": ["a", "b"]}


def interleaved_rates(ops: dict, seconds: float, batch: int = 25) -> dict:
    "Calls/s of each op, measured in alternating batches so that every op sees the same load over time."
    spent, calls = {k: 0.0 for k in ops}, {k: 0 for k in ops}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for name, fn in ops.items():
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            spent[name] += time.perf_counter() - start
            calls[name] += batch
    return {k: calls[k] / spent[k] for k in ops}


def rounds_of(ops: dict, seconds: float, rounds: int) -> list:
    "`interleaved_rates` of `ops` in `rounds` rounds sharing `seconds`: one dict of ops/s per round."
    return [interleaved_rates(ops, seconds / rounds) for _ in range(rounds)]


def median_rate(rounds: list, name: str) -> float:
    return statistics.median(r[name] for r in rounds)


def median_ratio(rounds: list, name: str, base: str) -> float:
    "The median over the rounds of name's ops/s / base's ops/s (each round's pair measured side by side)."
    return statistics.median(r[name] / r[base] for r in rounds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=45, help="seconds for all operations together")
    ap.add_argument("--rounds", type=int, default=9, help="rounds the measuring time is split into")
    ap.add_argument("--big", type=int, default=100_000, help="sessions in the big flow of the listing test")
    ap.add_argument("--baseline", metavar="DIR", help="also time the store of this checkout (see bench/baseline.py)")
    args = ap.parse_args()
    old_store_class = None
    if args.baseline:
        from baseline import load_baseline

        old_store_class = load_baseline(args.baseline).backends.postgres.PostgresWorkflowStateStore

    schema = f"cjm_bench_{uuid.uuid4().hex[:8]}"
    pool = ConnectionPool(URL, min_size=1, max_size=1, kwargs=dict(autocommit=True), open=True)
    store = PostgresWorkflowStateStore(pool, schema=schema, table="sessions")
    old = old_store_class and old_store_class(pool, schema=schema, table="baseline_sessions")
    t0 = time.perf_counter()
    try:
        store.update_state(FLOW, "warm", STATE)  # creates the schema and table
        with pool.connection() as conn:
            conn.execute(
                f'CREATE TABLE "{schema}".raw (flow_id text, session_id text, state jsonb NOT NULL, '
                f"PRIMARY KEY (flow_id, session_id))"
            )
            conn.execute(f'INSERT INTO "{schema}".raw VALUES (%s, %s, %s)', (FLOW, "s", Jsonb(STATE)))
            raw_select = f'SELECT state FROM "{schema}".raw WHERE flow_id = %s AND session_id = %s'
            raw_upsert = (
                f'INSERT INTO "{schema}".raw AS t (flow_id, session_id, state) VALUES (%s, %s, %s) '
                f"ON CONFLICT (flow_id, session_id) DO UPDATE SET state = t.state || excluded.state"
            )
            sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
            server = conn.execute("SHOW server_version").fetchone()[0]
        for s in (store, old) if old else (store,):
            s.update_state(FLOW, "s", STATE)
            s.set_current_step(FLOW, "s", "email")
        i = [0]

        def raw_get():
            with pool.connection() as conn:
                conn.execute(raw_select, (FLOW, "s")).fetchone()

        def raw_put():
            i[0] += 1
            with pool.connection() as conn:
                conn.execute(raw_upsert, (FLOW, "s", Jsonb({"n": i[0]})))

        def update():
            i[0] += 1
            store.update_state(FLOW, "s", {"n": i[0]})

        def wizard_step():  # what StepFlow's next_step does: read step, write the form, read state, move on
            i[0] += 1
            store.get_current_step(FLOW, "s")
            store.update_state(FLOW, "s", {"email": f"ada{i[0]}@example.com"})
            store.get_state(FLOW, "s")
            store.set_current_step(FLOW, "s", "plan")

        def raw_wizard_step():  # the same four round trips, raw: two PK selects, two upserts
            raw_get()
            raw_put()
            raw_get()
            raw_put()

        ops = {
            "raw PK jsonb SELECT": raw_get,
            "raw upsert state || excluded.state": raw_put,
            "get_state": lambda: store.get_state(FLOW, "s"),
            "get_current_step": lambda: store.get_current_step(FLOW, "s"),
            "update_state": update,
            "set_current_step": lambda: store.set_current_step(FLOW, "s", "email"),
            "wizard step (4 calls)": wizard_step,
            "raw wizard step (2 selects, 2 upserts)": raw_wizard_step,
        }
        if old:

            def old_update():
                i[0] += 1
                old.update_state(FLOW, "s", {"n": i[0]})

            ops.update(
                {
                    "baseline get_state": lambda: old.get_state(FLOW, "s"),
                    "baseline get_current_step": lambda: old.get_current_step(FLOW, "s"),
                    "baseline update_state": old_update,
                    "baseline set_current_step": lambda: old.set_current_step(FLOW, "s", "email"),
                }
            )
        interleaved_rates(ops, 0.5, batch=5)  # warm up (psycopg prepares statements after 5 runs)
        rounds = rounds_of(ops, args.seconds, args.rounds)

        print(
            f"PostgreSQL {server} at {URL} (synchronous_commit={sync}); psycopg {psycopg.__version__}; "
            f"Python {sys.version.split()[0]}; {args.seconds:.0f}s of interleaved batches in {args.rounds} rounds"
        )
        for name in ops:
            print(f"  {name:40} {median_rate(rounds, name):8,.0f} ops/s")
        print("ratios (median of the rounds; target >= %.2f):" % TARGET)
        ok = True
        for name, base in [
            ("get_state", "raw PK jsonb SELECT"),
            ("get_current_step", "raw PK jsonb SELECT"),
            ("update_state", "raw upsert state || excluded.state"),
            ("set_current_step", "raw upsert state || excluded.state"),
        ]:
            ratio = median_ratio(rounds, name, base)
            ok &= ratio >= TARGET
            print(f"  {name:18} / {base:36} {ratio:5.2f}  {'ok' if ratio >= TARGET else 'BELOW TARGET'}")
        print(
            f"  {'wizard step':18} / {'raw wizard step':36} "
            f"{median_ratio(rounds, 'wizard step (4 calls)', 'raw wizard step (2 selects, 2 upserts)'):5.2f}  (no target)"
        )
        if old:
            print(f"against the baseline ({args.baseline}), same run (target >= {BASELINE_TARGET:.2f}):")
            print("  | call | ours ops/s | baseline ops/s | ours / baseline |")
            print("  |---|---:|---:|---:|")
            for name in BASELINE_OPS:
                ratio = median_ratio(rounds, name, "baseline " + name)
                ok &= ratio >= BASELINE_TARGET or name == "get_current_step"  # (no target for get_current_step)
                print(
                    f"  | `{name}` | {median_rate(rounds, name):,.0f} | {median_rate(rounds, 'baseline ' + name):,.0f} "
                    f"| {ratio:.2f}{'' if ratio >= BASELINE_TARGET else ' BELOW TARGET'} |"
                )

        # list_sessions: one page, 1k vs 100k sessions in a flow (filled with SQL for speed)
        with pool.connection() as conn:
            for flow, n in [("small", 1000), ("big", args.big)]:
                conn.execute(
                    f'''INSERT INTO "{schema}".sessions (flow_id, session_id, label, state, n_items, items_len,
                                 next_seq, created_at, updated_at)
                    SELECT %s, 's' || g, CASE WHEN g %% 7 = 0 THEN NULL ELSE 'label ' || (g %% 1000) END,
                           '{{}}', 0, 0, 0, 1.7e9 + g, 1.7e9 + g * 2 FROM generate_series(1, %s) g''',
                    (flow, n),
                )
            conn.execute(f'ANALYZE "{schema}".sessions')
        print("list_sessions page of 20 (median ms over 30 calls):")
        for order_by in ("updated_at", "created_at", "label"):
            cells = []
            for flow in ("small", "big"):
                times = []
                for _ in range(30):
                    t = time.perf_counter()
                    store.list_sessions(flow, order_by=order_by, limit=20)
                    times.append((time.perf_counter() - t) * 1000)
                cells.append(statistics.median(times))
            print(
                f"  order_by={order_by:10}  1k: {cells[0]:6.2f} ms   {args.big // 1000}k: {cells[1]:6.2f} ms   "
                f"ratio {cells[1] / cells[0]:4.2f}"
            )
        print(f"targets {'met' if ok else 'NOT met'}; total {time.perf_counter() - t0:.0f}s")
    finally:
        store.close()
        if old:
            old.close()
        with pool.connection() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        pool.close()


if __name__ == "__main__":
    main()
