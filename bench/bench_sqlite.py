"""Benchmark SQLiteWorkflowStateStore against raw `sqlite3` on one persistent connection, in one run.

    python bench/bench_sqlite.py [--rounds 7] [--seconds 0.12] [--big 100000,1000000] [--proposal] [--check]
                                 [--baseline DIR]

Part 1, protocol calls: ops/s of `update_state` (merge one key), `get_state`, `set_current_step` and
`create_session` on a 10-key and on a 64 KB state (the workloads of `bench_memory.py`), next to a raw
`sqlite3` baseline measured in the same run: one persistent autocommit connection to its own file, WAL,
`synchronous=NORMAL` (the store's default, also checked on the store's connection), a table
`(flow_id, session_id, state_json)` with the store's composite primary key (WITHOUT ROWID). Baselines:
- writes: the atomic single-statement upsert that merges one key,
  `INSERT ... ON CONFLICT (flow_id, session_id) DO UPDATE SET state_json = json_set(state_json, '$."plan"', json(?))`;
- reads: a primary-key `SELECT state_json` + `json.loads`.
For information only: the plain whole-row upsert of a pre-encoded text (no merge), and the store's own merge
`UPDATE` written by hand on the store's table (its four indexes and timestamps, no Python around it), which
splits the store's cost into "schema" and "Python". Every write stores a new value (a counter): SQLite skips
writing a page whose bytes do not change, so writing the same value again would time a commit with nothing in it.
Before each timed batch of writes, the batch's file gets an empty WAL (an untimed checkpoint): each batch pays the
checkpoints (which fsync, even with synchronous=NORMAL) of its own WAL pages, not those a previous batch left due.
The published 0.0.3 store (loaded by path, see --v003) is measured alongside for context (its defaults: a new
connection per call, rollback journal, synchronous=FULL).
Writes are timed twice: on one session in a tight loop (as the issue's baseline figures were), and on 1,000
sessions (100 for the 64 KB state) written in turn, next to the same upsert on as many rows. The second is what
an app's traffic looks like: the store keeps its recency index entry (flow_id, updated_ms, session_id) in place
when a session is written again within the same millisecond, which a one-session loop does almost every call
and real traffic almost never does.
Targets: `update_state` (both lines) and `get_state` >= 60% of the raw baseline of the same kind, on both states.
With `--baseline DIR` (a checkout of an earlier commit, see bench/baseline.py), that commit's store is measured in
the same rounds, on its own file filled the same way, each of its calls next to ours: a second table gives ours /
baseline for `get_state`, `update_state` and `set_current_step` (one session, and many in turn), target >= 0.90.
`--proposal` adds, for information, update_state on stores whose connection checkpoints every 10,000 WAL pages
instead of 1,000, and whose WAL checkpoints run in a background thread (prototypes of proposed changes).

Part 2, `list_sessions` first page of 50 (orders updated_at, created_at, label; default direction, newest/last
first) for one flow of 10,000 sessions among 100,000 rows and among 1,000,000 rows (the databases are filled
with `sqlite3` executemany into the store's table, created by the store itself, in one transaction; the store
then opens the files normally; `--big ""` skips this part). Targets: under 2 ms, and independent of the total row
count (1M / 100k <= 1.5).
0.0.3's `list_sessions` (it has no paging: all 10,000 sessions, a scan with LIKE) is timed at 100,000 rows.

The machine is shared and noisy: measurements are interleaved in rounds (each op right next to its baseline,
the order reversed every other round); ops/s is the median round, a ratio the median of the rounds' ratios.
Files live in a temporary folder, removed at the end. Runtime: 35-50 s (of which ~10 s fill the 1M-row file), and
about a third more with --baseline.
"""

import argparse, importlib.util, itertools, json, os, platform, random, sqlite3, statistics, sys, tempfile, threading, time
from datetime import datetime, timezone
from pathlib import Path

import cjm_workflow_state
from cjm_workflow_state.backends import sqlite as sqlite_backend
from cjm_workflow_state.backends.sqlite import _READS, SQLiteWorkflowStateStore
from cjm_workflow_state.core.base import encode_json

