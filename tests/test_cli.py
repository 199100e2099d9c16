"""`cjm-workflow-state` as a user runs it: a separate process, stdout/stderr/exit status.

Bad input gets one line on stderr and a non-zero exit, never a traceback. Export from SQLite and import
into SQLite, PostgreSQL and Redis give back the same sessions (ids, label, step, state, both timestamps).
Server addresses come from DATABASE_URL / REDIS_URL (tests/servers.py); an unreachable server skips its test
outside CI and fails it in CI (CI=true). Each test works in its own PostgreSQL schema / Redis key prefix and removes it.
"""

import importlib.util, json, subprocess, sys, tempfile

import pytest

from cjm_workflow_state import open_store
from servers import postgres_schema, redis_url, unique_name

FLOWS = ("checkout", "signup")


def cli(*args, stdin=None, cwd=None):
    "Run the CLI in a fresh interpreter, outside the checkout (so the installed package runs); the CompletedProcess."
    return subprocess.run(
        [sys.executable, "-m", "cjm_workflow_state.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or tempfile.gettempdir(),
        timeout=120,
    )


def one_line_error(p, code):
    "The process failed with `code` and said so in one line, without a traceback."
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("cjm-workflow-state: ") and p.stderr.count("\n") == 1, p.stderr
    return p.stderr


def need_backend(name):
    'Fail clearly if a backend module is missing (its driver is an extra: pip install "cjm-workflow-state[redis,postgres]").'
    if importlib.util.find_spec(f"cjm_workflow_state.backends.{name}") is None:
        pytest.fail(f"cjm_workflow_state.backends.{name} is missing")


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, code, expected",
    [
        ((), 2, "no command given"),
        (("frobnicate", "memory://"), 2, "unknown command 'frobnicate'"),
        (("list", "memory://"), 2, "the following arguments are required: flow"),
        (("show", "memory://", "signup"), 2, "the following arguments are required: session"),
        (("list", "memory://", "signup", "--limit", "ten"), 2, "invalid int value"),
        (("list", "memory://", "signup", "--sort", "size"), 2, "--sort must be updated, created or label"),
        (("purge-expired", "memory://"), 2, "--ttl is required"),
        (("purge-expired", "memory://", "--ttl", "7days"), 2, "invalid duration '7days'"),
        (("flows", "memory://", "-o", "table"), 2, "must look like NAME=VALUE"),
        (("flows", "mongodb://127.0.0.1/app"), 1, "unknown store URL scheme 'mongodb'"),
        (("flows", "not-a-url"), 1, "store URL must look like scheme://"),
        (("flows", "memory://", "-o", "colour=blue"), 1, "colour"),
        (("show", "memory://", "signup", "nobody"), 1, "no session 'nobody' in flow 'signup'"),
        (("delete", "memory://", "signup", "nobody"), 1, "no session 'nobody' in flow 'signup'"),
        (("list", "sqlite:///no/such/dir/app.db", "signup"), 1, "no SQLite database at 'no/such/dir/app.db'"),
    ],
)
def test_bad_arguments(args, code, expected, tmp_path):
    assert expected in one_line_error(cli(*args, cwd=tmp_path), code)


@pytest.mark.parametrize(
    "stdin, expected",
    [
        ("not json\n", "stdin line 1: not JSON"),
        ('{"flow_id": "f", "session_id": "s"}\n', "stdin line 1: missing field(s) state"),
        ('\n{"flow_id": "f", "session_id": "s", "state": {}, "extra": 1}\n', "stdin line 2: unknown field(s) extra"),
        ('{"flow_id": "f", "session_id": "s", "state": [1]}\n', "state must be a JSON object"),
        ('{"flow_id": "", "session_id": "s", "state": {}}\n', "stdin line 1: flow_id"),
        (
            '{"flow_id": "f", "session_id": "s", "state": {}, "created_ts": "yesterday"}\n',
            "created_ts must be a number",
        ),
    ],
)
def test_bad_import_input(stdin, expected):
    assert expected in one_line_error(cli("import", "memory://", stdin=stdin), 1)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "postgresql://postgres@127.0.0.1:1/test"])
