"""The history checker (tests/history.py) over every backend: threads and processes write, rekey, create, delete,
restore and export at once; afterwards every acknowledged write must be where its history allows, nothing refused
anywhere, every unknown outcome all-or-nothing, every export complete.

Each run is a few seconds of load on its own store (a fresh SQLite file, Redis prefix, PostgreSQL table), removed
afterwards; the fault runs go through tests/faultproxy.py (replies dropped after the server acted, cuts, freezes),
with threads, with processes, and (Redis) with a short ttl. The self-tests at the end run the checker on in-memory
stores broken on purpose (a write dropped in 1,000, a rekey that leaves a flow behind, a create retried after it
succeeded, a BackendError for a write that happened, a raw driver error, a stamp older than its write, ...): each
must be caught; and a run in which nothing was acknowledged must fail the check (`checked-nothing`).
"""

import random, threading, time, uuid
from urllib.parse import urlsplit

import pytest

from cjm_workflow_state import open_store
from cjm_workflow_state.core.state_store import InMemoryWorkflowStateStore
from cjm_workflow_state.errors import (
    BackendError,
    InvalidIdError,
    SessionExistsError,
    StateNotSerializableError,
    StateTooLargeError,
    StoreUnavailableError,
)
from faultproxy import FaultProxy
from history import FAILED, UNKNOWN, Workload, check, classify, run_history
from servers import postgres_schema, redis_url, unique_name

MAX_STATE = 256 * 1024
LONG_TTL = 600  # a ttl no session reaches during a run: the ttl code paths run, nothing expires
SHORT_TTL = 1.2  # sessions not written for this long expire during an expiry run
MEMORY_PAUSE = 0.0005  # the in-memory store is so fast that a run would be mostly checking: writers pause


def assert_clean(report, **least):
    "The history holds no violation, and the run did enough of each thing (`least`: stat -> minimum) to mean something."
    assert report.ok, report.text()
    thin = {k: report.stats.get(k, 0) for k, n in least.items() if report.stats.get(k, 0) < n}
    assert not thin, f"the run did too little to check anything: {thin} (wanted {least})\n{report.text()}"


FULL = dict(
    lineage_writes_checked=200, rekeys=10, single_sessions_checked=20, exports_checked=2, export_sessions_expected=20
)
EXPIRY = dict(
    lineage_writes_checked=200, single_sessions_checked=20, sessions_that_must_have_expired=5, exports_checked=2
)


def expiry_workload(**kw) -> Workload:
    "Sessions refreshed by writes must survive a short ttl, idle ones must be gone (no rekeys: see history.py)."
    return Workload(**{**dict(duration=2.4, rekeys=False, idle=30, flow_period=0.3, refresh_pause=0.0), **kw})


def fault_injector(proxy: FaultProxy, every: float = 0.04, seed: int = 0):
    """`during` for run_history: every ~`every` s one fault through `proxy`: a reply dropped after the server acted,
    every connection cut, or a short freeze (all connections hang 0.1 s)."""

    def inject(stop: threading.Event):
        rng = random.Random(seed)
        while not stop.wait(every * (0.5 + rng.random())):
            fault = rng.choice(("drop", "drop", "cut", "freeze"))
            if fault == "drop":
                proxy.drop_replies(1)
            elif fault == "cut":
                proxy.cut_all()
            else:
                proxy.freeze()
                time.sleep(0.1)
                proxy.thaw()
        proxy.thaw()

    return inject


def proxy_for(url: str) -> FaultProxy:
    "A started FaultProxy in front of the server of `url`."
    parts = urlsplit(url)
    return FaultProxy(parts.hostname or "127.0.0.1", parts.port).start()


FAULTS = dict(lineage_writes_checked=100, rekeys=10, single_sessions_checked=20, unknown_writes_checked=5)


# ---- in-memory (threads only: memory:// cannot be shared between processes) -------------------------------------