from bench_memory import large_state, small_state  # the same 10-key and 64 KB workloads as the in-memory benchmark

TARGET = 0.60  # update_state and get_state: at least 60% of the raw baseline of the same kind
BASELINE_TARGET = 0.90  # get_state, update_state, set_current_step: at least 90% of the --baseline commit's store
LIST_MS = 2.0  # list_sessions first page: under 2 ms ...
LIST_GROWTH = 1.5  # ... and at most 1.5x slower on 1M rows than on 100k rows
FLOW, SID = "signup", "0b6f2c1e-5d1a-4c9b-9a53-6f1d2a7e8c40"
V003_PATH = "/tmp/pub/x/cjm_workflow_state/state_store.py"


# ---- timing helpers ---------------------------------------------------------------------------------------------
def timed(fn, calls: int) -> float:
    "ops/s of `calls` calls of fn()."
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return calls / (time.perf_counter() - t0)


def calibrate(fn, seconds: float) -> int:
    "Calls of fn() that take about `seconds` (after a short warm-up)."
    calls, spent = 0, 0.0
    t0 = time.perf_counter()
    while spent < seconds / 4 or calls < 5:
        fn()
        calls += 1
        spent = time.perf_counter() - t0
    return max(5, int(calls * seconds / spent))


def interleaved(ops: dict, rounds: int, seconds: float) -> dict:
    """Per-round ops/s of each op (name -> (fn, prep)); in each round every op runs once, in reversed order every
    other round; `prep()` (if not None) runs untimed before each batch."""
    calls = {}
    for name, (fn, prep) in ops.items():
        if prep:
            prep()
        calls[name] = calibrate(fn, seconds)
    samples = {name: [] for name in ops}
    names = list(ops)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, prep = ops[name]
            if prep:
                prep()
            samples[name].append(timed(fn, calls[name]))
    return samples


def median_ratio(a: list, b: list) -> float:
    "Median of the per-round ratios a[i] / b[i]."
    return statistics.median(x / y for x, y in zip(a, b))