def test_unreachable_server_is_one_line(url):
    pytest.importorskip("redis" if url.startswith("redis") else "psycopg")
    options = (
        () if url.startswith("redis") else ("-o", "pool_timeout=0.5")
    )  # (else the pool retries for its default 5 s)
    err = one_line_error(cli("flows", url, *options), 1)
    assert "127.0.0.1:1" in err or "port 1" in err, err


def test_help():
    p = cli("--help")
    assert p.returncode == 0 and p.stderr == ""
    for command in ("flows", "list", "show", "delete", "purge-expired", "export", "import"):
        assert command in p.stdout
    p = cli("export", "--help")
    assert p.returncode == 0 and "Export only this flow" in p.stdout and "NAME=VALUE" in p.stdout


# ---- export / import --------------------------------------------------------------------------
def fill(store, n=620):
    "Sessions of every shape over two flows; more than one export page (500)."
    for i in range(n):
        flow = FLOWS[i % 2]
        state = {"i": i, "email": f"user{i}@example.com", "nested": {"list": [i, None, True, 1.5], "s": 'é ☕ "q" \\'}}
        if i % 3 == 0:
            state["_step_billing"] = {"card": "visa", "seats": i}
        store.restore_session(
            flow,
            f"s-{i:04d}:%_'\"",
            state,
            current_step=None if i % 5 == 0 else f"step{i % 4}",
            label=None if i % 4 == 0 else f"Label {i} · ünïcode",
            created_ts=1_700_000_000.123456 + i,
            updated_ts=1_700_000_000.123456 + i * 1.000001,
        )
    store.update_state("signup", "live-one", {"fresh": True})  # written now


def records(text):
    "Exported lines as records, in a canonical order."
    return sorted(
        (json.loads(line) for line in text.splitlines() if line.strip()), key=lambda r: (r["flow_id"], r["session_id"])
    )


@pytest.fixture
def sqlite_export(tmp_path):
    "An exported SQLite store: (export text, records, source URL)."
    need_backend("sqlite")
    from cjm_workflow_state import open_store

    url = f"sqlite:///{tmp_path}/app.db"
    with open_store(url) as store:
        fill(store)
    p = cli("export", url)
    assert p.returncode == 0, p.stderr
    assert p.stderr == "exported 621 sessions\n"
    recs = records(p.stdout)
    assert len(recs) == 621 and {r["flow_id"] for r in recs} == set(FLOWS)
    return p.stdout, recs, url


def check_copy(target_url, dump, expected, *options):
    p = cli("import", target_url, *options, stdin=dump)
    assert (p.returncode, p.stderr) == (0, "imported 621 sessions\n"), p.stderr
    again = cli("export", target_url, *options)
    assert again.returncode == 0, again.stderr
    assert records(again.stdout) == expected  # ids, label, step, state and both timestamps, exactly
    # Importing the same file again replaces, it does not duplicate.
    assert cli("import", target_url, *options, stdin=dump).returncode == 0
    assert records(cli("export", target_url, *options).stdout) == expected
    listing = cli("list", target_url, "signup", "--sort", "created", "--limit", "3", *options)
    assert listing.returncode == 0 and listing.stdout.splitlines()[1].startswith("live-one"), listing.stdout
    shown = json.loads(cli("show", target_url, "checkout", "s-0006:%_'\"", *options).stdout)
    assert shown["state"]["_step_billing"] == {"card": "visa", "seats": 6} and shown["label"] == "Label 6 · ünïcode"
    assert shown["created_at"] == "2023-11-14 22:13:26" and shown["current_step"] == "step2"


def test_export_import_sqlite_to_sqlite(sqlite_export, tmp_path):
    dump, expected, _ = sqlite_export
    check_copy(f"sqlite:///{tmp_path}/copy.db", dump, expected)
    # Exporting one flow gives that flow's sessions only.
    only = records(cli("export", f"sqlite:///{tmp_path}/copy.db", "--flow", "checkout").stdout)
    assert only == [r for r in expected if r["flow_id"] == "checkout"]


def test_export_sqlite_import_postgres(sqlite_export):
    dump, expected, _ = sqlite_export
    with postgres_schema("cli") as (url, schema):
        check_copy(url, dump, expected, "-o", f"schema={schema}")


