#!/usr/bin/env python
"""Check that the notebooks document every public name with an example whose output is stored.

    python tools/check_api_docs.py                    # every notebook under nbs/
    python tools/check_api_docs.py nbs/core/ids.ipynb # some of them

Three rules, read from the notebooks as nbdev renders them (no execution; run `python tools/run_nb.py` to store
outputs):
1. API entry: each public name of a notebook's module (the functions and classes of its `__all__` defined in that
   module, and the public methods and properties those classes define) has an entry on the page: an exported
   `def`/`class` (nbdev adds its `show_doc`), an exported `@patch` method, or a visible `show_doc(...)` call.
2. Example: after each entry, or run of consecutive entries, and before the next one, a visible code cell with a
   stored output uses the name (`get_state` for `WorkflowStateStoreBase.get_state`).
3. No visible code cell lacks an output unless it only imports, defines functions or classes, or asserts
   (`assert`, `test_*(...)`): an example without its output teaches nothing.
4. No cell that nbdev runs while building the docs (any non-exported cell that imports) also holds other code:
   nbdev would run that code too (it warns "Found cells containing imports and other code"). Imports go in a cell
   of their own.
Exit status 1 when a rule is broken, with one line per problem; silent on success unless --verbose.
"""

import argparse, ast, importlib, inspect, json, re, sys
from pathlib import Path

from fastcore.basics import AttrDict
from nbdev.process import extract_directives

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
HIDDEN = {"export", "exporti", "exports", "hide", "default_exp"}  # cells whose source the page does not show


def directives(src: str) -> dict:
    "The `#| ...` directives at the top of a cell: {name: [args]}, read by nbdev itself (as nbdev_test reads them)."
    return extract_directives(AttrDict(source=src, cell_type="code"), remove=False)


def code_of(src: str) -> str:
    "Source without directives and IPython magics/shell lines, so `ast` can read it."
    return "\n".join("" if re.match(r"^\s*(#\||%|!)", l) else l for l in src.splitlines())


def parse(src: str):
    try:
        return compile(code_of(src), "<cell>", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:
        return None


def visible(d: dict) -> bool:
    return not (HIDDEN & {k.rstrip(":") for k in d}) and d.get("eval:", [""])[0].lower() != "false"


def is_check_only(tree) -> bool:
    """A cell that needs no output: it only imports and defines, or it asserts (`assert`, `test_*(...)`) and every
    call it makes for its effect is an assertion (assignments and loops around the assertions are fine)."""
    if tree is None:
        return False
    stmts = [n for n in ast.walk(tree) if isinstance(n, ast.stmt)]
    defs = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Pass)
    top = [s for s in tree.body if not isinstance(s, defs)]
    if not top:
        return True

    def is_assertion(s):
        if isinstance(s, ast.Assert):
            return True
        v = s.value.value if isinstance(s, ast.Expr) and isinstance(s.value, ast.Await) else getattr(s, "value", None)
        if not (isinstance(s, ast.Expr) and isinstance(v, ast.Call)):
            return False
        f = v.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        return name.startswith(("test_", "assert"))

    inner = [s for s in stmts if not any(s is d or s in ast.walk(d) for d in tree.body if isinstance(d, defs))]
    exprs = [s for s in inner if isinstance(s, ast.Expr) and not isinstance(s.value, ast.Constant)]
    return any(is_assertion(s) for s in inner) and all(is_assertion(s) for s in exprs)


def imports_and_code(src: str, d: dict) -> bool:
    "nbdev's own test (processors._do_eval): a cell it executes for the docs because it imports, with other code in it."
    if {"export", "exports", "exporti", "exec_doc"} & set(d) or d.get("eval:", [""])[0].lower() == "false":
        return False
    tree = parse(src)
    if tree is None:
        return False
    nodes = list(ast.walk(tree))
    return any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes) and any(
        isinstance(n, (ast.Expr, ast.Assign)) for n in nodes
    )


