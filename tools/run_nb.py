#!/usr/bin/env python
"""Run notebooks the way `nbdev_test` does and store every cell's output in the notebook, so the docs site shows
each example with its result.

    python tools/run_nb.py nbs/core/ids.ipynb ...     # runs the Redis and PostgreSQL cells too
    python tools/run_nb.py --skip postgres nbs/x.ipynb # leaves the cells of a flag untouched (outputs kept)

`show_doc` cells are stored without output: nbdev renders them when it builds the docs. Cells `nbdev_test` skips (`#| eval: false`, and the flags named with --skip; `slow` unless --slow) keep the
outputs they had. A notebook whose run raises is not written: the error is printed and the exit code is 1.
Afterwards run `nbdev_clean` (it keeps outputs, drops execution counts and metadata) and read the diff: outputs that
hold a temporary path, a time or a random id change on every run, so prefer examples whose output is stable.
Servers: REDIS_URL and DATABASE_URL, as for `bash tools/test.sh`.
"""

import argparse, os, re, sys
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from nbdev.process import extract_directives


def skipped(cell, skip_flags: set) -> bool:
    "Would `nbdev_test` skip `cell`? (the same rules as nbdev.test.test_nb)"
    if cell.cell_type != "code":
        return True
    if "nbdev_export(" in cell.source:
        return True
    direc = extract_directives(cell, remove=False)
    if direc.get("eval:", [""])[0].lower() == "false":
        return True
    return bool(skip_flags & direc.keys())


def run(path: Path, skip_flags: set) -> bool:
    "Execute `path` in a fresh shell from its own folder; write its outputs back unless a cell raised."
    os.environ["IN_TEST"] = "1"  # what nbdev_test sets: notebooks may shorten waits under test
    nb = read_nb(path)
    shell = CaptureShell(path)
    shell.set_path(path.parent.resolve())
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        shell.run_all(nb, exc_stop=True, preproc=lambda c: skipped(c, skip_flags))
    except BaseException:
        sys.stderr.write(shell.prettytb(fname=path) + "\n")
        return False
    finally:
        os.chdir(cwd)
    for cell in nb.cells:  # nbdev renders show_doc itself when it builds the docs; stored, its [source] line churns
        if cell.cell_type == "code" and re.search(r"^show_doc\(", cell.source, re.M):
            cell.outputs = []
    write_nb(nb, path)
    return True


def main():
    ap = argparse.ArgumentParser(prog="run_nb.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--skip", action="append", default=[], help="a test flag whose cells are not run (repeatable)")
    ap.add_argument("--slow", action="store_true", help="run the cells flagged slow too")
    args = ap.parse_args()
    skip_flags = set(args.skip) | (set() if args.slow else {"slow"})
    failed = []
    for nb in args.notebooks:
        print(f"running {nb}", flush=True)
        if not run(nb.resolve(), skip_flags):
            failed.append(str(nb))
    if failed:
        print("not written (a cell raised): " + ", ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
