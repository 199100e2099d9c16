"""kill -9 a process in the middle of a stream of writes: every write it acknowledged is in the file afterwards, and
the file passes `PRAGMA integrity_check` (WAL, synchronous=NORMAL: committed transactions outlive the process)."""

import os, signal, sqlite3, subprocess, sys, threading

import pytest

from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore

# Writes keys as fast as it can and prints each one after update_state returned; the new sessions are large, so
# the WAL grows and is checkpointed into the database file while the process runs (and is killed).
WRITER = r"""
import sys
from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore
path, round_, synchronous = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = SQLiteWorkflowStateStore(path, synchronous=synchronous)
i = 0
while True:
    key = f"r{round_}-k{i}"
    value = {"i": i, "pad": "x" * 10}
    if i % 3 == 0: store.update_state("flow", "main", {key: value})               # one UPDATE statement
    elif i % 3 == 1: store.update_state("flow", "main", {"\u00fc" + key: value})  # a BEGIN IMMEDIATE transaction
    else: store.update_state("flow", f"s-{key}", {"k": value, "big": "x" * 20_000})  # a new session
    print(i, flush=True)
    i += 1
"""


def acknowledged_keys(round_, acks):
    for i in acks:
        if i % 3 == 0:
            yield "main", f"r{round_}-k{i}"
        elif i % 3 == 1:
            yield "main", f"\u00fcr{round_}-k{i}"
        else:
            yield f"s-r{round_}-k{i}", "k"


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_kill_9_loses_no_acknowledged_write(tmp_path, synchronous):
    path = tmp_path / "state.db"
    for round_, kill_after in enumerate([150, 400, 40]):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(round_), synchronous],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        acks, killer = [], threading.Timer(60, writer.kill)  # a bound, should the writer never get going
        killer.start()
        try:
            for line in writer.stdout:
                acks.append(int(line))
                if len(acks) == kill_after:
                    os.kill(writer.pid, signal.SIGKILL)  # in the middle of the stream: it is writing the next keys
                    break
            acks.extend(int(line) for line in writer.stdout)  # acknowledged before the signal landed
            writer.wait(30)
        finally:
            killer.cancel()
            if writer.poll() is None:
                writer.kill()
        assert writer.returncode == -signal.SIGKILL, writer.stderr.read()
        assert len(acks) >= kill_after

        with sqlite3.connect(path) as conn:  # what a fresh process finds: the WAL is recovered on open
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        with SQLiteWorkflowStateStore(path) as store:
            main = store.get_state("flow", "main")
            for session, key in acknowledged_keys(round_, acks):
                state = main if session == "main" else store.get_state("flow", session)
                assert key in state, f"round {round_}: acknowledged write {session}/{key} is missing"
            assert all(v["pad"] == "x" * 10 for v in main.values())