# ---- the raw baseline and 0.0.3 -------------------------------------------------------------------------------------
def raw_connection(path: str, synchronous: str) -> sqlite3.Connection:
    "One persistent autocommit connection in WAL with the given synchronous level."
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal"
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def pragma(conn: sqlite3.Connection, name: str):
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def load_v003(path: str):
    "The published 0.0.3 state_store module, loaded from its file under another module name (or None)."
    if not path or not Path(path).exists():
        return None
    spec = importlib.util.spec_from_file_location("cjm_wfs_published_003_state_store", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- part 1: protocol calls -----------------------------------------------------------------------------------------
def background_checkpoints(store: SQLiteWorkflowStateStore, stop: threading.Event) -> threading.Thread:
    """--proposal: the store's connection (this thread's) stops checkpointing; a thread checkpoints every 50 ms.
    A prototype, made here and not in the store, of moving WAL checkpoints (which fsync) off the calling thread."""
    store._cx()[0].execute("PRAGMA wal_autocheckpoint=0")

    def run():
        conn = sqlite3.connect(store.path, isolation_level=None, timeout=5)
        while not stop.wait(0.05):
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError:
                pass
        conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def protocol(
    tmp: Path,
    label: str,
    state: dict,
    v003,
    rounds: int,
    seconds: float,
    with_create: bool,
    many: int,
    proposal: bool = False,
    baseline=None,
) -> list:
    """Measure one state size; print its table; return the (name, ratio, ok) of the targets. `baseline`: the store
    class of an earlier commit, measured beside ours (see --baseline)."""
    tag = "small" if with_create else "large"
    text = encode_json(state)
    store = SQLiteWorkflowStateStore(tmp / f"store-{tag}.db")
    creator = SQLiteWorkflowStateStore(tmp / f"create-{tag}.db") if with_create else None  # its own, growing file
    conn_store = store._cx()[0]
    sync_name = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[pragma(conn_store, "synchronous")]
    assert pragma(conn_store, "journal_mode").lower() == "wal", "the store's file is not in WAL mode"
    sess = {store.session_key: SID}
    sids = [f"{i:08d}-5d1a-4c9b-9a53-6f1d2a7e8c40" for i in range(many)]  # sessions written in turn
    for sid in [SID] + sids:
        store.update_state(FLOW, sid, state)
        store.set_current_step(FLOW, sid, "email")

    raw = raw_connection(str(tmp / f"raw-{tag}.db"), sync_name)
    raw.execute(
        "CREATE TABLE raw (flow_id TEXT NOT NULL, session_id TEXT NOT NULL, state_json TEXT NOT NULL, "
        "PRIMARY KEY (flow_id, session_id)) WITHOUT ROWID"
    )
    raw.executemany("INSERT INTO raw VALUES (?, ?, ?)", [(FLOW, sid, text) for sid in [SID] + sids])
    merge_upsert = (
        "INSERT INTO raw VALUES (?, ?, json_object('plan', json(?))) ON CONFLICT (flow_id, session_id) "
        "DO UPDATE SET state_json = json_set(state_json, '$.\"plan\"', json(?))"
    )
    whole_upsert = (
        "INSERT INTO raw VALUES (?, ?, ?) ON CONFLICT (flow_id, session_id) "
        "DO UPDATE SET state_json = excluded.state_json"
    )
    select = "SELECT state_json FROM raw WHERE flow_id = ? AND session_id = ?"
    texts = [encode_json({**state, "plan": i}) for i in range(2)]  # alternate: every write changes the row

    # the store's merge statement by hand, on a file with the store's schema (made by the store itself)
    SQLiteWorkflowStateStore(tmp / f"schema-{tag}.db").close()
    hand = raw_connection(str(tmp / f"schema-{tag}.db"), sync_name)
    now = time.time()
    hand.execute(
        f"INSERT INTO workflow_sessions ({sqlite_backend._COLS}) VALUES (?, ?, 'email', ?, NULL, ?, ?, ?)",
        (FLOW, SID, text, now, now, int(now * 1000)),
    )
    hand_update = (
        "UPDATE workflow_sessions SET state_json = json_set(state_json, '$.\"plan\"', json(?)), "
        "updated_at = ?, updated_ms = ? WHERE flow_id = ? AND session_id = ? AND state_size <= ?"
    )

    counter = itertools.count()
    steps = itertools.cycle(
        ["name", "email", "plan"]
    )  # 3 ids: with 1,000 or 100 sessions in turn, each write changes the step
    turn = itertools.cycle(sids)
    cap = store.max_state_bytes - 64

    def raw_merge(sid=SID):
        v = str(next(counter))
        raw.execute(merge_upsert, (FLOW, sid, v, v))

    def hand_merge():
        t = time.time()
        hand.execute(hand_update, (str(next(counter)), t, int(t * 1000), FLOW, SID, cap))

    # before each timed batch, the batch's file gets an empty WAL: every batch pays for the checkpoints of its own
    # writes (a checkpoint fsyncs, even with synchronous=NORMAL), not for those the previous batch left due
    ckpt = lambda conn: lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c_store, c_raw, c_hand = ckpt(conn_store), ckpt(raw), ckpt(hand)
    ops = {
        "raw merge upsert": (raw_merge, c_raw),
        "update_state": (lambda: store.update_state(FLOW, sess, {"plan": next(counter)}), c_store),
        "set_current_step": (lambda: store.set_current_step(FLOW, sess, next(steps)), c_store),
        f"raw merge upsert, {many:,} rows": (lambda: raw_merge(next(turn)), c_raw),
        f"update_state, {many:,} sessions": (
            lambda: store.update_state(FLOW, next(turn), {"plan": next(counter)}),
            c_store,
        ),
        f"set_current_step, {many:,} sessions": (
            lambda: store.set_current_step(FLOW, next(turn), next(steps)),
            c_store,
        ),
        "raw whole-row upsert": (lambda: raw.execute(whole_upsert, (FLOW, SID, texts[next(counter) & 1])), c_raw),
        "hand merge UPDATE": (hand_merge, c_hand),
        "raw select + loads": (lambda: json.loads(raw.execute(select, (FLOW, SID)).fetchone()[0]), None),
        "get_state": (lambda: store.get_state(FLOW, sess), None),
    }
    if with_create:
        ops["create_session"] = (lambda: creator.create_session(FLOW), ckpt(creator._cx()[0]))
    bg, stop = None, threading.Event()
    if proposal:
        bg = SQLiteWorkflowStateStore(tmp / f"store-bg-{tag}.db")
        for sid in sids:
            bg.update_state(FLOW, sid, state)
        bg_thread = background_checkpoints(bg, stop)
        ops[f"bg update_state, {many:,} sessions"] = (
            lambda: bg.update_state(FLOW, next(turn), {"plan": next(counter)}),
            ckpt(bg._cx()[0]),
        )
        ck = SQLiteWorkflowStateStore(tmp / f"store-ck10k-{tag}.db")
        for sid in sids:
            ck.update_state(FLOW, sid, state)
        ck._cx()[0].execute("PRAGMA wal_autocheckpoint=10000")
        ops[f"ck10k update_state, {many:,} sessions"] = (
            lambda: ck.update_state(FLOW, next(turn), {"plan": next(counter)}),
            ckpt(ck._cx()[0]),
        )
    earlier = None
    if baseline is not None:  # the earlier commit's store: its own file, the same sessions, each call next to ours
        earlier = baseline(tmp / f"baseline-{tag}.db")
        for sid in [SID] + sids:
            earlier.update_state(FLOW, sid, state)
            earlier.set_current_step(FLOW, sid, "email")
        c_earlier = ckpt(earlier._cx()[0])
        theirs = {  # our op name -> the same call on the earlier store
            "update_state": (lambda: earlier.update_state(FLOW, sess, {"plan": next(counter)}), c_earlier),
            "set_current_step": (lambda: earlier.set_current_step(FLOW, sess, next(steps)), c_earlier),
            f"update_state, {many:,} sessions": (
                lambda: earlier.update_state(FLOW, next(turn), {"plan": next(counter)}),
                c_earlier,
            ),
            f"set_current_step, {many:,} sessions": (
                lambda: earlier.set_current_step(FLOW, next(turn), next(steps)),
                c_earlier,
            ),
            "get_state": (lambda: earlier.get_state(FLOW, sess), None),
        }
        paired = {}  # each of its calls right after ours, in every round
        for name, op in ops.items():
            paired[name] = op
            if name in theirs:
                paired["baseline " + name] = theirs[name]
        ops = paired
    old = None
    if v003 is not None:
        old = v003.SQLiteWorkflowStateStore(tmp / f"v003-{tag}.db")
        old.update_state(FLOW, SID, state)
        old.set_current_step(FLOW, SID, "email")
        ops["0.0.3 update_state"] = (lambda: old.update_state(FLOW, SID, {"plan": next(counter)}), None)
        ops["0.0.3 get_state"] = (lambda: old.get_state(FLOW, SID), None)
        ops["0.0.3 set_current_step"] = (lambda: old.set_current_step(FLOW, SID, next(steps)), None)
        if with_create:
            ops["0.0.3 create_session"] = (lambda: old.create_session(FLOW), None)

    samples = interleaved(ops, rounds, seconds)
    if bg is not None:
        stop.set()
        bg_thread.join()
        bg.close()
        ck.close()
    assert store.get_state(FLOW, sess).keys() == state.keys() and store.get_current_step(FLOW, sess) in (
        "name",
        "email",
        "plan",
    )
    med = {k: statistics.median(v) for k, v in samples.items()}

    print(f"\n{label}: {len(text):,} bytes of JSON; store and baseline synchronous={sync_name}, journal_mode=wal")
    print(
        f"  {'store call':<34}{'ops/s':>9}{'µs/op':>8}   {'raw baseline (same run)':<31}{'ops/s':>9}"
        f"{'ratio':>7}   target"
    )
    results = []
    lines = [
        ("update_state", "raw merge upsert", True),
        (f"update_state, {many:,} sessions", f"raw merge upsert, {many:,} rows", True),
        ("get_state", "raw select + loads", True),
        ("set_current_step", "raw merge upsert", False),
        (f"set_current_step, {many:,} sessions", f"raw merge upsert, {many:,} rows", False),
    ]
    if with_create:
        lines.append(("create_session", "raw merge upsert", False))
    for name, base, targeted in lines:
        ratio = median_ratio(samples[name], samples[base])
        verdict = f">= {TARGET:.2f}  {'PASS' if ratio >= TARGET else 'FAIL'}" if targeted else "(no target)"
        if targeted:
            results.append((f"{name} ({tag})", ratio, ratio >= TARGET))
        print(
            f"  {name:<34}{med[name]:>9,.0f}{1e6 / med[name]:>8.1f}   {base:<31}{med[base]:>9,.0f}{ratio:>7.2f}   {verdict}"
        )
    print("  for information:")
    for name, what in [
        ("raw whole-row upsert", "raw whole-row upsert of a pre-encoded text (no merge)"),
        ("hand merge UPDATE", "the store's merge UPDATE by hand on its table (4 indexes)"),
    ]:
        print(
            f"    {what:<60}{med[name]:>9,.0f} ops/s  (update_state = "
            f"{median_ratio(samples['update_state'], samples[name]):.2f} x)"
        )
    if bg is not None:
        base = f"raw merge upsert, {many:,} rows"
        for name, what in [
            (f"ck10k update_state, {many:,} sessions", "wal_autocheckpoint=10000"),
            (f"bg update_state, {many:,} sessions", "checkpoints in a thread"),
        ]:
            print(
                f"    PROTOTYPE {f'update_state, {many:,} sessions, {what}':<50}{med[name]:>9,.0f} ops/s  "
                f"({median_ratio(samples[name], samples[base]):.2f} x {base})"
            )
    if earlier is not None:
        print(f"  ours / baseline ({baseline.__module__.split('.')[0]}), same run:")
        print(f"    {'store call':<34}{'ours ops/s':>11}{'baseline ops/s':>16}{'ratio':>7}   target")
        for name in (
            "get_state",
            "update_state",
            f"update_state, {many:,} sessions",
            "set_current_step",
            f"set_current_step, {many:,} sessions",
        ):
            ratio = median_ratio(samples[name], samples["baseline " + name])
            results.append((f"{name} ({tag}) / baseline", ratio, ratio >= BASELINE_TARGET))
            print(
                f"    {name:<34}{med[name]:>11,.0f}{med['baseline ' + name]:>16,.0f}{ratio:>7.2f}   "
                f">= {BASELINE_TARGET:.2f}  {'PASS' if ratio >= BASELINE_TARGET else 'FAIL'}"
            )
        earlier.close()
    if old is not None:
        for name in ("update_state", "get_state", "set_current_step", "create_session"):
            key = f"0.0.3 {name}"
            if key in med:
                print(
                    f"    0.0.3 {name:<54}{med[key]:>9,.0f} ops/s  (ours: {median_ratio(samples[name], samples[key]):,.1f} x)"
                )
    store.close()
    raw.close()
    hand.close()
    if creator is not None:
        creator.close()
    return results


# ---- part 2: list_sessions ------------------------------------------------------------------------------------------
def fill(path: Path, total: int, per_flow: int = 10_000, seed: int = 3) -> float:
    "Create a store file holding `total` sessions, `per_flow` per flow (FLOW is one flow); return seconds taken."
    t0 = time.perf_counter()
    SQLiteWorkflowStateStore(path).close()  # the store creates its schema (and records its version)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    rng = random.Random(seed)
    flows = sorted([FLOW] + [f"flow-{i:04d}" for i in range(total // per_flow - 1)])
    base = time.time() - 30 * 86400
    indexes = [s for s in sqlite_backend._SCHEMA if s.startswith("CREATE INDEX")]

    def rows():
        for flow in flows:
            ids = sorted(
                "%08x-%04x-4%03x-%04x-%012x"
                % (
                    rng.getrandbits(32),
                    rng.getrandbits(16),
                    rng.getrandbits(12),
                    0x8000 | rng.getrandbits(14),
                    rng.getrandbits(48),
                )
                for _ in range(per_flow)
            )
            for i, sid in enumerate(ids):
                created = base + rng.random() * 20 * 86400
                updated = created + rng.random() * 86400
                label = f"Session {rng.randrange(10**6):06d}" if i % 3 == 0 else None
                yield (
                    flow,
                    sid,
                    "email",
                    '{"name":"user %d","plan":"pro"}' % i,
                    label,
                    created,
                    updated,
                    int(updated * 1000),
                )

    conn.execute("BEGIN")
    for statement in indexes:
        conn.execute("DROP INDEX " + statement.split(" IF NOT EXISTS ")[1].split(" ON ")[0])
    conn.executemany(f"INSERT INTO workflow_sessions ({sqlite_backend._COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows())
    for statement in indexes:
        conn.execute(statement)  # the store's own index definitions, built by sorting
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - t0


def fill_v003(v003, path: Path, total: int, per_flow: int = 10_000, seed: int = 3) -> None:
    "The same sessions in 0.0.3's table (flow_session_key, one-second text timestamps)."
    v003.SQLiteWorkflowStateStore(path)
    conn = sqlite3.connect(path)
    rng = random.Random(seed)
    flows = sorted([FLOW] + [f"flow-{i:04d}" for i in range(total // per_flow - 1)])
    base = time.time() - 30 * 86400
    fmt = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    def rows():
        for flow in flows:
            for i in range(per_flow):
                created = base + rng.random() * 20 * 86400
                label = f"Session {rng.randrange(10**6):06d}" if i % 3 == 0 else None
                yield (
                    f"{flow}:{rng.getrandbits(128):032x}",
                    "email",
                    '{"name": "user %d", "plan": "pro"}' % i,
                    fmt(created),
                    fmt(created + rng.random() * 86400),
                    label,
                )

    with conn:
        conn.executemany(
            "INSERT INTO workflow_state (flow_session_key, current_step, state_json, created_at, "
            "updated_at, label) VALUES (?, ?, ?, ?, ?, ?)",
            rows(),
        )
    conn.close()


def page_ms(fn, calls: int) -> list:
    "Milliseconds of each of `calls` calls of fn()."
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def listing(tmp: Path, sizes: list, v003, rounds: int) -> list:
    "Fill one file per size, time first pages in interleaved rounds, print the table; return target results."
    print(f"\nlist_sessions, first page of 50, one flow of 10,000 sessions (median of {rounds} rounds x 25 calls, ms):")
    stores = {}
    for size in sizes:
        seconds = fill(tmp / f"list-{size}.db", size)
        stores[size] = SQLiteWorkflowStateStore(tmp / f"list-{size}.db")
        mb = sum(p.stat().st_size for p in tmp.glob(f"list-{size}.db*")) / 1e6
        print(
            f"  filled {size:>9,} rows in {seconds:5.1f} s ({mb:,.0f} MB, sqlite3 executemany into the store's table)"
        )
    orders = ["updated_at", "created_at", "label"]
    for s in stores.values():  # warm up: the OS cache and the statement cache
        for o in orders:
            page_ms(lambda: s.list_sessions(FLOW, order_by=o, limit=50), 20)
    first = stores[sizes[0]].list_sessions(FLOW, limit=50)
    assert len(first) == 50 and all(a.updated_at >= b.updated_at for a, b in zip(first, first[1:]))
    samples = {(size, o): [] for size in sizes for o in orders}
    for r in range(rounds):
        for size in sizes if r % 2 == 0 else sizes[::-1]:
            for o in orders:
                samples[size, o].append(
                    statistics.median(page_ms(lambda: stores[size].list_sessions(FLOW, order_by=o, limit=50), 25))
                )
    conn = stores[sizes[-1]]._cx()[0]
    results = []
    small, big = sizes[0], sizes[-1]
    print(
        f"  {'order_by':<12}"
        + "".join(f"{f'{s:,} rows':>16}" for s in sizes)
        + f"{'ratio':>8}   target (< {LIST_MS:g} ms, ratio <= {LIST_GROWTH:g})"
    )
    for o in orders:
        med = {s: statistics.median(samples[s, o]) for s in sizes}
        ratio = median_ratio(samples[big, o], samples[small, o])
        ok = max(med.values()) < LIST_MS and ratio <= LIST_GROWTH
        results.append((f"list_sessions {o}", ratio, ok))
        print(f"  {o:<12}" + "".join(f"{med[s]:>16.3f}" for s in sizes) + f"{ratio:>8.2f}   {'PASS' if ok else 'FAIL'}")
    for o in orders:
        sql = _READS[False]["list", o, True]
        plan = "; ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, (FLOW, 50, 0)))
        print(f"  plan ({o}): {plan}")
    whole = statistics.median(page_ms(lambda: stores[small].list_sessions(FLOW), 5))
    print(f"  for information: all 10,000 sessions of the flow (limit=None) at {small:,} rows: {whole:.1f} ms")
    if v003 is not None:
        path = tmp / f"v003-list-{small}.db"
        fill_v003(v003, path, small)
        old = v003.SQLiteWorkflowStateStore(path)
        assert len(old.list_sessions(FLOW)) == 10_000
        t_old = statistics.median(page_ms(lambda: old.list_sessions(FLOW), 5))
        print(
            f"  0.0.3 list_sessions (no paging: all 10,000 sessions) at {small:,} rows: {t_old:.1f} ms "
            f"(0.0.3 time / ours: first page {t_old / statistics.median(samples[small, 'updated_at']):,.0f} x, "
            f"all 10,000 {t_old / whole:.1f} x)"
        )
    for s in stores.values():
        s.close()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per measurement")
    parser.add_argument("--seconds", type=float, default=0.12, help="length of one timed batch of calls")
    parser.add_argument("--big", default="100000,1000000", help="total rows of the list_sessions databases")
    parser.add_argument("--v003", default=V003_PATH, help="path of 0.0.3's state_store.py ('' to skip)")
    parser.add_argument(
        "--proposal",
        action="store_true",
        help="also time update_state with wal_autocheckpoint=10000, "
        "and with WAL checkpoints in a background thread (prototypes of proposed changes, made here, "
        "not in the store)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--baseline", help="checkout of an earlier commit whose store is measured beside ours (see bench/baseline.py)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    v003 = load_v003(args.v003)
    baseline = None
    if args.baseline:
        from baseline import load_baseline

        baseline = load_baseline(args.baseline).backends.sqlite.SQLiteWorkflowStateStore
    cpu = (
        next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    print(
        f"cjm-workflow-state {cjm_workflow_state.__version__} ({Path(cjm_workflow_state.__file__).parent}); "
        f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}"
    )
    print(
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {platform.node()}: {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs ({cpu}); load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"0.0.3 for context: {'loaded from ' + args.v003 if v003 else 'not found, skipped'}; "
        f"baseline: {args.baseline or 'none'}"
    )
    print(
        f"protocol calls: {args.rounds} interleaved rounds of ~{args.seconds:g} s batches; "
        f"ops/s = median round, ratio = median of the rounds' ratios"
    )
    with tempfile.TemporaryDirectory(prefix="cjm-wfs-bench-sqlite-") as d:
        tmp = Path(d)
        results = protocol(
            tmp,
            "small state (10 keys)",
            small_state(),
            v003,
            args.rounds,
            args.seconds,
            True,
            1000,
            args.proposal,
            baseline,
        )
        results += protocol(
            tmp, "64 KB state", large_state(), v003, args.rounds, args.seconds, False, 100, args.proposal, baseline
        )
        sizes = sorted(int(x) for x in args.big.split(",") if x)
        if sizes:
            results += listing(tmp, sizes, v003, args.rounds)
    missed = [name for name, _, ok in results if not ok]
    print(
        f"\ntargets: {len(results) - len(missed)} of {len(results)} met"
        + (f"; MISSED: {', '.join(missed)}" if missed else "")
        + f"; runtime {time.perf_counter() - started:.0f} s"
    )
    if args.check and missed:
        sys.exit(1)


if __name__ == "__main__":
    main()