def check_under_faults(proxy: FaultProxy, least: dict, workload: Workload, **run) -> None:
    "Run `workload` while `proxy` injects faults: the history must be clean, and faults must have reached calls."
    report = check(run_history(workload, during=fault_injector(proxy), **run))
    assert proxy.stats["replies_dropped"] >= 10, proxy.stats
    assert_clean(report, **least)
    assert sum(n for k, n in report.stats.items() if k.endswith(".unknown")), "no fault reached a call"


def test_memory_threads():
    store = InMemoryWorkflowStateStore(ttl=LONG_TTL, max_state_bytes=MAX_STATE)
    assert_clean(check(run_history(Workload(duration=1.5, writers=8, pause=MEMORY_PAUSE), store=store)), **FULL)


def test_memory_expiry():
    store = InMemoryWorkflowStateStore(ttl=SHORT_TTL, max_state_bytes=MAX_STATE)
    assert_clean(check(run_history(expiry_workload(pause=MEMORY_PAUSE), store=store)), **EXPIRY)


# ---- SQLite -----------------------------------------------------------------------------------------------------


def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'history.db'}"


def test_sqlite_threads(tmp_path):
    with open_store(sqlite_url(tmp_path), ttl=LONG_TTL, max_state_bytes=MAX_STATE) as store:
        assert_clean(check(run_history(Workload(writers=8), store=store)), **FULL)


def test_sqlite_processes(tmp_path):
    url, options = sqlite_url(tmp_path), dict(max_state_bytes=MAX_STATE)
    with open_store(url, **options) as store:
        report = check(
            run_history(Workload(duration=2.0, writers=4), store=store, url=url, options=options, processes=3)
        )
        assert_clean(report, **FULL)


def test_sqlite_expiry(tmp_path):
    with open_store(sqlite_url(tmp_path), ttl=SHORT_TTL, max_state_bytes=MAX_STATE) as store:
        assert_clean(check(run_history(expiry_workload(), store=store)), **EXPIRY)


# ---- Redis ------------------------------------------------------------------------------------------------------


def redis_store(**options):
    "(url, options, store) on a fresh prefix; the caller deletes it (store.delete_all())."
    url = redis_url()
    options = dict(prefix=unique_name("history"), max_state_bytes=MAX_STATE, **options)
    return url, options, open_store(url, **options)


def test_redis_threads():
    url, options, store = redis_store(ttl=LONG_TTL)
    try:
        assert_clean(check(run_history(Workload(writers=8), store=store)), **FULL)
    finally:
        store.delete_all()
        store.close()


def test_redis_processes():
    url, options, store = redis_store()
    try:
        report = check(
            run_history(Workload(duration=2.0, writers=4), store=store, url=url, options=options, processes=3)
        )
        assert_clean(report, **FULL)
    finally:
        store.delete_all()
        store.close()


def test_redis_expiry():
    url, options, store = redis_store(ttl=SHORT_TTL)
    try:
        assert_clean(check(run_history(expiry_workload(), store=store)), **EXPIRY)
    finally:
        store.delete_all()
        store.close()


def test_redis_faults():
    "Replies dropped after the server acted, cut connections, freezes: unknown outcomes are all-or-nothing."
    url, options, direct = redis_store(ttl=LONG_TTL)
    proxy = proxy_for(url)
    store = open_store(proxy.url(url), **options, socket_timeout=2)
    try:
        check_under_faults(proxy, FAULTS, Workload(writers=6), store=store, final_store=direct)
    finally:
        store.close()
        proxy.close()
        direct.delete_all()
        direct.close()


def test_redis_expiry_faults():
    "A short ttl with dropped replies, cuts and freezes: refreshed sessions survive, idle ones expire, unknowns all-or-nothing."
    url, options, direct = redis_store(ttl=SHORT_TTL)
    proxy = proxy_for(url)
    store = open_store(proxy.url(url), **options, socket_timeout=2)
    try:
        check_under_faults(proxy, EXPIRY, expiry_workload(writers=6), store=store, final_store=direct)
    finally:
        store.close()
        proxy.close()
        direct.delete_all()
        direct.close()