def test_export_sqlite_import_redis(sqlite_export):
    url = redis_url()
    dump, expected, _ = sqlite_export
    prefix = unique_name("cli")
    try:
        check_copy(url, dump, expected, "-o", f"prefix={prefix}")
    finally:
        with open_store(url, prefix=prefix) as store:
            store.delete_all()  # this prefix's keys, nothing else


def test_purge_expired_and_delete(sqlite_export, tmp_path):
    _, _, url = sqlite_export
    p = cli("purge-expired", url, "--ttl", "1d")  # every restored session was last written in 2023
    assert (p.returncode, p.stdout) == (0, "removed 620 sessions not written for 1d\n"), p.stderr
    assert cli("flows", url).stdout == "signup\t1\n"
    assert cli("delete", url, "signup", "live-one").returncode == 0
    assert cli("flows", url).stdout == ""


# ---- issue 12: --version, one line numbering, empty input, mistyped paths, --sort label -------------------------
GOOD = '{"flow_id": "f", "session_id": "s", "state": {}}'


def test_version():
    import cjm_workflow_state

    p = cli("--version")
    assert (p.returncode, p.stdout, p.stderr) == (0, f"cjm-workflow-state {cjm_workflow_state.__version__}\n", ""), p
    assert "--version" in cli("--help").stdout


@pytest.mark.parametrize(
    "stdin, expected",
    [
        # a session spread over two lines: the JSON stops after the last character of physical line 3 (column 54), where
        # JSON's own count says line 2, column 1
        (
            GOOD + '\n\n{"flow_id": "f", "session_id": "t", "state": {"a": 1,\n "b": 2}}\n',
            "stdin line 3: not JSON (Expecting property name enclosed in double quotes at column 54, after the last character",
        ),
        ("\n" + GOOD + " ,\n", f"stdin line 2: not JSON (Extra data at column {len(GOOD) + 2})"),
        (GOOD + "\r\n\r\nx\r\n", "stdin line 3: not JSON (Expecting value at column 1)"),
        (
            GOOD + '\n{"flow_id": "f", "session_id": "s", "state": {"k": "a\x01"}}\n',
            "stdin line 2: not JSON (Invalid control character at column 54)",
        ),
    ],
)
def test_import_errors_name_the_physical_line_only(stdin, expected):
    import re

    err = one_line_error(cli("import", "memory://", stdin=stdin), 1)
    assert expected in err, err
    assert re.findall(r"line \d+", err) == [expected.split(":")[0].removeprefix("stdin ")], err  # one numbering, once


def test_import_error_for_bytes_that_are_not_utf8_names_the_line():
    import types

    data = (GOOD + '\n\n{"flow_id": "f\xff", "session_id": "s", "state": {}}\n').encode("latin-1")
    p = subprocess.run(
        [sys.executable, "-m", "cjm_workflow_state.cli", "import", "memory://"],
        input=data,
        capture_output=True,
        cwd=tempfile.gettempdir(),
        timeout=120,
    )
    err = one_line_error(types.SimpleNamespace(returncode=p.returncode, stderr=p.stderr.decode()), 1)
    assert "stdin line 3: not UTF-8 text (byte 0xff at column 15)" in err, err


def test_import_help_says_how_lines_are_numbered():
    out = " ".join(cli("import", "--help").stdout.split())
    assert "line numbers count every line of the input from 1, blank lines too" in out, out


def test_import_progress_counts_the_lines_the_errors_name():
    import io, re
    from cjm_workflow_state import cli as cli_module

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    err = Terminal()
    code = cli_module.main(["import", "memory://"], stdin=io.StringIO(GOOD + "\n\nnot json\n"), stderr=err)
    assert code == 1
    assert re.findall(r"checked (\d+) (\w+)", err.getvalue())[-1] == ("2", "lines"), err.getvalue()
    assert "stdin line 3: not JSON" in err.getvalue()


