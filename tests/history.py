"""A history checker for workflow state stores.

Worker threads (and, for stores that several processes can share, worker processes) run operations against a store
at the same time and record each one with its outcome:

  ok       the call returned normally: it happened, exactly once.
  failed   it raised a definite error: BackendError (a refusal retrying will not fix), InvalidIdError,
           StateNotSerializableError, StateTooLargeError, SessionExistsError, or a plain ValueError/TypeError from the
           base's checks: nothing was written (a store that wrote anyway is caught: the write is found).
  unknown  it raised StoreUnavailableError (unreachable, or outcome unknown), or a raw driver/OS error (a violation of
           its own: `raw-error`): it may or may not have happened, but never half.

After the run, `read_final` reads every session that could hold something, and `check` holds the final state and
every export taken meanwhile against what the outcomes allow. The workload keeps the invariants simple and strong:

  lineages   sessions written by every writer (update_state of unique keys; set_current_step by the first writer) in
             flows that keep appearing over time, while the rekeyer moves them to fresh ids (rekey_session). Nobody
             deletes them. A writer reads the lineage's current id from shared memory before each write, so a write can
             land on an id that is being (or was just) rekeyed away: the checker knows where each write may end up.
  residents  sessions of the export flow, written in turn by the refresher; never deleted nor rekeyed.
  churn      sessions each owned by one worker: create_session, writes, step, label, a second create (refused), then
             delete_session or clear_state. Some are created at set-up, interleaved with residents (and idle
             sessions) in creation order, and deleted during the run: exports that page by offset then skip residents.
  restore    sessions each owned by one worker: restore_session (replacing the whole session), then update_state.
  idle       (runs with a short ttl) sessions written once at set-up: by the end they must have expired.
  exports    export_sessions during the run: the export flow in small pages with a slow reader, and all flows.

The checks:
  - every acknowledged write is present, once, whole, with its value, where it may be (its id, or where rekeys that
    were acknowledged or unknown took it; never left behind by an acknowledged rekey that started after it ended);
  - nothing refused is present; every unknown write is fully present (as above) or fully absent; an unknown rekey
    moved all or nothing;
  - each single-owner session ends in a state some sequence of the outcomes produces, and every create/delete/label
    result agrees with that model (a create refused for a fresh id, a delete that reports False for a session that
    existed are violations);
  - sessions idle for longer than ttl are gone; those written within ttl are there;
  - every export contains each session that was live for the whole export exactly once, with every write
    acknowledged before the export began, and nothing the history cannot explain;
  - at the end (unless sessions may expire meanwhile), listing and a final export agree with direct reads;
  - every check the workload calls for examined something (`checked-nothing` otherwise: a run that checks nothing
    proves nothing), and every valid call succeeded or had an unknown outcome (`refused-valid`: a definite error,
    e.g. BackendError, for a call a healthy store must accept).

Times are `time.monotonic()` (system-wide on Linux, so comparable between processes of one host).
"""

import bisect, itertools, json, os, queue, random, tempfile, threading, time, traceback, uuid
import multiprocessing as mp
from dataclasses import dataclass, field, asdict
from typing import Any, Callable, Dict, List, Optional, Tuple

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"
EXPORT_FLOW = "exp"  # the flow of residents, churn, restored and idle sessions
MAX_BRANCHES = 256  # possible states of one single-owner session before the model gives up on it


# ---------------------------------------------------------------------------------------------------------------
# Workload and recording
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Workload:
    "What runs, and for how long."

    duration: float = 2.5  # seconds of load
    writers: int = 4  # threads writing to the lineages
    lineages: int = 3  # shared sessions written by every writer
    rekeys: bool = True  # a rekeyer moves the lineages to fresh ids all the time
    rekey_pause: float = 0.005  # seconds between two rekeys
    flow_period: float = 0.1  # a new flow appears this often (writes go to the newest or the one before)
    residents: int = 40  # never-deleted sessions of the export flow, written in turn by the refresher
    refresh_pause: float = 0.002  # seconds between two refresher writes
    churners: int = 2  # workers creating, writing and deleting their own sessions
    precreated: int = 60  # churn sessions created at set-up (interleaved with residents), deleted during the run
    restorers: int = 1  # workers restoring their own sessions
    exporters: int = 1  # workers exporting all the time
    idle: int = 0  # sessions written once at set-up (for runs with a short ttl)
    refused_every: int = 97  # a writer's every n-th call is an update the store must refuse
    max_state_bytes: int = 256 * 1024  # the store's max_state_bytes (an oversize update just exceeds it)
    step_every: int = 5  # the first writer's every n-th call is set_current_step
    pause: float = 0.0  # seconds each writer, the refresher, churner and restorer sleep after a call (fast stores)
    seed: int = 0

    def workers(self) -> List[dict]:
        "One dict per worker: its name, role and parameters."
        out = [dict(name=f"w{i}", role="writer", step=(i == 0)) for i in range(self.writers)]
        if self.rekeys and self.lineages:
            out.append(dict(name="rk", role="rekeyer"))
        if self.residents:
            out.append(dict(name="rf", role="refresher"))
        out += [dict(name=f"c{i}", role="churn") for i in range(self.churners)]
        out += [dict(name=f"r{i}", role="restorer") for i in range(self.restorers)]
        out += [dict(name=f"x{i}", role="exporter") for i in range(self.exporters)]
        for i, w in enumerate(out):
            w["seed"] = self.seed * 1000 + i
        return out


def classify(exc: BaseException) -> Tuple[str, bool]:
    """(outcome, raw) of a call that raised `exc`; raw: not one of the store's exception classes (a violation of its
    own, see the SPEC: every failure is one of ours).

    Only StoreUnavailableError leaves the outcome open. Our other classes are definite, and so is a plain
    ValueError/TypeError from the base's checks: the call wrote nothing (BackendError: a refusal retrying will not
    fix). Recording them as failed lets the checker catch a store that reports failure for a write that happened. A raw
    driver/OS error (UnicodeEncodeError and other ValueError subclasses included) promises nothing: its outcome is
    unknown and the checker reports it as `raw-error`."""
    from cjm_workflow_state.errors import (
        BackendError,
        InvalidIdError,
        SessionExistsError,
        StateNotSerializableError,
        StateTooLargeError,
        StoreUnavailableError,
        WorkflowStateError,
    )

    if isinstance(exc, StoreUnavailableError):
        return UNKNOWN, False
    if isinstance(
        exc, (BackendError, InvalidIdError, StateNotSerializableError, StateTooLargeError, SessionExistsError)
    ):
        return FAILED, False
    if type(exc) in (ValueError, TypeError):
        return FAILED, False
    if isinstance(exc, WorkflowStateError):
        return UNKNOWN, False  # a class of ours added later: it promises nothing
    return UNKNOWN, True


class Recorder:
    "Runs a worker's calls and records each one as a dict (JSON-able, so processes can send it back)."

    def __init__(self, worker: str):
        self.worker, self.ops, self.n = worker, [], 0

    def call(self, kind: str, fn: Callable, **info) -> dict:
        "Run `fn()`, record it as operation `kind` (with `info`: flow, sid, keys, ...), return the record."
        self.n += 1
        op = dict(id=f"{self.worker}#{self.n}", worker=self.worker, kind=kind, **info)
        op["t0"] = time.monotonic()
        try:
            op["result"], op["outcome"] = fn(), OK
        except Exception as e:
            op["outcome"], op["raw"] = classify(e)
            op["error"] = f"{type(e).__module__}.{type(e).__name__}: {e}"[:400]
        op["t1"] = time.monotonic()
        self.ops.append(op)
        return op