def test_redis_processes_faults():
    "Worker processes, each with its own client, through one fault proxy."
    url, options, direct = redis_store()
    proxy = proxy_for(url)
    try:
        check_under_faults(
            proxy,
            FAULTS,
            Workload(duration=2.0, writers=4),
            store=direct,
            url=proxy.url(url),
            options=dict(options, socket_timeout=2),
            processes=2,
        )
    finally:
        proxy.close()
        direct.delete_all()
        direct.close()


# ---- PostgreSQL -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg():
    "(url, schema) for this module; the schema is dropped afterwards."
    with postgres_schema("history") as url_and_schema:
        yield url_and_schema


def postgres_store(pg, **options):
    "(url, options, store) on a fresh table of the module's schema."
    url, schema = pg
    options = {
        **dict(schema=schema, table=f"t_{uuid.uuid4().hex[:12]}", max_state_bytes=MAX_STATE, max_size=12),
        **options,
    }
    return url, options, open_store(url, **options)


def test_postgres_threads(pg):
    "8 writer threads and many rekeys with a ttl: the race of issue 9 item 1 (writes lost during a rekey)."
    url, options, store = postgres_store(pg, ttl=LONG_TTL)
    with store:
        assert_clean(check(run_history(Workload(writers=8), store=store)), **FULL)


def test_postgres_processes(pg):
    url, options, store = postgres_store(pg, max_size=4)
    with store:
        report = check(
            run_history(Workload(duration=2.0, writers=4), store=store, url=url, options=options, processes=3)
        )
        assert_clean(report, **FULL)


def test_postgres_expiry(pg):
    url, options, store = postgres_store(pg, ttl=SHORT_TTL)
    with store:
        assert_clean(check(run_history(expiry_workload(), store=store)), **EXPIRY)


def test_postgres_faults(pg):
    "Replies dropped after the server acted, cut connections, freezes: unknown outcomes are all-or-nothing."
    url, options, direct = postgres_store(pg, ttl=LONG_TTL)
    proxy = proxy_for(url)
    store = open_store(proxy.url(url), **options)
    try:
        direct.get_state("warm-up", "table")  # creates the table before the faults
        check_under_faults(proxy, FAULTS, Workload(writers=6), store=store, final_store=direct)
    finally:
        store.close()
        proxy.close()
        direct.close()


def test_postgres_processes_faults(pg):
    "Worker processes, each with its own pool, through one fault proxy."
    url, options, direct = postgres_store(pg, max_size=4)
    proxy = proxy_for(url)
    try:
        direct.get_state("warm-up", "table")  # creates the table before the faults
        check_under_faults(
            proxy,
            FAULTS,
            Workload(duration=2.0, writers=4),
            store=direct,
            url=proxy.url(url),
            options=options,
            processes=2,
        )
    finally:
        proxy.close()
        direct.close()


# ---- the checker catches what it must: in-memory stores broken on purpose ------------------------------------------


class DropsWrites(InMemoryWorkflowStateStore):
    "Acknowledges one update in 1,000 without writing it."

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls, self.dropped, self.count_lock = 0, [], threading.Lock()

    def _merge(self, flow_id, session_id, encoded, into, remove, cutoff):
        with self.count_lock:
            self.calls += 1
            drop = self.calls % 1000 == 500
        if drop:
            self.dropped.append((session_id, sorted(encoded)))
            return
        super()._merge(flow_id, session_id, encoded, into, remove, cutoff)


def test_checker_catches_one_lost_write_in_1000():
    "Every dropped write to a session nobody deletes (a lineage or resident: '.L' in its id) is reported by key."
    store = DropsWrites(ttl=LONG_TTL, max_state_bytes=MAX_STATE)
    report = check(run_history(Workload(duration=1.5, exporters=0, pause=MEMORY_PAUSE), store=store))
    kept = [keys for sid, keys in store.dropped if ".L" in sid]
    assert kept, f"the run was too short to drop a lineage write: {store.calls} updates"
    assert not report.ok
    text = "\n".join(v.message for v in report.violations)
    unreported = [keys for keys in kept if not all(k in text for k in keys if ".big" not in k and ".bad" not in k)]
    assert not unreported, f"dropped writes the checker did not report: {unreported}\n{report.text()}"