@pytest.mark.parametrize(
    "stdin, expected",
    [
        ("", "no sessions to import (the input is empty); nothing imported"),
        (None, "no sessions to import (the input is empty); nothing imported"),  # < /dev/null
        ("\n  \n\t\r\n", "no sessions to import (the input's 3 lines are all blank); nothing imported"),
    ],
)
def test_import_of_nothing_fails_and_creates_nothing(stdin, expected, tmp_path):
    args = [sys.executable, "-m", "cjm_workflow_state.cli", "import", f"sqlite:///{tmp_path}/new.db"]
    p = subprocess.run(
        args,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        timeout=120,
    )
    assert one_line_error(p, 1) == f"cjm-workflow-state: stdin: {expected}\n"
    assert list(tmp_path.iterdir()) == []  # no empty database left behind


@pytest.mark.parametrize(
    "args",
    [
        ("flows",),
        ("list", "signup"),
        ("show", "signup", "s"),
        ("delete", "signup", "s"),
        ("purge-expired", "--ttl", "1d"),
        ("export",),
    ],
)
def test_commands_on_a_store_refuse_a_missing_folder(args, tmp_path):
    for url, shown in [("sqlite:///typo/app.db", "typo"), (f"sqlite:///{tmp_path}/typo/app.db", f"{tmp_path}/typo")]:
        err = one_line_error(cli(args[0], url, *args[1:], cwd=tmp_path), 1)
        assert f"no SQLite database at '{shown}/app.db'" in err and f"the folder '{shown}' does not exist" in err, err
        assert list(tmp_path.iterdir()) == []  # nothing created


def test_import_refuses_a_missing_folder_and_creates_a_new_file(tmp_path):
    err = one_line_error(cli("import", "sqlite:///typo/app.db", stdin=GOOD + "\n", cwd=tmp_path), 1)
    assert "the folder 'typo' does not exist" in err and "mkdir -p typo" in err, err
    assert list(tmp_path.iterdir()) == []
    p = cli("import", "sqlite:///app.db", stdin=GOOD + "\n", cwd=tmp_path)  # a new file in an existing folder: made
    assert (p.returncode, p.stderr) == (0, "imported 1 session\n") and (tmp_path / "app.db").exists()
    assert cli("flows", "sqlite:///app.db", cwd=tmp_path).stdout == "f\t1\n"


def test_list_sort_label_puts_unlabelled_sessions_last(tmp_path):
    url = f"sqlite:///{tmp_path}/app.db"
    with open_store(url) as store:
        for sid, label in [("a", None), ("b", "Zoe"), ("c", "Ada"), ("d", None), ("e", "Max")]:
            store.restore_session("f", sid, {}, label=label, created_ts=1_700_000_000.0, updated_ts=1_700_000_000.0)
    ids = lambda p: [line.split()[0] for line in p.stdout.splitlines()[1:]]
    assert ids(cli("list", url, "f", "--sort", "label")) == ["c", "e", "b", "a", "d"]
    assert ids(cli("list", url, "f", "--sort", "label", "--limit", "2")) == ["c", "e"]
    assert ids(cli("list", url, "f", "--sort", "label", "--limit", "4")) == ["c", "e", "b", "a"]
    assert "unlabelled sessions last" in " ".join(cli("list", "--help").stdout.split())


# ---- review of f37f313 and 5879cf9: a ttl in the URL, URL options and -o, failed imports, files that hold no store,
# ---- --sort label with --limit ----------------------------------------------------------------------------------
OLD = '{"flow_id": "f", "session_id": "old", "state": {"a": 1}, "created_ts": 1000000000.0, "updated_ts": 1000000000.0}'


@pytest.mark.parametrize("args", [("flows",), ("list", "f"), ("show", "f", "old"), ("export",), ("delete", "f", "old")])
def test_a_ttl_in_the_url_is_refused_where_it_would_hide_sessions(args, tmp_path):
    assert cli("import", "sqlite:///wf.db", stdin=OLD + "\n", cwd=tmp_path).returncode == 0
    before = (tmp_path / "wf.db").read_bytes()
    p = cli(args[0], "sqlite:///wf.db?ttl=3600", *args[1:], cwd=tmp_path)
    err = one_line_error(p, 2)
    assert f"{args[0]}: the URL's `?ttl=` is refused here" in err and "purge-expired takes --ttl" in err, err
    assert p.stdout == "" and (tmp_path / "wf.db").read_bytes() == before  # nothing exported, nothing deleted
    assert "-o ttl=` is refused here" in one_line_error(
        cli(args[0], "sqlite:///wf.db", *args[1:], "-o", "ttl=60", cwd=tmp_path), 2
    )