def flat(state: dict):
    "(key, value) of a state, with the members of step dicts (`_step_x`) as `_step_x/member`."
    for k, v in state.items():
        if k.startswith("_step_") and isinstance(v, dict):
            for ik, iv in v.items():
                yield f"{k}/{ik}", iv
        else:
            yield k, v


def lineage_id(tag: str, lineage: int, k: int) -> str:
    "The k-th id of a lineage (k = 0 is where it starts; the rekeyer moves it to k = 1, 2, ...)."
    return f"{tag}.L{lineage}.{k}"


def value_of(op_n: int, j: int, worker: str) -> list:
    "A write's value: unique, JSON, with a non-ASCII character."
    return [op_n, j, f"{worker}\u00e9\u2713"]


class _Unserialisable:
    "A value no store can store as JSON."


# ---------------------------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------------------------


class Ctx:
    "What every worker of one run shares: the plan, the lineages' current ids, the clock."

    def __init__(self, plan: dict, current, t_start: float):
        self.plan, self.current, self.t_start = plan, current, t_start
        self.deadline = t_start + plan["duration"]
        self.tag = plan["tag"]

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def lineage_sid(self, lineage: int) -> str:
        "The id a writer should write lineage `lineage` under now."
        return lineage_id(self.tag, lineage, self.current[lineage] if lineage < self.plan["lineages"] else 0)

    def flow_now(self, rng: random.Random) -> str:
        "The newest flow, or the one before (flows keep appearing, so old ids often lack the flow a write goes to)."
        epoch = int((time.monotonic() - self.t_start) / self.plan["flow_period"])
        return f"fl:{max(0, epoch - rng.choice((0, 0, 1)))}"