class FlakyButCorrect(InMemoryWorkflowStateStore):
    "Correct, but one write in 30 raises StoreUnavailableError, before or after it acted (its outcome is unknown)."

    def __init__(self, **kw):
        super().__init__(**kw)
        self.rng, self.rng_lock, self.raised = random.Random(1), threading.Lock(), 0

    def _flaky(name):
        def call(self, *args, **kw):
            with self.rng_lock:
                fail, before = self.rng.random() < 1 / 30, self.rng.random() < 0.5
            if fail:
                self.raised += 1
            if fail and before:
                raise StoreUnavailableError("flaky: nothing done")
            result = getattr(InMemoryWorkflowStateStore, name)(self, *args, **kw)
            if fail:
                raise StoreUnavailableError("flaky: done, reply lost")
            return result

        return call

    _merge, _set_step, _delete, _create = _flaky("_merge"), _flaky("_set_step"), _flaky("_delete"), _flaky("_create")
    _set_label, _rekey, _restore = _flaky("_set_label"), _flaky("_rekey"), _flaky("_restore")


def test_checker_accepts_unknown_outcomes():
    "A correct store whose calls sometimes fail with an unknown outcome (before or after acting) passes the check."
    store = FlakyButCorrect(ttl=LONG_TTL, max_state_bytes=MAX_STATE)
    report = check(run_history(Workload(duration=1.5, exporters=0, pause=MEMORY_PAUSE), store=store))
    assert store.raised >= 50 and report.stats.get("rekey.unknown", 0) >= 2, (store.raised, report.stats)
    assert_clean(report, lineage_writes_checked=200, rekeys=10, single_sessions_checked=20)


class LeavesAFlowBehind(InMemoryWorkflowStateStore):
    "Every 5th rekey moves every flow but one: not atomic."

    n = 0

    def _rekey(self, old, new, cutoff):
        with self._lock:
            self.n += 1
            kept = None
            if self.n % 5 == 0:
                kept = next(((f, s.pop(old)) for f, s in self._flows.items() if old in s), None)
            moved = super()._rekey(old, new, cutoff)
            if kept:
                self._flows[kept[0]][old] = kept[1]
            return moved


class LosesWritesDuringRekey(InMemoryWorkflowStateStore):
    "Issue 9 item 1's shape: move, then (another statement) delete what the old id holds, writes in between included."

    def _rekey(self, old, new, cutoff):
        moved = super()._rekey(old, new, cutoff)
        time.sleep(0.002)
        with self._lock:
            for sessions in self._flows.values():
                sessions.pop(old, None)
        return moved


class RetriesCreate(InMemoryWorkflowStateStore):
    "Every 10th create_session runs twice, as a retry after a lost reply does: it creates, then reports the id taken."

    n = 0

    def _set_fields(self, flow_id, session_id, fields, when, cutoff):
        if when != "absent":
            return super()._set_fields(flow_id, session_id, fields, when, cutoff)
        self.n += 1
        created = super()._set_fields(flow_id, session_id, fields, when, cutoff)
        return created if self.n % 10 else super()._set_fields(flow_id, session_id, fields, when, cutoff)


class DeleteMisreports(InMemoryWorkflowStateStore):
    "Every 10th delete_session deletes and returns False, as a retried delete does."

    n = 0

    def _delete(self, flow_id, session_id, cutoff, expired_only=False):
        self.n += 1
        deleted = super()._delete(flow_id, session_id, cutoff, expired_only)
        return deleted if self.n % 10 else False


