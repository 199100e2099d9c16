"""What the CLI prints and what it writes when the data or the input is hostile (issue 9 items 8, 9, 12, 17).

- Stored text (flow and session ids, labels, step ids, state values) reaches a terminal only escaped: no control
  character, bidi override or lone surrogate is printed raw, whatever a store holds; such state travels exactly from
  one backend to another through export and import. (Stores refuse lone surrogates in state; a label written by an
  older version may still hold one.)
- `import` checks every line before writing any: a bad line (bad JSON, bad id, a timestamp that is NaN, infinite,
  negative or past the year 9999) is reported with its line number and nothing is written; empty input is an error.
- `purge-expired` removes what the store's own clock says is expired: a skewed clock on the admin host cannot make
  it delete fresh sessions.
"""

import io, json, math, os, subprocess, sys, tempfile, types

import pytest

from cjm_workflow_state import InMemoryWorkflowStateStore, StateNotSerializableError, open_store
from cjm_workflow_state import cli as cli_module
from cjm_workflow_state.core.base import encode_updates
from servers import postgres_schema, redis_url, unique_name

# Characters a terminal acts on (ESC starts a control sequence, BEL rings, CSI is the 8-bit ESC [, U+202E and U+2066
# reorder what follows, U+2028 breaks the line) and a lone surrogate (no encoding can print it).
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202egnp.exe\u2066x\u2069\u2028"
RAW = ["\x1b", "\x07", "\x9b", "\u202e", "\u2066", "\u2069", "\u2028"]