def test_import_refuses_a_ttl_in_the_url_and_creates_nothing(tmp_path):
    err = one_line_error(cli("import", "sqlite:///new.db?ttl=60", stdin=OLD + "\n", cwd=tmp_path), 2)
    assert "import: the URL's `?ttl=` is refused here" in err, err
    assert list(tmp_path.iterdir()) == []


def test_purge_expired_lets_its_ttl_decide_over_the_urls(tmp_path):
    url = f"sqlite:///{tmp_path}/app.db"
    with open_store(url) as store:
        store.restore_session("f", "old", {}, created_ts=1_000_000_000.0, updated_ts=1_000_000_000.0)  # 2001
        store.update_state("f", "new", {"k": 1})
    p = cli("purge-expired", url + "?ttl=1", "--ttl", "7d")  # the application's URL: a ttl of one second
    assert (p.returncode, p.stderr) == (0, ""), p.stderr
    assert p.stdout == "removed 1 session not written for 7d (--ttl decides: the URL's ttl=1 is not used)\n", p.stdout
    assert cli("flows", url).stdout == "f\t1\n"  # the fresh session stays
    assert "--ttl, not -o ttl=" in one_line_error(cli("purge-expired", url, "--ttl", "7d", "-o", "ttl=60"), 2)


@pytest.mark.parametrize(
    "url, option",
    [
        ("sqlite:///app.db?busy_timeout=3", "busy_timeout=4"),
        ("redis://127.0.0.1:1/0?prefix=a", "prefix=b"),
        ("postgresql://app@127.0.0.1:1/db?schema=a", "schema=b"),
    ],
)
def test_an_option_in_the_url_and_in_dash_o_is_named_the_command_lines_way(url, option, tmp_path):
    name = option.split("=")[0]
    err = one_line_error(cli("flows", url, "-o", option, cwd=tmp_path), 2)
    assert f"flows: `-o {name}=` and the URL's `?{name}=` both set {name}: set it in one place" in err, err
    assert "keyword argument" not in err and list(tmp_path.iterdir()) == []


def test_a_question_mark_in_a_password_starts_no_query():
    from cjm_workflow_state import cli as cli_module

    assert cli_module._url_query("postgresql://app:pa?ttl=1@127.0.0.1/db") == {}
    assert cli_module._url_query("redis://:se?cret@127.0.0.1:6379/0?prefix=p&ttl=5") == {"prefix": "p", "ttl": "5"}


def test_import_of_too_deeply_nested_json_names_the_line_and_leaves_nothing(tmp_path):
    deep = '{"flow_id": "f", "session_id": "s", "state": {"a": ' + "[" * 3000 + "]" * 3000 + "}}"
    err = one_line_error(cli("import", "sqlite:///new.db", stdin=GOOD + "\n" + deep + "\n", cwd=tmp_path), 1)
    assert "stdin line 2: not JSON this import reads (nested too deeply" in err, err
    assert list(tmp_path.iterdir()) == []