def _writer(store, rec: Recorder, ctx: Ctx, w: dict, rng: random.Random):
    p, n = ctx.plan, 0
    while ctx.running():
        n += 1
        lineage = rng.randrange(p["lineages"])
        flow = ctx.flow_now(rng)
        sid = ctx.lineage_sid(lineage)
        info = dict(flow=flow, sid=sid, lineage=lineage)
        if w["step"] and n % p["step_every"] == 0:
            step = f"s.{rec.worker}.{n}"
            rec.call("set_step", lambda: store.set_current_step(flow, sid, step), step=step, **info)
        elif n % 7 == 3:  # merged into the step's own dict (a nested merge: concurrent ones must not lose each other)
            inner = {f"k.{rec.worker}.{n}.{j}": value_of(n, j, rec.worker) for j in range(2)}
            rec.call(
                "update",
                lambda: store.update_step_state(flow, sid, "st", inner),
                keys={f"_step_st/{k}": v for k, v in inner.items()},
                **info,
            )
        elif n % p["refused_every"] == 0:  # the store must refuse it whole: neither key may appear
            good = f"k.{rec.worker}.{n}.0"
            if (n // p["refused_every"]) % 2:
                updates, why = (
                    {good: value_of(n, 0, rec.worker), f"k.{rec.worker}.{n}.bad": _Unserialisable()},
                    "unserialisable",
                )
            else:
                updates, why = (
                    {good: value_of(n, 0, rec.worker), f"k.{rec.worker}.{n}.big": "x" * p["max_state_bytes"]},
                    "too large",
                )
            rec.call(
                "update",
                lambda: store.update_state(flow, sid, updates),
                keys={good: value_of(n, 0, rec.worker)},
                must_refuse=why,
                **info,
            )
        else:
            keys = {f"k.{rec.worker}.{n}.{j}": value_of(n, j, rec.worker) for j in range(2)}
            rec.call("update", lambda: store.update_state(flow, sid, keys), keys=keys, **info)
        if p["pause"]:
            time.sleep(p["pause"])


def _rekeyer(store, rec: Recorder, ctx: Ctx, w: dict, rng: random.Random):
    p = ctx.plan
    next_k = [1] * p["lineages"]
    for lineage in itertools.cycle(range(p["lineages"])):
        if not ctx.running():
            break
        old, new = lineage_id(ctx.tag, lineage, ctx.current[lineage]), lineage_id(ctx.tag, lineage, next_k[lineage])
        next_k[lineage] += 1  # a refused target is never used again: nothing may ever appear under it
        op = rec.call("rekey", lambda: store.rekey_session(old, new), sid=old, target=new, lineage=lineage)
        if op["outcome"] != FAILED:
            ctx.current[lineage] = next_k[lineage] - 1  # unknown: carry on with the new id
        time.sleep(p["rekey_pause"] * rng.random() * 2)


def _refresher(store, rec: Recorder, ctx: Ctx, w: dict, rng: random.Random):
    p, n = ctx.plan, 0
    for lineage in itertools.cycle(range(p["lineages"], p["lineages"] + p["residents"])):
        if not ctx.running():
            break
        n += 1
        sid, keys = lineage_id(ctx.tag, lineage, 0), {f"k.{rec.worker}.{n}.0": value_of(n, 0, rec.worker)}
        rec.call(
            "update",
            lambda: store.update_state(EXPORT_FLOW, sid, keys),
            keys=keys,
            flow=EXPORT_FLOW,
            sid=sid,
            lineage=lineage,
        )
        time.sleep(p["refresh_pause"] + p["pause"])


def _churn(store, rec: Recorder, ctx: Ctx, w: dict, rng: random.Random):
    p, f = ctx.plan, EXPORT_FLOW
    precreated = list(p["precreated_of"].get(rec.worker, []))
    n = 0
    while ctx.running():
        n += 1
        if precreated and rng.random() < 0.6:  # delete a session created at set-up
            sid = precreated.pop(0)
            if n % 2:
                rec.call("delete", lambda: store.delete_session(f, sid), flow=f, sid=sid)
            else:
                rec.call("clear", lambda: store.clear_state(f, sid), flow=f, sid=sid)
            continue
        sid = f"{ctx.tag}.C{rec.worker}.{n}"
        label = f"label {sid} \u2603"
        rec.call("create", lambda: store.create_session(f, sid, label), flow=f, sid=sid, label=label)
        for j in range(2):
            keys = {f"k.{rec.worker}.{n}.{j}": value_of(n, j, rec.worker)}
            rec.call("update", lambda: store.update_state(f, sid, keys), flow=f, sid=sid, keys=keys)
        step = f"s.{rec.worker}.{n}"
        rec.call("set_step", lambda: store.set_current_step(f, sid, step), flow=f, sid=sid, step=step)
        label2 = f"relabel {sid}"
        rec.call("set_label", lambda: store.set_session_label(f, sid, label2), flow=f, sid=sid, label=label2)
        rec.call("create", lambda: store.create_session(f, sid, "again"), flow=f, sid=sid, label="again")
        r = rng.random()
        if r < 0.4:
            rec.call("delete", lambda: store.delete_session(f, sid), flow=f, sid=sid)
        elif r < 0.8:
            rec.call("clear", lambda: store.clear_state(f, sid), flow=f, sid=sid)
        if r >= 0.4:
            time.sleep(0.002)  # leave some alive
        if p["pause"]:
            time.sleep(p["pause"] * 8)


def _restorer(store, rec: Recorder, ctx: Ctx, w: dict, rng: random.Random):
    p, f, n, sid = ctx.plan, EXPORT_FLOW, 0, None
    while ctx.running():
        n += 1
        if sid is None or rng.random() < 0.5:
            sid = f"{ctx.tag}.R{rec.worker}.{n}"  # else restore over it
        state = {f"k.{rec.worker}.{n}.{j}": value_of(n, j, rec.worker) for j in range(3)}
        step, label = f"s.{rec.worker}.{n}", f"restored {n}"
        created = time.time() - (3600 * rng.random() if n % 2 else 0)  # half sort before the residents by creation
        rec.call(
            "restore",
            lambda: store.restore_session(
                f, sid, state, current_step=step, label=label, created_ts=created, updated_ts=time.time()
            ),
            flow=f,
            sid=sid,
            state=state,
            step=step,
            label=label,
        )
        keys = {f"k.{rec.worker}.{n}.u": value_of(n, 9, rec.worker)}
        rec.call("update", lambda: store.update_state(f, sid, keys), flow=f, sid=sid, keys=keys)
        time.sleep(0.003 + p["pause"] * 2)


def _exporter(store, rec: Recorder, ctx: Ctx, w: dict, rng: random.Random):
    n = 0
    while ctx.running():
        n += 1
        flow = None if n % 4 == 0 else EXPORT_FLOW
        page_size, slow = (rng.randint(20, 60), False) if flow is None else (rng.randint(3, 9), n % 2 == 1)

        def export():
            out = []
            for r in store.export_sessions(flow, page_size=page_size):
                out.append([r["flow_id"], r["session_id"], r["state"]])
                if slow:
                    time.sleep(0.0005)  # a backup writing to a slow disk
            return out

        rec.call("export", export, flow=flow, page_size=page_size, slow=slow)


ROLES = dict(
    writer=_writer, rekeyer=_rekeyer, refresher=_refresher, churn=_churn, restorer=_restorer, exporter=_exporter
)


def _run_workers(store, plan: dict, names: List[str], current, t_start: float) -> Tuple[List[dict], List[str]]:
    "Run the named workers as threads on `store`; return (their records, harness errors)."
    ctx, specs = Ctx(plan, current, t_start), {w["name"]: w for w in plan["workers"]}
    recorders, errors = [Recorder(name) for name in names], []

    def run(rec):
        w = specs[rec.worker]
        try:
            ROLES[w["role"]](store, rec, ctx, w, random.Random(w["seed"]))
        except BaseException:
            errors.append(f"worker {rec.worker} crashed:\n{traceback.format_exc()}")

    threads = [threading.Thread(target=run, args=(r,), name=f"history-{r.worker}") for r in recorders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(plan["duration"] + 120)
    errors += [f"worker {t.name} did not finish" for t in threads if t.is_alive()]
    return [op for r in recorders for op in r.ops], errors


def _process_main(plan_json: str, names: List[str], current, t_start, ready, go, log_path: str):
    "One worker process: its own store from the URL, its workers as threads; the records go to `log_path`."
    ops, errors = [], []
    try:
        from cjm_workflow_state import open_store

        plan = json.loads(plan_json)
        store = open_store(plan["url"], **plan["options"])
        try:
            store.get_state("warm-up", f"{plan['tag']}.warm")  # connect before the start
            ready.put(os.getpid())
            if not go.wait(120):
                raise RuntimeError("no start signal")
            ops, errors = _run_workers(store, plan, names, current, t_start.value)
        finally:
            store.close()
    except BaseException:
        errors.append(f"process {os.getpid()} ({names}) crashed:\n{traceback.format_exc()}")
        ready.put(-1)
    with open(log_path, "w") as f:
        json.dump(dict(ops=ops, errors=errors), f)


# ---------------------------------------------------------------------------------------------------------------
# Running a history
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class History:
    "Everything a run recorded, and the final reads."

    plan: dict
    ops: List[dict]
    errors: List[str]  # harness errors: crashed workers or processes
    ttl: Optional[float]
    t_start: float = 0.0
    t_end: float = 0.0
    final: Dict[Tuple[str, str], dict] = field(
        default_factory=dict
    )  # (flow, sid) -> present, state, step, label, t0, t1
    listed: Optional[set] = None  # (flow, sid) pairs listed by list_flows/list_sessions at the end
    final_export: Optional[list] = None  # export_sessions() at the end
    wall_offset: float = 0.0  # time.time() - time.monotonic(): turns operation times into the stores' timestamps


def _setup(store, plan: dict) -> List[dict]:
    "Residents, pre-created churn sessions and idle sessions, interleaved in creation order."
    rec, tag, L = Recorder("setup"), plan["tag"], plan["lineages"]
    n_churn = max(1, len([w for w in plan["workers"] if w["role"] == "churn"]))
    plan["precreated_of"] = {}
    for i in range(max(plan["residents"], plan["precreated"], plan["idle"])):
        if i < plan["residents"]:
            sid, keys = lineage_id(tag, L + i, 0), {f"k.setup.{i}.r": value_of(i, 0, "setup")}
            rec.call(
                "update",
                lambda: store.update_state(EXPORT_FLOW, sid, keys),
                flow=EXPORT_FLOW,
                sid=sid,
                lineage=L + i,
                keys=keys,
            )
        if i < plan["precreated"]:
            sid, owner = f"{tag}.P{i}", f"c{i % n_churn}"
            rec.call(
                "create",
                lambda: store.create_session(EXPORT_FLOW, sid, f"pre {i}"),
                flow=EXPORT_FLOW,
                sid=sid,
                label=f"pre {i}",
            )
            plan["precreated_of"].setdefault(owner, []).append(sid)
        if i < plan["idle"]:
            sid, keys = f"{tag}.I{i}", {f"k.setup.{i}.i": value_of(i, 1, "setup")}
            rec.call("update", lambda: store.update_state(EXPORT_FLOW, sid, keys), flow=EXPORT_FLOW, sid=sid, keys=keys)
    return rec.ops  # the checker holds them to the same rules as the rest


def run_history(
    workload: Workload,
    *,
    store=None,
    url: Optional[str] = None,
    options: Optional[dict] = None,
    processes: int = 0,
    final_store=None,
    during: Optional[Callable[[threading.Event], None]] = None,
) -> History:
    """Run `workload` and read the final state.

    Threads: pass `store` (shared by every worker thread). Processes: pass `url` and `options` (each process opens its
    own store with `open_store(url, **options)`), `processes` > 0, and `store` for the set-up. `final_store` (default:
    `store`) reads the final state; give one on the server directly when `url` goes through a fault proxy.
    `during(stop)` runs in a thread while the load runs (fault injection); it must return soon after `stop` is set."""
    plan = asdict(workload)
    plan.update(tag=f"h{uuid.uuid4().hex[:8]}", workers=workload.workers(), url=url, options=options or {})
    if store is None:
        raise ValueError("pass the store used for the set-up (and by the threads)")
    ttl = getattr(store, "ttl", None)
    ops = _setup(store, plan)
    ctx = mp.get_context("spawn")
    current = ctx.Array("i", max(1, workload.lineages))
    t_start = ctx.Value("d", 0.0)
    names = [w["name"] for w in plan["workers"]]
    errors: List[str] = []
    stop = threading.Event()
    injector = threading.Thread(target=during, args=(stop,), name="history-faults") if during else None
    if processes:
        if not url:
            raise ValueError("processes need the store's url")
        ready, go = ctx.Queue(), ctx.Event()
        tmp = tempfile.mkdtemp(prefix="history-")
        groups = [names[i::processes] for i in range(processes)]
        logs = [os.path.join(tmp, f"p{i}.json") for i in range(processes)]
        procs = [
            ctx.Process(target=_process_main, args=(json.dumps(plan), g, current, t_start, ready, go, log))
            for g, log in zip(groups, logs)
        ]
        for pr in procs:
            pr.start()
        try:
            for _ in procs:
                if ready.get(timeout=120) == -1:
                    break
        except queue.Empty:
            errors.append("worker processes did not start within 120 s")
        t_start.value = time.monotonic() + 0.05
        go.set()
        if injector:
            injector.start()
        for pr in procs:
            pr.join(workload.duration + 180)
        for pr, log in zip(procs, logs):
            if pr.is_alive():
                pr.kill()
                errors.append(f"process {pr.pid} did not finish")
            elif pr.exitcode != 0:
                errors.append(f"process {pr.pid} exited with {pr.exitcode}")
            try:
                with open(log) as f:
                    data = json.load(f)
                ops += data["ops"]
                errors += data["errors"]
            except (OSError, ValueError) as e:
                errors.append(f"no log from process {pr.pid}: {e}")
            try:
                os.unlink(log)
            except OSError:
                pass
        os.rmdir(tmp)
    else:
        t_start.value = time.monotonic()
        if injector:
            injector.start()
        more, errs = _run_workers(store, plan, names, current, t_start.value)
        ops += more
        errors += errs
    stop.set()
    if injector:
        injector.join(60)
    history = History(plan, ops, errors, ttl, t_start.value, time.monotonic())
    read_final(final_store or store, history)
    return history


def read_final(store, history: History) -> None:
    """Read every session that could hold something: what list_flows/list_sessions show, every session an operation
    named, and every place the checker may expect a lineage write; then export everything (the checker compares it
    with the reads unless sessions may expire meanwhile)."""
    pairs = set()
    listed = set()
    try:
        for flow in store.list_flows():
            for s in store.list_sessions(flow):
                listed.add((flow, s.session_id))
    except Exception as e:
        history.errors.append(f"final listing raised {type(e).__name__}: {e}")
    pairs |= listed
    model = _Lineages(history.ops)
    for op in history.ops:
        if op.get("flow") is not None and op.get("sid"):
            pairs.add((op["flow"], op["sid"]))
        if op["kind"] in ("update", "set_step") and op.get("lineage") is not None:
            pairs |= {(op["flow"], s) for s in model.allowed(op)}
        if op["kind"] == "rekey" and op["outcome"] != OK:  # where a refused or unknown rekey may have put data
            pairs |= {(f, t) for f in model.flows_of[op["lineage"]] for t in (op["sid"], op["target"])}
    for flow, sid in sorted(pairs):
        t0 = time.monotonic()
        summary = store.get_session_summary(flow, sid)
        state = store.get_state(flow, sid) if summary is not None else {}
        if summary is not None and state == {} and store.get_session_summary(flow, sid) is None:
            # it expired between the two reads (its summary, then an empty state): it is absent by the window's end,
            # which the expiry model allows; recording "present with no keys" would mix two moments into one state
            summary = None
        history.final[(flow, sid)] = dict(
            present=summary is not None,
            state=state,
            step=summary.current_step if summary else None,
            label=summary.label if summary else None,
            updated_ts=summary.updated_ts if summary else None,
            t0=t0,
            t1=time.monotonic(),
        )
    history.wall_offset = time.time() - time.monotonic()
    history.listed = listed
    try:
        history.final_export = [[r["flow_id"], r["session_id"], r["state"]] for r in store.export_sessions()]
    except Exception as e:
        history.errors.append(f"final export raised {type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------------------------------


class _Lineages:
    "Where a lineage write may end up, from the rekeys' outcomes and times."

    def __init__(self, ops: List[dict]):
        self.moves: Dict[str, dict] = {}  # source id -> the rekey (ok or unknown) that moved it
        self.flows_of: Dict[int, set] = {}
        for op in ops:
            if op["kind"] == "rekey" and op["outcome"] != FAILED:
                self.moves[op["sid"]] = op
            if op.get("lineage") is not None and op.get("flow"):
                self.flows_of.setdefault(op["lineage"], set()).add(op["flow"])
        for op in ops:
            if op["kind"] == "rekey":
                self.flows_of.setdefault(op["lineage"], set())
        self._settled: Dict[str, frozenset] = {}

    def settled(self, sid: str) -> frozenset:
        "Where data that sits at `sid` before the next rekey from `sid` starts may end up."
        out, chain = None, []
        while True:  # iterative: chains are long
            if sid in self._settled:
                out = self._settled[sid]
                break
            move = self.moves.get(sid)
            if move is None:
                out = frozenset((sid,))
                self._settled[sid] = out
                break
            chain.append(sid)
            sid = move["target"]
        for s in reversed(chain):
            move = self.moves[s]
            out = out if move["outcome"] == OK else out | {s}
            self._settled[s] = out
        return out

    def allowed(self, op: dict) -> frozenset:
        "Where a write (update or set_step) to a lineage may end up."
        sid = op["sid"]
        move = self.moves.get(sid)
        if move is None:
            return frozenset((sid,))
        if move["outcome"] == UNKNOWN:
            return frozenset((sid,)) | self.settled(move["target"])  # it may act any time
        if op["t0"] > move["t1"]:
            return frozenset((sid,))  # the write came after the rekey
        if op["outcome"] == OK and op["t1"] < move["t0"]:
            return self.settled(sid)  # it was there when the rekey began
        return frozenset((sid,)) | self.settled(move["target"])  # concurrent with the rekey (or unknown: may act late)


@dataclass
class Violation:
    kind: str
    message: str


@dataclass
class Report:
    violations: List[Violation]
    stats: Dict[str, Any]
    notes: List[str]

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for v in self.violations:
            out[v.kind] = out.get(v.kind, 0) + 1
        return out

    def text(self, limit: int = 30) -> str:
        lines = [
            f"history check: {len(self.violations)} violation(s) {self.kinds()}",
            "stats: " + ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items())),
        ]
        lines += [f"note: {n}" for n in self.notes[:10]]
        shown: Dict[str, int] = {}
        for v in self.violations:  # a few of each kind, then the rest counted
            shown[v.kind] = shown.get(v.kind, 0) + 1
            if shown[v.kind] <= max(3, limit // max(1, len(self.kinds()))):
                lines.append(f"- [{v.kind}] {v.message}")
        hidden = len(self.violations) - sum(min(c, max(3, limit // max(1, len(self.kinds())))) for c in shown.values())
        if hidden > 0:
            lines.append(f"... and {hidden} more")
        return "\n".join(lines)


def _desc(op: dict) -> str:
    "One operation, for a report."
    t = f"[{op['t0']:.3f}..{op['t1']:.3f}]"
    keys = sorted(op.get("keys", {}))
    what = {
        "update": lambda: (
            f"update_state({op.get('flow')!r}, {op.get('sid')!r}, keys={keys})"
            if not any("/" in k for k in keys)
            else f"update_step_state({op.get('flow')!r}, {op.get('sid')!r}, 'st', keys={keys})"
        ),
        "set_step": lambda: f"set_current_step({op.get('flow')!r}, {op.get('sid')!r}, {op.get('step')!r})",
        "rekey": lambda: f"rekey_session({op.get('sid')!r}, {op.get('target')!r})",
        "create": lambda: f"create_session({op.get('flow')!r}, {op.get('sid')!r}, {op.get('label')!r})",
        "delete": lambda: f"delete_session({op.get('flow')!r}, {op.get('sid')!r})",
        "clear": lambda: f"clear_state({op.get('flow')!r}, {op.get('sid')!r})",
        "set_label": lambda: f"set_session_label({op.get('flow')!r}, {op.get('sid')!r}, {op.get('label')!r})",
        "restore": lambda: (
            f"restore_session({op.get('flow')!r}, {op.get('sid')!r}, keys={sorted(op.get('state', {}))})"
        ),
        "export": lambda: f"export_sessions({op.get('flow')!r}, page_size={op.get('page_size')})",
    }.get(op["kind"], lambda: op["kind"])()
    out = (
        op["outcome"]
        if op["outcome"] != OK
        else f"ok -> {op.get('result')!r}"
        if op["kind"] not in ("export",)
        else "ok"
    )
    if op.get("error"):
        out += f" ({op['error'][:160]})"
    return f"{op['id']} {what} {t} {out}"


def _jv(v) -> str:
    return json.dumps(v, sort_keys=True)


class _Branch(tuple):
    "One possible state of a single-owner session: (present, state items, step, label, last write t0, t1)."


def check(history: History, margin: float = 0.25) -> Report:
    """Check `history` (see the module docstring); `margin`: seconds of slack on ttl comparisons."""
    return _Checker(history, margin).run()


class _Checker:
    def __init__(self, history: History, margin: float):
        self.h, self.margin, self.ttl = history, margin, history.ttl
        self.v: List[Violation] = []
        self.notes: List[str] = []
        self.stats: Dict[str, Any] = {}
        self.ops = sorted(history.ops, key=lambda op: op["t0"])
        self.lin = _Lineages(self.ops)
        self.refused_into = {op["target"]: op for op in self.ops if op["kind"] == "rekey" and op["outcome"] == FAILED}
        last_read = max((r["t1"] for r in history.final.values()), default=history.t_end)
        first = min((op["t0"] for op in history.ops), default=history.t_start)
        # expiry matters when a session could sit unwritten for ttl between the first operation and the last read
        self.expiry = self.ttl is not None and self.ttl - margin < last_read - first + 1
        self.keys_at: Dict[str, List[Tuple[str, str, Any]]] = {}  # key -> [(flow, sid, value)] in the final state
        for (flow, sid), r in history.final.items():
            for k, val in flat(r["state"]):
                self.keys_at.setdefault(k, []).append((flow, sid, val))

    def bad(self, kind: str, message: str):
        self.v.append(Violation(kind, message))

    def run(self) -> Report:
        h = self.h
        for e in h.errors:
            self.bad("harness", e)
        for op in self.ops:
            if op.get("raw"):
                self.bad("raw-error", f"{_desc(op)}: not one of the store's exception classes")
            elif op["outcome"] == FAILED and op["kind"] not in ("create", "rekey") and not op.get("must_refuse"):
                # a valid call on a healthy server; creates are judged by the model, rekeys by check_rekeys
                self.bad("refused-valid", f"{_desc(op)}: a valid call was refused with a definite error")
        counts: Dict[str, int] = {}
        for op in self.ops:
            counts[f"{op['kind']}.{op['outcome']}"] = counts.get(f"{op['kind']}.{op['outcome']}", 0) + 1
        self.stats.update(counts)
        self.stats["sessions_read"] = len(h.final)
        if self.expiry and any(op["kind"] == "rekey" for op in self.ops):
            raise ValueError("the checker does not model expiry together with rekeys: use a ttl longer than the run")
        self.check_lineages()
        self.check_singles()
        self.check_unexplained()
        self.index_sessions()
        self.check_exports()
        self.check_stamps()
        self.check_end()
        self.check_examined()
        return Report(self.v, self.stats, self.notes)

    def required(self) -> Dict[str, bool]:
        "stat -> whether this run's workload must give it something to examine (a check over nothing proves nothing)."
        p = self.h.plan
        lineage = bool(p["writers"] and p["lineages"])
        return {
            "lineage_writes_checked": lineage,  # acknowledged/unknown writes found where their history allows
            "refused_writes_checked": lineage,  # updates the store must refuse, looked for everywhere
            "lineage_steps_checked": lineage,  # the last acknowledged step of a lineage's flow, found
            "rekeys": lineage and p["rekeys"],
            "rekey_results_checked": lineage and p["rekeys"],  # a rekey's count against the flows it had to move
            "single_sessions_checked": bool(p["churners"] or p["restorers"] or p["precreated"] or p["idle"]),
            "sessions_explained": True,  # present sessions whose every key an operation wrote
            "stamps_checked": True,  # updated_ts against the last acknowledged write
            "exports_checked": bool(p["exporters"]),
            "export_sessions_expected": bool(p["exporters"]),  # sessions an export had to hold
            "export_keys_compared": bool(p["exporters"]) and not self.expiry,  # their acknowledged values
            "listing_checked": not self.expiry,  # final listing against direct reads
            "final_export_checked": not self.expiry,  # final export against direct reads
            "sessions_that_must_have_expired": self.expiry and bool(p["idle"]),
        }

    def check_examined(self):
        "Every check this workload calls for examined something: else the run proves nothing, whatever it reports."
        empty = [name for name, needed in self.required().items() if needed and not self.stats.get(name)]
        if empty:
            self.bad(
                "checked-nothing",
                f"these checks examined nothing: {empty} (a store that acknowledges "
                f"nothing, or a run too short or too faulty to mean anything)",
            )

    def check_stamps(self, slack: float = 0.01):
        """A write stamps the session with its time: the final updated_ts is never older than the start of the last
        acknowledged write to that session (else it expires early and sorts wrongly). A lineage write counts where it
        ended: a write racing a rekey may have moved with it (or not), and its old id may since hold only a later
        write's data, stamped by that write. Sessions an unknown restore may have replaced late (with the older
        timestamps it carries) are left out."""
        last: Dict[Tuple[str, str], dict] = {}
        late_restores = {
            (op["flow"], op["sid"]) for op in self.ops if op["kind"] == "restore" and op["outcome"] == UNKNOWN
        }
        for op in self.ops:
            if (
                op["outcome"] == OK
                and op["kind"] in ("update", "set_step", "create", "restore")
                or (op["kind"] == "set_label" and op["outcome"] == OK and op.get("result"))
            ):
                key = self.landed(op)
                if key is None or key in late_restores:
                    continue
                if key not in last or op["t0"] > last[key]["t0"]:
                    last[key] = op
        stale, checked = [], 0
        for key, op in last.items():
            r = self.h.final.get(key)
            if not r or not r["present"] or r.get("updated_ts") is None:
                continue
            checked += 1
            lag = op["t0"] + self.h.wall_offset - r["updated_ts"]
            if lag > slack:
                stale.append((lag, key, op))
        self.stats["stamps_checked"] = checked
        stale.sort(key=lambda x: x[0], reverse=True)
        for lag, key, op in stale[:5]:
            self.bad(
                "stale-stamp",
                f"{key} reads updated_ts {lag:.3f} s older than the start of its last acknowledged "
                f"write {_desc(op)} ({len(stale)} sessions so)",
            )

    def landed(self, op: dict) -> Optional[Tuple[str, str]]:
        "The (flow, sid) an acknowledged write ended in; None when that cannot be known (or it is nowhere)."
        if op.get("lineage") is None:
            return op["flow"], op["sid"]
        if op["kind"] == "update":
            places = {(f, s) for k in op["keys"] for f, s, _ in self.keys_at.get(k, [])}
            return places.pop() if len(places) == 1 else None
        allowed = self.lin.allowed(op)  # set_step: its value may since be overwritten, so only an unmoved one counts
        return (op["flow"], next(iter(allowed))) if len(allowed) == 1 else None

    # -- lineages ------------------------------------------------------------------------------------------------
    def excused(self, flow: str, sid: str, op: dict) -> bool:
        "True when expiry may have removed what `op` wrote to (flow, sid) by the time it was read (short-ttl runs)."
        if not self.expiry:
            return False
        gaps = self._gaps.get((flow, sid))
        writes = self.refreshes.get((flow, sid), [])
        read = self.h.final.get((flow, sid))
        end = read["t1"] if read else self.h.t_end
        limit = self.ttl - self.margin
        if gaps is None:  # gaps[i]: some gap after writes[i] lets the session expire before the read
            gaps = [False] * len(writes)
            for i in range(len(writes) - 1, -1, -1):
                nxt = writes[i + 1]["t1"] if i + 1 < len(writes) else end
                gaps[i] = nxt - writes[i]["t0"] > limit or (i + 1 < len(writes) and gaps[i + 1])
            self._gaps[(flow, sid)] = gaps
        j = bisect.bisect_left(self._starts[(flow, sid)], op["t0"]) if writes else 0
        if j == len(writes):
            return end - op["t0"] > limit
        return writes[j]["t1"] - op["t0"] > limit or gaps[j]

    def check_lineages(self):
        lineage_ops = [op for op in self.ops if op.get("lineage") is not None]
        self.refreshes: Dict[Tuple[str, str], List[dict]] = {}
        for op in lineage_ops:
            if op["kind"] in ("update", "set_step") and op["outcome"] == OK:
                self.refreshes.setdefault((op["flow"], op["sid"]), []).append(op)
        for writes in self.refreshes.values():
            writes.sort(key=lambda w: w["t0"])
        self._starts = {k: [w["t0"] for w in writes] for k, writes in self.refreshes.items()}
        self._gaps: Dict[Tuple[str, str], List[bool]] = {}
        checked = excused = n_refused = unknown = 0
        for op in lineage_ops:
            if op["kind"] != "update":
                continue
            if op.get("must_refuse") and op["outcome"] == OK:
                self.bad("accepted-invalid", f"{_desc(op)}: the update was {op['must_refuse']} and must be refused")
            allowed = self.lin.allowed(op)
            found = {k: self.keys_at.get(k, []) for k in op["keys"]}
            if op["outcome"] == FAILED:
                n_refused += 1
                for k, locs in found.items():
                    if locs:
                        self.bad(
                            "refused-present",
                            f"{_desc(op)}: key {k!r} of this refused write is present "
                            f"under {[(f, s) for f, s, _ in locs]}",
                        )
                continue
            present = [k for k, locs in found.items() if locs]
            unknown += op["outcome"] == UNKNOWN
            if op["outcome"] == UNKNOWN and not present:
                continue
            if op["outcome"] == UNKNOWN and len(present) < len(found):
                self.bad("torn-unknown", f"{_desc(op)}: only {present} of its keys are present (all or none)")
            if self.excused(op["flow"], op["sid"], op) and not present:
                excused += 1
                continue
            checked += 1
            where = set()
            for k, locs in found.items():
                if not locs:
                    if op["outcome"] == OK:
                        self.bad(
                            "lost",
                            f"{_desc(op)}: acknowledged key {k!r} is missing; expected under "
                            f"{self.places(op['flow'], allowed)}{self.rekey_context(op)}",
                        )
                    continue
                if len(locs) > 1:
                    self.bad(
                        "duplicated",
                        f"{_desc(op)}: key {k!r} is present {len(locs)} times: {[(f, s) for f, s, _ in locs]}",
                    )
                for f, s, val in locs:
                    where.add((f, s))
                    if f != op["flow"] or s not in allowed:
                        refused = self.refused_into.get(s)
                        why = f" ({s!r} is the target of a refused rekey: {_desc(refused)})" if refused else ""
                        self.bad(
                            "misplaced",
                            f"{_desc(op)}: key {k!r} is under ({f!r}, {s!r}); it may only be under "
                            f"{self.places(op['flow'], allowed)}{why}",
                        )
                    elif _jv(val) != _jv(op["keys"][k]):
                        self.bad(
                            "wrong-value",
                            f"{_desc(op)}: key {k!r} under ({f!r}, {s!r}) reads {val!r}, written {op['keys'][k]!r}",
                        )
            if len(where) > 1:
                self.bad("torn", f"{_desc(op)}: its keys are split over {sorted(where)}")
        self.stats["lineage_writes_checked"] = checked
        self.stats["lineage_writes_excused_by_expiry"] = excused
        self.stats["refused_writes_checked"] = n_refused
        self.stats["unknown_writes_checked"] = unknown  # each all-or-nothing, and where it may be if present
        self.check_rekeys(lineage_ops)
        self.check_lineage_steps(lineage_ops)

    def rekey_context(self, op: dict) -> str:
        "The rekey that moved the write's session id, if any, for a report."
        move = self.lin.moves.get(op["sid"])
        if move is None:
            return ""
        when = "before it" if op["t1"] < move["t0"] else "after it" if op["t0"] > move["t1"] else "while it ran"
        return f"; it was written {when}: {_desc(move)}"

    def places(self, flow: str, sids) -> str:
        sids = sorted(sids)
        shown = ", ".join(repr(s) for s in sids[:4]) + (f" (+{len(sids) - 4} more)" if len(sids) > 4 else "")
        return f"flow {flow!r}, session {shown}"

    def check_rekeys(self, lineage_ops: List[dict]):
        writes_to: Dict[str, List[dict]] = {}
        for op in lineage_ops:
            if op["kind"] == "update" and op["outcome"] == OK:
                writes_to.setdefault(op["sid"], []).append(op)
        attempts: Dict[str, List[dict]] = {}
        for op in lineage_ops:
            if op["kind"] == "rekey":
                attempts.setdefault(op["sid"], []).append(op)
        n = results = unknown = 0
        for op in lineage_ops:
            if op["kind"] != "rekey":
                continue
            n += 1
            before = [w for w in writes_to.get(op["sid"], []) if w["t1"] < op["t0"]]
            earlier = [r["t1"] for r in attempts.get(op["sid"], []) if r["t1"] < op["t0"]]
            if earlier:
                before = [w for w in before if w["t0"] > max(earlier)]  # not what an earlier attempt took
            if op["outcome"] == FAILED:
                self.bad(
                    "rekey-refused", f"{_desc(op)}: refused, though the target id is fresh (nothing ever wrote it)"
                )
            elif op["outcome"] == OK:
                flows = {w["flow"] for w in before}
                results += bool(flows)
                if not isinstance(op.get("result"), int) or op["result"] < len(flows):
                    self.bad(
                        "rekey-count",
                        f"{_desc(op)}: returned {op.get('result')!r}, but the old id held at least "
                        f"{len(flows)} flows when it began",
                    )
            elif op["outcome"] == UNKNOWN:  # all flows or none
                unknown += bool(before)
                stayed = moved = 0
                for w in before:
                    for k in w["keys"]:
                        for f, s, _ in self.keys_at.get(k, []):
                            if s == op["sid"]:
                                stayed += 1
                            else:
                                moved += 1
                if stayed and moved:
                    self.bad(
                        "torn-rekey",
                        f"{_desc(op)}: of the data the old id held when it began, {stayed} keys "
                        f"stayed and {moved} moved (all or nothing)",
                    )
        self.stats["rekeys"] = n
        self.stats["rekey_results_checked"] = results
        self.stats["unknown_rekeys_checked"] = unknown  # moved all or nothing of what the old id held

    def check_lineage_steps(self, lineage_ops: List[dict]):
        steps = [op for op in lineage_ops if op["kind"] == "set_step"]
        by_value = {op["step"]: op for op in steps}
        for (flow, sid), r in self.h.final.items():
            if not r["present"] or r["step"] is None or not sid.startswith(self.h.plan["tag"] + ".L"):
                continue
            op = by_value.get(r["step"])
            if op is None:
                self.bad(
                    "unexplained-step",
                    f"({flow!r}, {sid!r}) has step {r['step']!r}, which no lineage set_current_step wrote",
                )
            elif op["outcome"] == FAILED or op["flow"] != flow or sid not in self.lin.allowed(op):
                self.bad("misplaced-step", f"({flow!r}, {sid!r}) has step {r['step']!r} from {_desc(op)}")
        last: Dict[Tuple[int, str], List[dict]] = {}
        for op in steps:
            last.setdefault((op["lineage"], op["flow"]), []).append(op)
        checked = 0
        for (lineage, flow), ops in last.items():
            acked = [i for i, op in enumerate(ops) if op["outcome"] == OK]
            if not acked:
                continue
            candidates = [ops[acked[-1]]] + [op for op in ops if op["outcome"] == UNKNOWN]  # unknowns may act late
            if any(self.excused(flow, op["sid"], op) for op in candidates):
                continue
            checked += 1
            if not any(
                self.h.final.get((flow, s), {}).get("step") == op["step"]
                for op in candidates
                for s in self.lin.allowed(op)
            ):
                op = candidates[0]
                self.bad(
                    "lost-step",
                    f"{_desc(op)}: the last acknowledged step of lineage {lineage} in flow {flow!r} "
                    f"is nowhere; expected under {self.places(flow, self.lin.allowed(op))}, found "
                    f"{[(s, self.h.final.get((flow, s), {}).get('step')) for s in sorted(self.lin.allowed(op))][:4]}",
                )
        self.stats["lineage_steps_checked"] = checked

    # -- single-owner sessions -----------------------------------------------------------------------------------
    def check_singles(self):
        by_session: Dict[Tuple[str, str], List[dict]] = {}
        for op in self.ops:
            if op.get("lineage") is None and op["kind"] not in ("export", "rekey"):
                by_session.setdefault((op["flow"], op["sid"]), []).append(op)
        checked = gave_up = 0
        for key, ops in by_session.items():
            result = self.model(key, ops)
            if result is None:
                gave_up += 1
            elif result:
                checked += 1
        self.stats["single_sessions_checked"] = checked
        if gave_up:
            self.notes.append(f"{gave_up} single-owner sessions had too many possible states to check")

    def expire(self, branches: set, t0: float, t1: float) -> set:
        "Apply expiry before an operation (or read) during [t0, t1]: must-have-expired and may-have-expired."
        if not self.expiry:
            return branches
        out = set()
        for b in branches:
            present, state, step, label, w0, w1, pending = b
            gone = (False, (), None, None, 0.0, 0.0, pending)
            if present and t0 - w1 > self.ttl + self.margin:
                out.add(gone)
                continue
            out.add(b)
            if present and t1 - w0 > self.ttl - self.margin:
                out.add(gone)
        return out

    @staticmethod
    def apply(op: dict, b: tuple, t: Tuple[float, float]) -> Optional[tuple]:
        """The state after `op` takes effect on state `b` at a time within `t` (None: the op would fail on `b`, so it
        cannot have taken effect; results are not checked here)."""
        present, state, step, label, w0, w1, pending = b
        o = op["kind"]
        if o == "create":
            return None if present else (True, (), None, op["label"], *t, pending)
        if o == "update":
            merged = dict(state)
            merged.update({k: _jv(v) for k, v in op["keys"].items()})
            return (True, tuple(sorted(merged.items())), step, label if present else None, *t, pending)
        if o == "set_step":
            return (True, state, op["step"], label if present else None, *t, pending)
        if o == "restore":
            return (
                True,
                tuple(sorted((k, _jv(v)) for k, v in op["state"].items())),
                op["step"],
                op["label"],
                *t,
                pending,
            )
        if o == "set_label":
            return (True, state, step, op["label"], *t, pending) if present else None
        if o in ("delete", "clear"):
            return (False, (), None, None, 0.0, 0.0, pending)
        raise ValueError(f"no model of {o}")

    def settle(self, branches: set, ops: List[dict], now: float) -> set:
        """Let any pending (unknown) operation take effect now, in any order: an unknown call may act late, e.g. a
        statement the server still runs after the connection to it was cut."""
        out, todo = set(branches), list(branches)
        while todo:
            b = todo.pop()
            for i in b[6]:
                op = ops[i]
                fired = self.apply(op, b[:6] + (b[6] - {i},), (op["t0"], now))
                for nb in ((fired,) if fired else ()) + (b[:6] + (b[6] - {i},),):  # acts, or never will
                    if nb not in out:
                        out.add(nb)
                        todo.append(nb)
            if len(out) > MAX_BRANCHES:
                break
        return out

    def model(self, key, ops: List[dict]) -> Optional[bool]:
        """Replay a single-owner session's operations over every possible state; report contradictions. True: checked
        (to the end, or up to a contradiction); False: never read at the end; None: too many possible states."""
        flow, sid = key
        absent = (False, (), None, None, 0.0, 0.0, frozenset())
        branches = {absent}
        for i, op in enumerate(ops):
            branches = self.expire(self.settle(branches, ops, op["t1"]), op["t0"], op["t1"])
            if len(branches) > MAX_BRANCHES:
                return None
            out, o = op["outcome"], op["kind"]
            nxt = set()
            for b in branches:
                if out == UNKNOWN:  # pending: settle() lets it act at any later point
                    nxt.add(b[:6] + (b[6] | {i},))
                    continue
                present = b[0]
                if out == FAILED:  # nothing written; only a create is refused for a reason the model can check
                    if o != "create" or present:
                        nxt.add(b)
                    continue
                if o == "create" and present:
                    continue  # created although it existed
                if o in ("set_label", "delete") and bool(op.get("result")) != present:
                    continue  # result contradicts b
                after = self.apply(op, b, (op["t0"], op["t1"]))
                nxt.add(after if after is not None else b)
            if not nxt:
                self.bad(
                    "impossible-outcome",
                    f"{_desc(op)}: no state the earlier outcomes allow explains this "
                    f"outcome (the session was {self.describe(branches)}); history: {self.trail(ops, op)}",
                )
                return True
            branches = nxt
        r = self.h.final.get(key)
        if r is None:
            return False
        branches = self.settle(branches, ops, r["t1"])
        if len(branches) > MAX_BRANCHES:
            return None
        if (
            self.expiry
            and any(b[0] for b in branches)
            and all(not b[0] or r["t0"] - b[5] > self.ttl + self.margin for b in branches)
        ):
            self.stats["sessions_that_must_have_expired"] = self.stats.get("sessions_that_must_have_expired", 0) + 1
        branches = self.expire(branches, r["t0"], r["t1"])
        actual = (
            r["present"],
            tuple(sorted((k, _jv(v)) for k, v in r["state"].items())) if r["present"] else (),
            r["step"] if r["present"] else None,
            r["label"] if r["present"] else None,
        )
        if not any(b[:4] == actual for b in branches):
            kind = "lost" if not r["present"] else "wrong-state"
            self.bad(
                kind,
                f"session ({flow!r}, {sid!r}) ends {self.describe({actual + (0, 0)})}, but its history "
                f"allows only {self.describe(branches)}; history: {self.trail(ops)}",
            )
        return True

    def describe(self, branches) -> str:
        out = []
        for present, state, step, label, *_ in sorted(branches, key=repr)[:3]:
            out.append(
                "absent" if not present else f"present(keys={[k for k, _ in state]}, step={step!r}, label={label!r})"
            )
        return " | ".join(out) + (f" | ... ({len(branches)} in all)" if len(branches) > 3 else "")

    def trail(self, ops: List[dict], upto: Optional[dict] = None) -> str:
        shown = ops if upto is None else ops[: ops.index(upto) + 1]
        return "; ".join(_desc(op) for op in shown[-8:])

    # -- anything present that no operation explains ---------------------------------------------------------------
    def check_unexplained(self):
        tag = self.h.plan["tag"]
        key_op = {}
        for op in self.ops:
            for k in list(op.get("keys", {})) + list(op.get("state", {})):
                key_op[k] = op
        targets = {op["target"] for op in self.ops if op["kind"] == "rekey"}
        named = {op["sid"] for op in self.ops if op.get("sid")}
        explained = 0
        for (flow, sid), r in self.h.final.items():
            if not r["present"]:
                continue
            explained += sid.startswith(tag)
            if not (sid in named or sid in targets):
                if sid.startswith(tag):
                    self.bad("unexplained-session", f"({flow!r}, {sid!r}) exists; no operation named it")
                continue
            if sid.startswith(tag + ".L") and r["label"] is not None:
                self.bad("unexplained-label", f"lineage session ({flow!r}, {sid!r}) has label {r['label']!r}")
            for k, _ in flat(r["state"]):
                op = key_op.get(k)
                if op is None:
                    self.bad("unexplained-key", f"({flow!r}, {sid!r}) holds key {k!r} that no operation wrote")
                elif op.get("lineage") is None and (op["flow"], op["sid"]) != (flow, sid):
                    self.bad("misplaced", f"({flow!r}, {sid!r}) holds key {k!r} of {_desc(op)}")
            if sid.startswith(tag + ".L") and not r["state"] and r["step"] is None:
                self.bad("unexplained-session", f"lineage session ({flow!r}, {sid!r}) exists but holds nothing")
        self.stats["sessions_explained"] = explained

    # -- exports -------------------------------------------------------------------------------------------------
    def index_sessions(self):
        "Per (flow, sid): the acknowledged writes that make it live, what may remove or replace it, its updates."
        self.makers: Dict[Tuple[str, str], List[dict]] = {}
        self.removers: Dict[Tuple[str, str], List[dict]] = {}  # delete/clear (ok or unknown), any rekey from it
        self.replacers: Dict[Tuple[str, str], List[dict]] = {}  # restores (ok or unknown)
        self.updates: Dict[Tuple[str, str], List[dict]] = {}
        for op in self.ops:
            kind, out = op["kind"], op["outcome"]
            if kind == "export":
                continue
            if kind == "rekey":  # any attempt ends the old id's life as far as exports are concerned
                for f in self.lin.flows_of.get(op["lineage"], ()):
                    self.removers.setdefault((f, op["sid"]), []).append(op)
                continue
            key = (op["flow"], op["sid"])
            if out == OK and (
                kind in ("update", "set_step", "create", "restore") or (kind == "set_label" and op.get("result"))
            ):
                self.makers.setdefault(key, []).append(op)
            if kind in ("delete", "clear") and out != FAILED:
                self.removers.setdefault(key, []).append(op)
            if kind == "restore" and out != FAILED:
                self.replacers.setdefault(key, []).append(op)
            if kind == "update" and out == OK and not op.get("must_refuse"):
                self.updates.setdefault(key, []).append(op)

    def live_throughout(self, t0: float, t1: float, flow: Optional[str]) -> Dict[Tuple[str, str], List[dict]]:
        "(flow, sid) -> acknowledged updates it surely holds, for every session surely live during the whole [t0, t1]."
        out = {}

        def may_undo(op, ops):  # one of `ops` may have taken effect after `op` and before t1 (an unknown one: late)
            return any(r["t0"] <= t1 and (r["t1"] >= op["t0"] or r["outcome"] == UNKNOWN) for r in ops)

        for key, makers in self.makers.items():
            if flow is not None and key[0] != flow:
                continue
            removers = self.removers.get(key, [])
            if not any(
                m["t1"] < t0
                and (not self.expiry or m["t0"] + self.ttl - self.margin > t1)
                and not may_undo(m, removers)
                for m in makers
            ):
                continue
            undo = removers + self.replacers.get(key, [])
            out[key] = [w for w in self.updates.get(key, []) if w["t1"] < t0 and not may_undo(w, undo)]
        return out

    def check_exports(self):
        exports = [op for op in self.ops if op["kind"] == "export" and op["outcome"] == OK]
        tag, known = (
            self.h.plan["tag"],
            {op["sid"] for op in self.ops if op.get("sid")}
            | {op["target"] for op in self.ops if op["kind"] == "rekey"},
        )
        expected_total = compared = 0
        for e in exports:
            got: Dict[Tuple[str, str], List[dict]] = {}
            for f, s, state in e["result"]:
                got.setdefault((f, s), []).append(state)
                if s.startswith(tag) and s not in known:
                    self.bad("export-unexplained", f"{_desc(e)} exported ({f!r}, {s!r}), which no operation named")
                if e["flow"] is not None and f != e["flow"]:
                    self.bad("export-wrong-flow", f"{_desc(e)} exported ({f!r}, {s!r}) from another flow")
            live = self.live_throughout(e["t0"], e["t1"], e["flow"])
            expected_total += len(live)
            missed = [k for k in live if k not in got]
            if missed:
                self.bad(
                    "export-missed",
                    f"{_desc(e)}: missed {len(missed)} of the {len(live)} sessions live for the "
                    f"whole export, e.g. {missed[:5]} (exported {len(e['result'])} records)",
                )
            twice = [k for k in live if len(got.get(k, [])) > 1]
            if twice:
                self.bad(
                    "export-duplicated",
                    f"{_desc(e)}: exported {len(twice)} sessions live for the whole export "
                    f"more than once, e.g. {twice[:5]}",
                )
            if self.expiry:
                continue
            for k, writes in live.items():
                for state in got.get(k, [])[:1]:
                    state = dict(flat(state))
                    compared += sum(len(w["keys"]) for w in writes)
                    lost = [key for w in writes for key, val in w["keys"].items() if _jv(state.get(key)) != _jv(val)]
                    if lost:
                        self.bad(
                            "export-stale",
                            f"{_desc(e)}: exported {k} without {len(lost)} keys acknowledged before "
                            f"the export began, e.g. {lost[:3]}",
                        )
        self.stats["exports_checked"] = len(exports)
        self.stats["export_sessions_expected"] = expected_total
        self.stats["export_keys_compared"] = compared

    # -- at the end: listing and a final export agree with direct reads --------------------------------------------
    def check_end(self):
        h = self.h
        present = {k for k, r in h.final.items() if r["present"]}
        self.stats["sessions_present"] = len(present)
        if self.expiry:
            return  # sessions may expire between the final reads
        if h.listed is not None:
            self.stats["listing_checked"] = len(present | h.listed)
            unlisted = sorted(present - h.listed)
            if unlisted:
                self.bad(
                    "unlisted",
                    f"{len(unlisted)} sessions can be read but list_flows/list_sessions do "
                    f"not show them, e.g. {unlisted[:5]}",
                )
            ghosts = sorted(k for k in h.listed - present if k in h.final)
            if ghosts:
                self.bad("listed-absent", f"{len(ghosts)} sessions are listed but read as absent, e.g. {ghosts[:5]}")
        if h.final_export is not None:
            exported: Dict[Tuple[str, str], list] = {}
            for f, s, state in h.final_export:
                exported.setdefault((f, s), []).append(state)
            self.stats["final_export_checked"] = len(present | set(exported))
            tagged = {k for k in exported if k[1].startswith(h.plan["tag"]) or k in h.final}
            missing = sorted(present - set(exported))
            if missing:
                self.bad(
                    "final-export-missed",
                    f"a final export (nothing running) missed {len(missing)} sessions, e.g. {missing[:5]}",
                )
            extra = sorted(k for k in tagged if k not in present)
            if extra:
                self.bad(
                    "final-export-extra",
                    f"a final export holds {len(extra)} sessions that read as absent, e.g. {extra[:5]}",
                )
            for k in sorted(present & set(exported)):
                states = exported[k]
                if len(states) > 1:
                    self.bad("final-export-duplicated", f"a final export holds {k} {len(states)} times")
                if _jv(states[0]) != _jv(h.final[k]["state"]):
                    self.bad("final-export-differs", f"a final export's state of {k} differs from get_state")