def patched_classes(fn: ast.AST) -> list:
    "Class names a `@patch`ed function attaches to (its first parameter's annotation, `A|B` or `(A,B)` too)."
    if not any(
        (isinstance(d, ast.Name) and d.id == "patch")
        or (isinstance(d, ast.Call) and getattr(d.func, "id", "") == "patch")
        for d in fn.decorator_list
    ):
        return []
    if not fn.args.args or fn.args.args[0].annotation is None:
        return []
    ann = fn.args.args[0].annotation
    return [n.id for n in ast.walk(ann) if isinstance(n, ast.Name)]


def entries_of(src: str, d: dict) -> list:
    "The API entries a cell puts on the page: 'name' or 'Class.method'."
    tree = parse(src)
    if tree is None:
        return []
    found = []
    if "export" in d or "exports" in d:
        for s in tree.body:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                classes = patched_classes(s) if not isinstance(s, ast.ClassDef) else []
                found += [f"{c}.{s.name}" for c in classes] or [s.name]
    if visible(d) or "echo:" in d:
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "show_doc" and n.args:
                found.append(ast.unparse(n.args[0]))
    return found


def public_names(module_name: str) -> list:
    "Functions and classes of the module's `__all__` defined there, and their own public methods and properties."
    mod = importlib.import_module(module_name)
    names = []
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name, None)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)) or getattr(obj, "__module__", None) != module_name:
            continue
        names.append(name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                fn = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                if (inspect.isfunction(fn) or isinstance(value, property)) and getattr(
                    fn, "__module__", module_name
                ) == module_name:
                    names.append(f"{name}.{attr}")
    return names


def check(path: Path, lib: str = "cjm_workflow_state") -> list:
    nb = json.loads(path.read_text())
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    problems, module = [], None
    groups = []  # [entries, example cells' sources] in page order
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        src = "".join(cell.get("source", ""))
        d = directives(src)
        if "default_exp" in d and d["default_exp"]:
            module = f"{lib}.{d['default_exp'][0]}"
        found = entries_of(src, d)
        if imports_and_code(src, d):
            problems.append(
                f"{rel}: cell {i} mixes imports with other code: nbdev runs it to build the docs; "
                "move the imports to a cell of their own"
            )
        has_output = bool(cell.get("outputs"))
        if found:
            if not groups or groups[-1][1]:
                groups.append([[], []])
            groups[-1][0].extend(found)
            continue
        if not visible(d):
            continue
        tree = parse(src)
        if has_output:
            if groups:
                groups[-1][1].append(code_of(src))
        elif not is_check_only(tree):
            first = next((l for l in code_of(src).splitlines() if l.strip()), "")[:60]
            problems.append(f"{rel}: cell {i} ({first!r}) is an example without a stored output")
    documented = set()
    for found, examples in groups:
        for name in found:
            documented.add(name)
            short = name.rsplit(".", 1)[-1]
            if not any(re.search(rf"\b{re.escape(short)}\b", ex) for ex in examples):
                problems.append(f"{rel}: {name} has no example with a stored output after its entry")
    if module:
        try:
            names = public_names(module)
        except Exception as e:
            return problems + [f"{rel}: cannot import {module}: {type(e).__name__}: {e}"]
        for name in names:
            if name not in documented:
                problems.append(f"{rel}: {name} (public in {module}) has no API entry")
    return problems


def all_notebooks() -> list:
    return sorted(
        p for p in NBS.rglob("*.ipynb") if not any(part.startswith(("_", ".")) for part in p.relative_to(NBS).parts)
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="check_api_docs.py", description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--verbose", action="store_true", help="say what was checked on success too")
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or all_notebooks()
    problems = [p for path in paths for p in check(path)]
    for p in problems:
        print(f"check_api_docs: {p}", file=sys.stderr)
    if problems:
        print(f"check_api_docs: FAILED with {len(problems)} problem(s)", file=sys.stderr)
    elif args.verbose:
        print(f"check_api_docs: {len(paths)} notebooks, every public name documented with an example")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