class OffsetExport(InMemoryWorkflowStateStore):
    "export_sessions paging by limit/offset (main before issue 9 item 4): deletes shift sessions past the reader."

    def export_sessions(self, flow_id=None, page_size=500):
        for flow in [flow_id] if flow_id is not None else self.list_flows():
            offset = 0
            while True:
                page = self.list_sessions(flow, order_by="created_at", descending=False, limit=page_size, offset=offset)
                for s in page:
                    yield dict(
                        flow_id=flow,
                        session_id=s.session_id,
                        label=s.label,
                        current_step=s.current_step,
                        created_ts=s.created_ts,
                        updated_ts=s.updated_ts,
                        state=self.get_state(flow, s.session_id),
                    )
                if len(page) < page_size:
                    break
                offset += page_size


class RacyStepMerge(InMemoryWorkflowStateStore):
    "update_step_state as read, merge, write back: concurrent merges into one step's dict lose each other."

    def update_step_state(self, flow_id, sess, step_id, updates):
        merged = {**self.get_step_state(flow_id, sess, step_id), **updates}
        time.sleep(0.0002)
        self.update_state(flow_id, sess, {f"_step_{step_id}": merged})


class _EveryNth(InMemoryWorkflowStateStore):
    "Base of the stores below: `hit()` is true for every `every`-th write (thread-safe)."

    every = 40

    def __init__(self, **kw):
        super().__init__(**kw)
        self.writes, self.hits, self.count_lock = 0, 0, threading.Lock()

    def hit(self) -> bool:
        with self.count_lock:
            self.writes += 1
            hit = self.writes % self.every == 0
            self.hits += hit
            return hit


class WritesThenRefuses(_EveryNth):
    "Every 40th update or step acts, then raises BackendError: it reports a definite failure for a write that happened."

    def _merge(self, *args, **kw):
        super()._merge(*args, **kw)
        if self.hit():
            raise BackendError("refused (but it was written)")

    def _set_fields(self, *args):
        written = super()._set_fields(*args)
        if self.hit():
            raise BackendError("refused (but it was written)")
        return written


class RefusesValidWrites(_EveryNth):
    "Every 40th update raises BackendError and writes nothing: a healthy store refusing a valid call."

    def _merge(self, *args, **kw):
        if self.hit():
            raise BackendError("refused")
        super()._merge(*args, **kw)


class RaisesRawErrors(_EveryNth):
    "Every 40th update raises a raw OSError (a driver error leaking out) before acting."

    def _merge(self, *args, **kw):
        if self.hit():
            raise OSError(32, "Broken pipe")
        super()._merge(*args, **kw)


class StampsEarly(_EveryNth):
    "Every 10th write stamps the session 50 ms before it happened (as a time read before waiting for a lock does)."

    every = 10

    def _touch(self, flow_id, session_id, rec):
        super()._touch(flow_id, session_id, rec)
        if self.hit():
            rec.updated -= 0.05


@pytest.mark.parametrize(
    "broken, caught",
    [
        (WritesThenRefuses, {"refused-present", "wrong-state"}),  # found by what was written, not by the refusal itself
        (RefusesValidWrites, {"refused-valid"}),
        (RaisesRawErrors, {"raw-error"}),
        (StampsEarly, {"stale-stamp"}),
        (LeavesAFlowBehind, {"misplaced", "lost"}),
        (LosesWritesDuringRekey, {"lost"}),
        (RetriesCreate, {"impossible-outcome"}),
        (DeleteMisreports, {"impossible-outcome"}),
        (OffsetExport, {"export-missed", "export-duplicated"}),
        (RacyStepMerge, {"lost"}),
    ],
    ids=lambda x: x.__name__ if isinstance(x, type) else None,
)
def test_checker_catches(broken, caught):
    report = check(
        run_history(
            Workload(duration=0.6, writers=6, pause=MEMORY_PAUSE), store=broken(ttl=LONG_TTL, max_state_bytes=MAX_STATE)
        )
    )
    assert caught & set(report.kinds()), f"{broken.__name__} went unnoticed:\n{report.text()}"