def test_interrupted_import_removes_the_database_it_created(tmp_path):
    import signal, time

    p = subprocess.Popen(
        [sys.executable, "-m", "cjm_workflow_state.cli", "import", "sqlite:///new.db"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    p.stdin.write((GOOD + "\n").encode())
    p.stdin.flush()  # stdin stays open: the import waits for more
    deadline = time.monotonic() + 60
    while not (tmp_path / "new.db").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert (tmp_path / "new.db").exists()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert (p.returncode, err.decode()) == (130, "cjm-workflow-state: interrupted\n")
    assert list(tmp_path.iterdir()) == []


def test_failed_import_through_a_dangling_symlink_keeps_the_link(tmp_path):
    (tmp_path / "link.db").symlink_to("target.db")
    assert "stdin line 1: not JSON" in one_line_error(
        cli("import", "sqlite:///link.db", stdin="garbage\n", cwd=tmp_path), 1
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.db"] and (tmp_path / "link.db").is_symlink()
    err = one_line_error(cli("flows", "sqlite:///link.db", cwd=tmp_path), 1)
    assert "no SQLite database at 'link.db' (a symlink to" in err, err
    assert cli("import", "sqlite:///link.db", stdin=GOOD + "\n", cwd=tmp_path).returncode == 0  # a good one: made
    assert cli("flows", "sqlite:///link.db", cwd=tmp_path).stdout == "f\t1\n" and (tmp_path / "target.db").is_file()


def _other_files(folder):
    "Files that hold no store: another application's database, an empty file, a text file."
    import sqlite3

    with sqlite3.connect(folder / "app.db") as c:
        c.execute("create table users(id int)")
    (folder / "empty.db").write_bytes(b"")
    (folder / "notes.db").write_text("not a database\n" * 100)
    return {name: (folder / name).read_bytes() for name in ("app.db", "empty.db", "notes.db")}


@pytest.mark.parametrize(
    "args",
    [
        ("flows",),
        ("list", "signup"),
        ("show", "signup", "s"),
        ("export",),
        ("delete", "signup", "s"),
        ("purge-expired", "--ttl", "1d"),
    ],
)
def test_commands_refuse_a_file_that_holds_no_store_and_change_nothing(args, tmp_path):
    files = _other_files(tmp_path)
    for name, expected in [
        ("app.db", "the SQLite database 'app.db' has no workflow_sessions table"),
        ("empty.db", "'empty.db' is an empty file, not a SQLite database"),
        ("notes.db", "'notes.db' is not a SQLite database"),
    ]:
        err = one_line_error(cli(args[0], f"sqlite:///{name}", *args[1:], cwd=tmp_path), 1)
        assert expected in err and "it holds no cjm-workflow-state store" in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files  # no tables, no WAL, no side files


def test_commands_still_open_a_store_file_and_import_still_fills_a_new_one(tmp_path):
    assert cli("import", "sqlite:///app.db", stdin=GOOD + "\n", cwd=tmp_path).returncode == 0
    assert cli("flows", "sqlite:///app.db", cwd=tmp_path).stdout == "f\t1\n"
    assert cli("flows", f"sqlite:///{tmp_path}/app.db", "-o", "busy_timeout=2").stdout == "f\t1\n"


def test_list_sort_label_with_a_limit_reads_a_bounded_number_of_sessions(monkeypatch):
    import io, random
    from cjm_workflow_state import InMemoryWorkflowStateStore, cli as cli_module, stores

    calls = []

    class Recording(InMemoryWorkflowStateStore):
        def list_sessions(self, *args, **kwargs):
            found = super().list_sessions(*args, **kwargs)
            calls.append((kwargs.get("limit"), len(found)))
            return found

    store = Recording()
    module = type(sys)("cli_test_recording")
    module.open_url = lambda url, **options: store
    monkeypatch.setitem(sys.modules, "cli_test_recording", module)
    monkeypatch.setitem(stores.SCHEMES, "rec", "cli_test_recording")

    def listed(limit):
        calls.clear()
        out = io.StringIO()
        args = ["list", "rec://x", "f", "--sort", "label"] + ([] if limit is None else ["--limit", str(limit)])
        assert cli_module.main(args, stdout=out, stderr=io.StringIO()) == 0
        return [line.split()[0] for line in out.getvalue().splitlines()[1:]]

    for i in range(400):
        store.update_state("f", f"s{i:03d}", {"i": i})  # unlabelled: sorted first by the store
    for i in range(0, 400, 40):
        store.set_session_label("f", f"s{i:03d}", f"Name {i:03d}")
    assert listed(3) == ["s000", "s040", "s080"]
    assert all(limit is not None for limit, _ in calls) and sum(n for _, n in calls) <= 3 + 20, calls
    # the same rows as a sort of the whole flow, whatever the mix of missing, blank and ordinary labels
    rng = random.Random(7)
    for sid in store.list_sessions("f"):
        store.set_session_label("f", sid.session_id, rng.choice([None, None, "", " ", "\u3000", "Ada", "zed", "Émile"]))
    everything = listed(None)
    for limit in (1, 2, 5, 37, 200, 399, 400, 1000):
        assert listed(limit) == everything[:limit], limit