def cli(*args, stdin=None):
    "The CLI in a fresh interpreter with a UTF-8 stdout, as a terminal user runs it."
    return subprocess.run(
        [sys.executable, "-m", "cjm_workflow_state.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="strict",
        cwd=tempfile.gettempdir(),
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


def run(*argv, stdin=""):
    "The CLI in this process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    code = cli_module.main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def plant(store, flow_id, session_id, state, label=None, step=None, ts=1_700_000_000.0):
    "Write a session with the backend primitive, as an older version or another client could have (no label rule)."
    store._restore(flow_id, session_id, encode_updates(state), step, label, ts, ts)


def assert_escaped(text):
    for ch in RAW:
        assert ch not in text, (ch, text)
    assert "\\u001b" in text or "\\x1b" in text, text


# ---- item 8: terminal escape injection ----------------------------------------------------------
@pytest.fixture
def hostile_db(tmp_path):
    url = f"sqlite:///{tmp_path}/hostile.db"
    with open_store(url) as store:
        plant(
            store,
            "flow\u202eevil",
            "sid\u202e1",
            {"note": HOSTILE, "ok": "plain é ☕"},
            label="lbl" + HOSTILE,
            step="step\u2066x",
        )
    return url


def test_list_and_flows_escape_stored_text(hostile_db):
    p = cli("flows", hostile_db)
    assert p.returncode == 0, p.stderr
    assert "\u202e" not in p.stdout and "flow\\u202eevil\t1" in p.stdout
    p = cli("list", hostile_db, "flow\u202eevil")
    assert p.returncode == 0, p.stderr
    assert_escaped(p.stdout)
    assert "sid\\u202e1" in p.stdout and "step\\u2066x" in p.stdout


def test_show_escapes_and_stays_exact_json(hostile_db):
    p = cli("show", hostile_db, "flow\u202eevil", "sid\u202e1")
    assert p.returncode == 0, p.stderr
    assert_escaped(p.stdout)
    doc = json.loads(p.stdout)  # escaped the JSON way: the document still holds the exact values
    assert doc["state"] == {"note": HOSTILE, "ok": "plain é ☕"} and doc["label"] == "lbl" + HOSTILE
    assert "plain é ☕" in p.stdout  # printable text stays readable


def test_errors_escape_what_they_quote():
    code, out, err = run("show", "memory://", "flow\u202e", "x\u202ey")
    assert code == 1 and "\u202e" not in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "url, options",
    [
        ("mongodb://root:s3cret@db.example/admin", ()),
        ("redis://:s3cret@127.0.0.1:1/0", ()),
        ("postgresql://app@127.0.0.1:1/app?password=s3cret&connect_timeout=1", ("-o", "pool_timeout=0.5")),
    ],
)  # (else the pool retries for its default 5 s)
def test_errors_never_show_a_password(url, options):
    pytest.importorskip("redis")
    pytest.importorskip("psycopg")
    code, out, err = run("flows", url, *options)
    assert code == 1 and err.count("\n") == 1, err
    assert "s3cret" not in err, err


# ---- item 12: text hostile to terminals and encodings -------------------------------------------------
def run_utf8(*argv, stdin=""):
    "The CLI in this process, printing to a strict UTF-8 stream (as a terminal's): (exit code, stdout, stderr)."
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", newline="\n"), io.StringIO()
    code = cli_module.main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    out.flush()
    return code, out.buffer.getvalue().decode("utf-8"), err.getvalue()


# A state every store holds (keys and values at any depth) whose text terminals act on or encodings trip over: a bidi
# override, an ANSI escape, BEL, NUL, DEL, a C1 control, a line separator, astral characters (an escaped surrogate
# pair in the ASCII JSON text). Lone surrogates are refused at write (see the last test of this section).
TRAVEL_STATE = {
    "v": "a\u202eb\x1b[31mred\x07",
    "nul": "x\x00y\x7f\x9b",
    "nested": {"k\u2028": ["😀", "\U0010ffff", "\u2066x\u2069"], "😀\x1b": {"\x00": "é"}},
}


def records(dump):
    "The sessions of an export, compared as values (the order of keys within a state is the backend's)."
    return [json.loads(line) for line in dump.splitlines()]


@pytest.fixture(scope="module")
def travel_dump():
    """A store holding TRAVEL_STATE, and a label with a lone surrogate (an older version allowed it; written with the
    backend primitive): what show, list and export print."""
    src = InMemoryWorkflowStateStore()
    plant(src, "f", "s1", TRAVEL_STATE, label="bad \ud800 label", step="s")
    with _patched_open(src):
        code, shown, err = run_utf8("show", "memory://", "f", "s1")  # printed, not UnicodeEncodeError
        assert code == 0, err
        assert_escaped(shown)
        assert "\x00" not in shown and "\\u202e" in shown and "😀" in shown  # escaped; printable text stays readable
        doc = json.loads(shown)  # escaped the JSON way: the document holds the exact values
        assert doc["state"] == TRAVEL_STATE and doc["label"] == "bad \ud800 label"
        code, table, err = run_utf8("list", "memory://", "f")
        assert code == 0 and "bad \\ud800 label" in table, err
        code, dump, err = run_utf8("export", "memory://")
        assert code == 0, err
    dump.encode("ascii")  # valid JSON in any encoding
    assert json.loads(dump)["state"] == TRAVEL_STATE
    return dump.replace("bad \\ud800 label", "good label")  # labels now follow the id rule; state values travel as is


def test_hostile_text_travels_to_sqlite(travel_dump, tmp_path):
    target = f"sqlite:///{tmp_path}/copy.db"
    p = cli("import", target, stdin=travel_dump)
    assert p.returncode == 0, p.stderr
    p = cli("show", target, "f", "s1")
    assert p.returncode == 0, p.stderr
    assert_escaped(p.stdout)
    assert json.loads(p.stdout)["state"] == TRAVEL_STATE
    assert cli("export", target).stdout == travel_dump


def test_hostile_text_travels_to_redis(travel_dump):
    url, prefix = redis_url(), unique_name("cli_travel")
    try:
        assert run_utf8("import", url, "-o", f"prefix={prefix}", stdin=travel_dump)[0] == 0
        code, shown, err = run_utf8("show", url, "f", "s1", "-o", f"prefix={prefix}")
        assert code == 0 and json.loads(shown)["state"] == TRAVEL_STATE, err
        assert_escaped(shown)
        assert records(run_utf8("export", url, "-o", f"prefix={prefix}")[1]) == records(travel_dump)
    finally:
        with open_store(url, prefix=prefix) as store:
            store.delete_all()


def test_hostile_text_travels_to_postgres(travel_dump):
    with postgres_schema("cli_travel") as (url, schema):
        assert run_utf8("import", url, "-o", f"schema={schema}", stdin=travel_dump)[0] == 0
        code, shown, err = run_utf8("show", url, "f", "s1", "-o", f"schema={schema}")
        assert code == 0 and json.loads(shown)["state"] == TRAVEL_STATE, err
        assert_escaped(shown)
        assert records(run_utf8("export", url, "-o", f"schema={schema}")[1]) == records(travel_dump)


def test_lone_surrogates_are_refused_at_the_store(tmp_path):
    "No store holds a lone surrogate in state (JSON would not read it back equal); an old dump holding one is refused."
    with pytest.raises(StateNotSerializableError, match="'v'"):
        InMemoryWorkflowStateStore().update_state("f", "s", {"v": "a\ud800b"})
    url = f"sqlite:///{tmp_path}/t.db"
    old = GOOD[0].replace('"state": {"i": 0}', '"state": {"v": "a\\ud800b"}')  # as an older version exported it
    assert old != GOOD[0]
    p = cli("import", url, stdin=GOOD[1] + "\n" + old + "\n")
    assert p.returncode == 1 and p.stderr.startswith("cjm-workflow-state: stdin line 2: "), p.stderr
    assert "surrogate" in p.stderr and "nothing imported" in p.stderr, p.stderr
    with open_store(url) as store:
        assert store.list_flows() == []


class _patched_open:
    "Make the CLI open `store` (without closing it) whatever URL it is given."

    def __init__(self, store):
        self.store = store

    def __enter__(self):
        self.saved = cli_module.open_store
        store = self.store

        class Unclosed:
            def __getattr__(self, name):
                return getattr(store, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        cli_module.open_store = lambda url, **options: Unclosed()

    def __exit__(self, *exc):
        cli_module.open_store = self.saved


# ---- item 9: import checks everything before writing anything -----------------------------------
GOOD = [
    json.dumps(
        {
            "flow_id": "f",
            "session_id": f"s{i}",
            "state": {"i": i},
            "created_ts": 1_700_000_000.5,
            "updated_ts": 1_700_000_001.5,
        }
    )
    for i in range(3)
]


def bad_ts(value):
    "A record whose updated_ts is `value` (a float literal, NaN and Infinity included, as Python's json reads them)."
    return '{"flow_id": "f", "session_id": "bad", "state": {}, "created_ts": 1700000000, "updated_ts": %s}' % value


@pytest.mark.parametrize(
    "bad_line",
    [
        bad_ts("NaN"),
        bad_ts("Infinity"),
        bad_ts("-Infinity"),
        bad_ts("1e300"),
        bad_ts("-5"),
        bad_ts("253402300800"),
        '{"flow_id": "f", "session_id": "", "state": {}}',
        '{"flow_id": "f", "session_id": "x", "state": {"k": 1}, "current_step": "a\\nb"}',
        '{"flow_id": "f", "session_id": "x", "state": {}, "colour": "red"}',
        '{"flow_id": "f", "session_id": "x", "state": {}',
    ],
    ids=[
        "nan",
        "inf",
        "-inf",
        "1e300",
        "negative",
        "year10000",
        "empty-id",
        "newline-step",
        "unknown-field",
        "cut-json",
    ],
)
def test_import_is_all_or_nothing(bad_line, tmp_path):
    url = f"sqlite:///{tmp_path}/target.db"
    text = "\n".join(GOOD[:2] + ["", bad_line] + GOOD[2:]) + "\n"
    p = cli("import", url, stdin=text)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert p.stderr.startswith("cjm-workflow-state: stdin line 4: ") and p.stderr.count("\n") == 1, p.stderr
    assert "nothing imported" in p.stderr, p.stderr
    assert p.stderr.count("line") == 1, p.stderr  # one line-number scheme: the input's
    with open_store(url) as store:
        assert store.list_flows() == []  # nothing written, not even lines 1-2


def test_import_rejects_bad_timestamps_in_process():
    store = InMemoryWorkflowStateStore()
    for value in (math.nan, math.inf, 1e300, -1.0, 253402300800.0):
        with pytest.raises(ValueError, match="line 2"):
            cli_module.import_jsonl(
                store,
                [
                    GOOD[0],
                    bad_ts(
                        json.dumps(value) if math.isfinite(value) else {math.nan: "NaN", math.inf: "Infinity"}[value]
                    ),
                ],
            )
        assert store.list_flows() == []


@pytest.mark.parametrize("stdin", ["", "\n", "  \n\n"])
def test_import_of_nothing_is_an_error(stdin, tmp_path):
    p = cli("import", f"sqlite:///{tmp_path}/t.db", stdin=stdin)
    assert p.returncode == 1 and "no sessions" in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_import_of_good_lines_still_works(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    p = cli("import", url, stdin="\n".join(GOOD) + "\n")
    assert (p.returncode, p.stderr) == (0, "imported 3 sessions\n")
    with open_store(url) as store:
        assert sorted(s.session_id for s in store.list_sessions("f")) == ["s0", "s1", "s2"]
        assert store.get_session_summary("f", "s1").updated_ts == 1_700_000_001.5


def test_import_failing_while_writing_says_exactly_what_was_written():
    class Flaky(InMemoryWorkflowStateStore):
        "Fails on the third write, as a server going away would."

        writes = 0

        def _restore(self, *a):
            Flaky.writes += 1
            if Flaky.writes == 3:
                raise ConnectionError("server went away")
            super()._restore(*a)

    store = Flaky()
    lines = GOOD + [GOOD[0].replace('"s0"', '"s9"')]
    with pytest.raises(cli_module.ImportStoppedError) as e:
        cli_module.import_jsonl(store, lines)
    message = str(e.value)
    assert isinstance(e.value.cause, ConnectionError) and (e.value.lineno, e.value.written) == (3, 2)
    assert message.startswith(
        "line 3: ConnectionError: server went away; lines 1 to 2 (2 sessions) were imported, nothing after line 3"
    ), message
    assert sorted(s.session_id for s in store.list_sessions("f")) == ["s0", "s1"]


# ---- item 17: purge-expired uses the store's clock -----------------------------------------------
def skewed_clock(monkeypatch, seconds):
    "The CLI module's clock runs `seconds` ahead (the store's own modules keep the real one)."
    import time as real

    fake = types.SimpleNamespace(**{n: getattr(real, n) for n in dir(real) if not n.startswith("__")})
    fake.time = lambda: real.time() + seconds
    monkeypatch.setattr(cli_module, "time", fake)


def test_purge_expired_ignores_a_skewed_admin_clock_sqlite(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path}/p.db"
    with open_store(url) as store:
        store.update_state("f", "fresh", {"x": 1})
        store.restore_session("f", "old", {"x": 2}, created_ts=1_700_000_000, updated_ts=1_700_000_000)
    skewed_clock(monkeypatch, 30 * 86400)
    assert run("purge-expired", url, "--ttl", "1d")[:2] == (0, "removed 1 session not written for 1d\n")
    with open_store(url) as store:
        assert [s.session_id for s in store.list_sessions("f")] == ["fresh"]


def test_purge_expired_ignores_a_skewed_admin_clock_redis(monkeypatch):
    url, prefix = redis_url(), unique_name("cli_purge")
    store = open_store(url, prefix=prefix)
    try:
        store.update_state("f", "fresh", {"x": 1})  # written without a ttl, just now by the server's clock
        skewed_clock(monkeypatch, 30 * 86400)  # the admin host thinks it is a month later
        code, out, err = run("purge-expired", url, "--ttl", "1d", "-o", f"prefix={prefix}")
        assert code == 0, err
        assert store.session_exists("f", "fresh"), out  # fresh by the server's clock: kept
    finally:
        store.delete_all()
        store.close()


def test_purge_expired_sweeps_ttl_less_sessions_redis():
    url, prefix = redis_url(), unique_name("cli_purge")
    store = open_store(url, prefix=prefix)
    try:
        store.update_state("f", "fresh", {"x": 1})
        store.restore_session("f", "old", {"x": 2}, created_ts=1_700_000_000, updated_ts=1_700_000_000)
        code, out, err = run("purge-expired", url, "--ttl", "1d", "-o", f"prefix={prefix}")
        assert (code, out) == (0, "removed 1 session not written for 1d\n"), err
        assert [s.session_id for s in store.list_sessions("f")] == ["fresh"]
    finally:
        store.delete_all()
        store.close()


def test_purge_expired_calls_the_store(monkeypatch):
    "Every backend: the CLI opens the store with the ttl and calls its purge_expired, nothing else."
    calls = []

    class Probe(InMemoryWorkflowStateStore):
        def purge_expired(self):
            calls.append(self.ttl)
            return 7

    monkeypatch.setattr(cli_module, "open_store", lambda url, **options: Probe(**options))
    assert run("purge-expired", "memory://", "--ttl", "2h")[:2] == (0, "removed 7 sessions not written for 2h\n")
    assert calls == [7200.0]


def test_export_uses_export_sessions(monkeypatch):
    "Export goes through the store's export_sessions (keyset pages, INTERFACES.md 1), once for the whole run."
    store = InMemoryWorkflowStateStore()
    for i in range(3):
        store.update_state("f", f"s{i}", {"i": i})
    seen = []
    original = store.export_sessions

    def export_sessions(*a, **k):
        seen.append((a, k))
        return original(*a, **k)

    store.export_sessions = export_sessions
    with _patched_open(store):
        code, dump, err = run("export", "memory://")
    assert code == 0 and len(dump.splitlines()) == 3 and seen == [((None,), {})], (err, seen)