def test_classify():
    "StoreUnavailableError alone leaves the outcome open; our other classes and the base's plain errors are definite."
    assert classify(StoreUnavailableError("reply lost")) == (UNKNOWN, False)
    for exc in (
        BackendError("full"),
        InvalidIdError("id"),
        StateNotSerializableError("k"),
        StateTooLargeError("big"),
        SessionExistsError("taken"),
        ValueError("bad ttl"),
        TypeError("not a mapping"),
    ):
        assert classify(exc) == (FAILED, False), exc
    for exc in (
        OSError(32, "Broken pipe"),
        RuntimeError("driver"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "x"),
        KeyError("k"),
    ):
        assert classify(exc) == (UNKNOWN, True), exc  # raw: a violation, and it promises nothing


class NeverWrites(InMemoryWorkflowStateStore):
    "Every write raises StoreUnavailableError before acting (a server down for the whole run); reads work."

    def _down(self, *args, **kw):
        raise StoreUnavailableError("down: nothing done")

    _merge = _set_fields = _delete = _rekey = _restore = _down


def test_checker_fails_a_run_that_checks_nothing():
    "Unknown outcomes are allowed, but a run in which nothing was acknowledged proves nothing: the checker says so."
    report = check(
        run_history(
            Workload(duration=0.5, writers=2, pause=MEMORY_PAUSE),
            store=NeverWrites(ttl=LONG_TTL, max_state_bytes=MAX_STATE),
        )
    )
    assert set(report.kinds()) == {"checked-nothing"}, report.text()
    message = report.violations[0].message
    for check_name in (
        "lineage_writes_checked",
        "lineage_steps_checked",
        "rekey_results_checked",
        "sessions_explained",
        "stamps_checked",
        "export_sessions_expected",
        "listing_checked",
        "final_export_checked",
    ):
        assert check_name in message, message


def racing_rekey_history(stamp_of_old_id: float):
    """A hand-made history: w0#2 and w1#1 write lineage 0's old id while rk#1 moves it. w0#2's write moved with the
    rekey; w1#1's waited for it and then made the old id anew, stamped `stamp_of_old_id`."""
    from history import History, Workload, lineage_id
    from dataclasses import asdict

    plan = dict(asdict(Workload(writers=2, lineages=1)), tag="hT", workers=[])
    old, new = lineage_id("hT", 0, 0), lineage_id("hT", 0, 1)

    def write(i, w, sid, key, t0, t1):
        return dict(
            id=f"{w}#{i}",
            worker=w,
            kind="update",
            flow="f",
            sid=sid,
            lineage=0,
            keys={key: [i]},
            outcome="ok",
            result=None,
            t0=t0,
            t1=t1,
        )

    ops = [
        write(1, "w0", old, "a", 0.5, 0.6),
        dict(
            id="rk#1", worker="rk", kind="rekey", sid=old, target=new, lineage=0, outcome="ok", result=1, t0=1.0, t1=1.1
        ),
        write(1, "w1", old, "c", 1.0, 1.3),  # its statement waited for the rekey's row lock, then inserted anew
        write(2, "w0", old, "b", 1.05, 1.08),
    ]  # it got the lock before the rekey: it moved
    h = History(plan, ops, [], None, 0.0, 2.0)
    h.final = {
        ("f", old): dict(
            present=True, state={"c": [1]}, step=None, label=None, updated_ts=stamp_of_old_id, t0=1.9, t1=1.9
        ),
        ("f", new): dict(
            present=True, state={"a": [1], "b": [2]}, step=None, label=None, updated_ts=1.06, t0=1.9, t1=1.9
        ),
    }
    h.listed, h.final_export = set(h.final), [["f", s, r["state"]] for (_, s), r in h.final.items()]
    return h


def test_stamps_count_where_a_write_landed():
    "A write that moved with a rekey says nothing of its old id's stamp; the write that made the old id anew does."
    assert "stale-stamp" not in check(racing_rekey_history(stamp_of_old_id=1.0)).kinds()  # w1#1's own time
    assert "stale-stamp" in check(racing_rekey_history(stamp_of_old_id=0.9)).kinds()  # older than w1#1 began
