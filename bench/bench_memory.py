"""In-memory store throughput: `get_state` / `update_state` ops/s of `InMemoryWorkflowStateStore` next to the
seed's plain-dict store, measured in the same run, on a small (10 keys) and a 64 KB state.

    python bench/bench_memory.py [--repeats 7] [--check] [--baseline DIR]

With `--baseline DIR` (a checkout of an earlier commit, see bench/baseline.py) it also times that commit's
InMemoryWorkflowStateStore in the same run, its runs interleaved with ours, and prints ours / baseline.

Each figure is the best of `--repeats` timed runs of a fixed number of calls (time.perf_counter).
The seed store shares the dicts it holds (a shallow copy out, `dict.update` in), so the ratio is the
price of isolation: JSON values, deep-independent reads, validation and a lock.
`--check` exits with status 1 when the target (150,000 ops/s for each operation on the small state) is missed.
"""

import argparse, platform, sys, time, uuid
from typing import Any, Dict, Optional

import cjm_workflow_state
from cjm_workflow_state import InMemoryWorkflowStateStore
from cjm_workflow_state.core.base import encode_json

TARGET_OPS = 150_000  # ops/s required of each operation on the small state


# ---- The baseline: the seed notebook's store, copied verbatim (docstrings shortened) -----------------------------
def get_session_id(sess: Any, key: str = "_workflow_session_id") -> str:
    """Get or create a stable session identifier."""
    if key not in sess:
        sess[key] = str(uuid.uuid4())
    return sess[key]


class SeedInMemoryWorkflowStateStore:
    """In-memory workflow state storage for development and testing (the seed's)."""

    def __init__(self):
        self._current_steps: Dict[str, str] = {}  # {flow_id:session_id -> step_id}
        self._states: Dict[str, Dict[str, Any]] = {}  # {flow_id:session_id -> state}

    def _make_key(self, flow_id: str, sess: Any) -> str:
        session_id = get_session_id(sess)
        return f"{flow_id}:{session_id}"

    def get_current_step(self, flow_id: str, sess: Any) -> Optional[str]:
        key = self._make_key(flow_id, sess)
        return self._current_steps.get(key)

    def set_current_step(self, flow_id: str, sess: Any, step_id: str) -> None:
        key = self._make_key(flow_id, sess)
        self._current_steps[key] = step_id

    def get_state(self, flow_id: str, sess: Any) -> Dict[str, Any]:
        key = self._make_key(flow_id, sess)
        return self._states.get(key, {}).copy()

    def update_state(self, flow_id: str, sess: Any, updates: Dict[str, Any]) -> None:
        key = self._make_key(flow_id, sess)
        if key not in self._states:
            self._states[key] = {}
        self._states[key].update(updates)

    def clear_state(self, flow_id: str, sess: Any) -> None:
        key = self._make_key(flow_id, sess)
        self._current_steps.pop(key, None)
        self._states.pop(key, None)


# ---- Workloads -------------------------------------------------------------------------------------------------
def small_state() -> Dict[str, Any]:
    "10 keys of the kinds a wizard's forms produce."
    return {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "plan": "pro",
        "age": 36,
        "newsletter": True,
        "tags": ["math", "engines"],
        "address": {"city": "London", "postcode": "W1"},
        "score": 97.5,
        "notes": None,
        "step_count": 4,
    }


def large_state(size: int = 64 * 1024) -> Dict[str, Any]:
    "The small state plus a list of records (e.g. transcript segments) until the JSON text is `size` bytes."
    state = small_state()
    state["segments"] = segments = []
    while len(encode_json(state)) < size:
        i = len(segments)
        segments.append(
            {
                "id": i,
                "start": round(i * 2.5, 2),
                "end": round(i * 2.5 + 2.4, 2),
                "text": f"segment {i} of the recording, as the transcriber produced it",
                "ok": i % 3 != 0,
            }
        )
    return state


def bench(fn, calls: int, repeats: int) -> float:
    "Best ops/s of `repeats` runs of `calls` calls of `fn`."
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - t0)
    return calls / best


