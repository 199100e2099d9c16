"""Several processes (separate interpreters, as several app workers are) and several threads update one session of
one SQLite file at the same time: no key is lost, and the file stays sound."""

import sqlite3, subprocess, sys, threading, time

from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore
from cjm_workflow_state.core.base import encode_json

PROCESSES, KEYS = 4, 300

# Half the keys are plain ASCII (merged by one UPDATE statement), half are not (merged in Python inside a
# BEGIN IMMEDIATE transaction): both ways must be atomic against each other.
WORKER = r"""
import sys, time
from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore
path, worker, keys, start_at, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
store = SQLiteWorkflowStateStore(path)
store.get_state("flow", "warm-up")  # open the connection before the start line
while time.time() < start_at: time.sleep(0.0005)
began = time.time()
for i in range(keys):
    key = f"w{worker}-k{i}" if i % 2 else f"\u00fc{worker}-k{i}"
    if step: store.update_step_state("flow", "shared", step, {key: i})
    else: store.update_state("flow", "shared", {key: [worker, i]})
    if i % 50 == 0: store.set_current_step("flow", "shared", f"step-{worker}")
print(began, time.time())
store.close()
"""


def key(worker, i):
    return f"w{worker}-k{i}" if i % 2 else f"\u00fc{worker}-k{i}"


def run_workers(path, cwd, keys, step=""):
    "Start PROCESSES workers together (cwd outside the checkout: the installed package is tested); return their spans."
    start_at = time.time() + 3  # every interpreter is up and connected by then
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(w), str(keys), str(start_at), step],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(PROCESSES)
    ]
    spans = []
    try:
        for w in workers:
            out, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
            spans.append(tuple(map(float, out.split())))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    return spans


def integrity(path):
    with sqlite3.connect(path) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    return result


def test_processes_update_one_session(tmp_path):
    path = tmp_path / "state.db"
    store = SQLiteWorkflowStateStore(path)
    spans = run_workers(path, tmp_path, KEYS)
    assert max(b for b, _ in spans) < min(e for _, e in spans), f"the workers did not overlap: {spans}"
    state = store.get_state("flow", "shared")
    assert len(state) == PROCESSES * KEYS == 1200
    assert state == {key(w, i): [w, i] for w in range(PROCESSES) for i in range(KEYS)}
    summary = store.get_session_summary("flow", "shared")
    assert summary.state_size_bytes == len(encode_json(state))
    assert summary.current_step in {f"step-{w}" for w in range(PROCESSES)}
    assert integrity(path) == "ok"
    store.close()


def test_processes_update_one_step_state(tmp_path):
    "update_step_state merges inside one key: concurrent merges into it from processes lose nothing either."
    path = tmp_path / "state.db"
    run_workers(path, tmp_path, 100, step="upload")
    with SQLiteWorkflowStateStore(path) as store:
        assert store.get_step_state("flow", "shared", "upload") == {
            key(w, i): i for w in range(PROCESSES) for i in range(100)
        }
    assert integrity(path) == "ok"


def test_threads_update_one_session(tmp_path):
    "Threads sharing one store object, and threads on other store objects of the same file, lose nothing."
    path = tmp_path / "state.db"
    stores = [SQLiteWorkflowStateStore(path) for _ in range(3)]
    errors, barrier = [], threading.Barrier(9)

    def run(t):
        try:
            barrier.wait(timeout=30)
            for i in range(100):
                stores[t % 3].update_state("flow", "shared", {key(t, i): i})
                if i % 10 == 0:
                    stores[t % 3].update_step_state("flow", "shared", "st", {f"t{t}-{i}": i})
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    state = stores[0].get_state("flow", "shared")
    assert {k: v for k, v in state.items() if k != "_step_st"} == {key(t, i): i for t in range(9) for i in range(100)}
    assert len(state["_step_st"]) == 9 * 10
    for s in stores:
        s.close()
    assert integrity(path) == "ok"


def test_threads_create_one_session(tmp_path):
    "Of threads creating the same session id at once, exactly one succeeds."
    store = SQLiteWorkflowStateStore(tmp_path / "state.db")
    results, barrier = [], threading.Barrier(8)

    def run(t):
        barrier.wait(timeout=30)
        try:
            store.create_session("flow", "same-id", label=f"t{t}")
            results.append(t)
        except ValueError:
            pass

    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 1
    assert store.get_session_summary("flow", "same-id").label == f"t{results[0]}"
    store.close()


def test_forked_children_open_their_own_connections(tmp_path):
    "A store made before os.fork() (a preloading server) works in the children: they never use the parent's connections."
    import os

    if not hasattr(os, "fork"):
        return
    path = tmp_path / "state.db"
    store = SQLiteWorkflowStateStore(path)
    store.update_state("flow", "shared", {"parent-before": 1})  # the parent's connection is open and used
    parent_conn = store._cx()[0]
    children = []
    for c in range(3):
        pid = os.fork()
        if pid == 0:  # child: the same store object
            code = 1
            try:
                for i in range(50):
                    store.update_state("flow", "shared", {f"child{c}-{i}": i})
                code = (
                    0
                    if (store.get_state("flow", "shared")["parent-before"] == 1 and store._cx()[0] is not parent_conn)
                    else 1
                )
            finally:
                os._exit(code)
        children.append(pid)
    for i in range(50):
        store.update_state("flow", "shared", {f"parent-{i}": i})
    for pid in children:
        deadline = time.time() + 60
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.time() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0
    state = store.get_state("flow", "shared")
    assert len(state) == 1 + 50 + 3 * 50
    store.close()
    assert integrity(path) == "ok"
