"""Several processes (separate interpreters, as several app servers are) write one session at the same time on Redis:
nothing is lost."""

import json, subprocess, sys, time

from cjm_workflow_state import open_store
from servers import redis_url, unique_name

PROCESSES, KEYS = 4, 300

WORKER = r"""
import json, sys, time
from cjm_workflow_state import open_store
url, prefix, worker, start_at, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
store = open_store(url, prefix=prefix)
store.get_state("flow", "warm-up")  # connect before the start line
while time.time() < start_at: time.sleep(0.0005)
began = time.time()
for i in range(int(sys.argv[6])):
    if step: store.update_step_state("flow", "shared", step, {f"w{worker}-k{i}": i})
    else: store.update_state("flow", "shared", {f"w{worker}-k{i}": [worker, i]})
print(json.dumps([began, time.time()]))
store.close()
"""


def run_workers(url: str, prefix: str, keys: int, step: str = "") -> list:
    "Start PROCESSES workers together; return each one's (start, end) time."
    start_at = time.time() + 3  # every interpreter is up and connected by then
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, prefix, str(w), str(start_at), step, str(keys)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(PROCESSES)
    ]
    spans = []
    for w in workers:
        out, err = w.communicate(timeout=180)
        assert w.returncode == 0, err
        spans.append(json.loads(out.strip().splitlines()[-1]))
    return spans


def test_processes_update_one_session():
    url, prefix = redis_url(), unique_name("processes")
    store = open_store(url, prefix=prefix)
    try:
        spans = run_workers(url, prefix, KEYS)
        assert max(b for b, _ in spans) < min(e for _, e in spans), f"the workers did not overlap: {spans}"
        state = store.get_state("flow", "shared")
        assert len(state) == PROCESSES * KEYS
        assert state == {f"w{w}-k{i}": [w, i] for w in range(PROCESSES) for i in range(KEYS)}
        assert store.get_session_summary("flow", "shared").state_size_bytes == len(
            json.dumps(state, separators=(",", ":"), ensure_ascii=True)
        )
    finally:
        store.delete_all()
        store.close()


def test_processes_update_one_step_state():
    "update_step_state merges inside one field: concurrent merges into it from processes lose nothing either."
    url, prefix = redis_url(), unique_name("processes")
    store = open_store(url, prefix=prefix)
    try:
        run_workers(url, prefix, 100, step="upload")
        assert store.get_step_state("flow", "shared", "upload") == {
            f"w{w}-k{i}": i for w in range(PROCESSES) for i in range(100)
        }
    finally:
        store.delete_all()
        store.close()