def operations(store, state: Dict[str, Any]) -> Dict[str, Any]:
    "get_state, update_state of one key, of every key, and set_current_step, on a session holding `state`."
    flow, sess = "bench", {}
    store.update_state(flow, sess, state)
    one = {"plan": "free"}
    return {
        "get_state": lambda: store.get_state(flow, sess),
        "update_state (1 key)": lambda: store.update_state(flow, sess, one),
        f"update_state ({len(state)} keys)": lambda: store.update_state(flow, sess, state),
        "set_current_step": lambda: store.set_current_step(flow, sess, "step_2"),
    }


def measure(store, state: Dict[str, Any], calls: int, repeats: int) -> Dict[str, float]:
    "Best ops/s of each of `operations`."
    return {op: bench(fn, calls, repeats) for op, fn in operations(store, state).items()}


def compare(ours, theirs, state: Dict[str, Any], calls: int, repeats: int) -> Dict[str, tuple]:
    "Per operation: (our best ops/s, their best ops/s), the two stores' runs interleaved."
    mine, old = operations(ours, state), operations(theirs, state)
    best = {op: [0.0, 0.0] for op in mine}
    for _ in range(repeats):
        for op in mine:
            for i, fn in enumerate((mine[op], old[op])):
                best[op][i] = max(best[op][i], bench(fn, calls, 1))
    return {op: tuple(b) for op, b in best.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="timed runs per figure; the best one counts")
    p.add_argument("--small-calls", type=int, default=20_000, help="calls per run on the small state")
    p.add_argument("--large-calls", type=int, default=300, help="calls per run on the 64 KB state")
    p.add_argument("--check", action="store_true", help="exit 1 if the small-state target is missed")
    p.add_argument("--baseline", help="checkout of an earlier commit to compare with (see bench/baseline.py)")
    args = p.parse_args()
    if args.baseline:
        from baseline import load_baseline

        old = load_baseline(args.baseline).core.state_store.InMemoryWorkflowStateStore

    print(
        f"cjm-workflow-state {cjm_workflow_state.__version__}, Python {platform.python_version()}, "
        f"best of {args.repeats} runs (time.perf_counter)"
    )
    missed = []
    for label, state, calls in [
        ("small (10 keys)", small_state(), args.small_calls),
        ("64 KB", large_state(), args.large_calls),
    ]:
        print(f"\n{label} state: {len(encode_json(state)):,} bytes of JSON, {calls:,} calls per run")
        print(f"  {'operation':<24}{'seed dict ops/s':>16}{'InMemory ops/s':>16}{'µs/op':>9}{'seed/ours':>11}")
        seed = measure(SeedInMemoryWorkflowStateStore(), state, calls, args.repeats)
        ours = measure(InMemoryWorkflowStateStore(), state, calls, args.repeats)
        for op in ours:
            verdict = ""
            if label.startswith("small"):
                ok = ours[op] >= TARGET_OPS
                verdict = "  target met" if ok else f"  TARGET MISSED (< {TARGET_OPS:,})"
                if not ok:
                    missed.append(op)
            print(
                f"  {op:<24}{seed[op]:>16,.0f}{ours[op]:>16,.0f}{1e6 / ours[op]:>9.2f}"
                f"{seed[op] / ours[op]:>10.1f}x{verdict}"
            )
        if args.baseline:
            print(f"  {'same run, interleaved':<24}{'ours ops/s':>16}{'baseline ops/s':>16}{'ours/baseline':>15}")
            for op, (mine, theirs) in compare(InMemoryWorkflowStateStore(), old(), state, calls, args.repeats).items():
                print(f"  {op:<24}{mine:>16,.0f}{theirs:>16,.0f}{mine / theirs:>14.2f}x")
    print(
        f"\ntarget: >= {TARGET_OPS:,} ops/s for each operation on the small state: "
        + ("met" if not missed else f"MISSED by {', '.join(missed)}")
    )
    if args.check and missed:
        sys.exit(1)


if __name__ == "__main__":
    main()
