#!/usr/bin/env python
"""Check the docs site without Quarto: process the notebooks as `nbdev_docs` would, render every page to HTML
with nbconvert, and fail on error outputs, missing pages and broken internal links.

    python tools/check_docs.py                # from anywhere in the repository; exit 0 when the docs are fine
    python tools/check_docs.py --out DIR      # keep the processed notebooks and rendered pages in DIR

Quarto (which `nbdev_docs` and the deploy workflow use) cannot be installed everywhere we test, so this script
does the same preparation in a scratch copy of the repository (the checkout is never modified; nbdev's
`nbdev_proc_nbs` command would try to install Quarto first):

1. the config: `nbs/_quarto.yml` is a website fed by `nbdev.yml` and `sidebar.yml`; `nbs/nbdev.yml` is what
   nbdev generates from settings.ini; `nbs/sidebar.yml` is what `nbdev_sidebar` generates, so it lists every
   notebook; the deploy workflow exists;
2. `proc_nbs` (the processing behind `nbdev_proc_nbs`/`nbdev_docs`: front matter, doc links, `show_doc` output)
   into `_proc/`; every notebook must come out as a page with a title;
3. each page is rendered to HTML with nbconvert (not executed: `nbdev_test` runs the notebooks), and fails on an
   `error` output or a traceback in a cell;
4. every link into the site (relative `.ipynb`/`.html` links, the absolute `doc_host/doc_baseurl` links nbdev
   writes for backticked names, `#anchors`) must reach an existing page and heading, and every `[source]` link
   into this repository must name an existing file and line;
5. `tools/check_api_docs.py`: every public name has an API entry and an example with a stored output, no example
   lacks its output, and no cell nbdev runs for the docs mixes imports with other code.
Quiet on success (one summary line); each problem is one line on stderr.
Requires: nbdev, nbconvert (pip install nbconvert).
"""

import argparse, html.parser, json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent


class Problems(list):
    def add(self, where, what):
        self.append(f"{where}: {what}")


# ---- copy ----------------------------------------------------------------------------------------
def copy_repo(dst: Path) -> None:
    "Copy the files git knows about (tracked, and untracked but not ignored) into `dst`."
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but the usual build output
        skip = {".git", "_proc", "_docs", "artifacts", "__pycache__", ".ipynb_checkpoints"}
        files = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
        ]
    for f in files:
        src = ROOT / f
        if not src.is_file():
            continue  # deleted but not yet committed
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / f)


# ---- config --------------------------------------------------------------------------------------
def check_config(work: Path, problems: Problems) -> None:
    import yaml
    from nbdev.config import get_config
    from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml

    cfg = get_config()
    nbs = cfg.nbs_path
    qy = nbs / "_quarto.yml"
    if not qy.exists():
        problems.add("nbs/_quarto.yml", "missing")
    else:
        q = yaml.safe_load(qy.read_text()) or {}
        if (q.get("project") or {}).get("type") != "website":
            problems.add("nbs/_quarto.yml", "project.type must be website")
        meta = q.get("metadata-files") or []
        for name in ("nbdev.yml", "sidebar.yml"):
            if name not in meta:
                problems.add("nbs/_quarto.yml", f"metadata-files must list {name}")
        if "html" not in (q.get("format") or {}):
            problems.add("nbs/_quarto.yml", "format.html missing")
        css = ((q.get("format") or {}).get("html") or {}).get("css")
        if css and not (nbs / css).exists():
            problems.add("nbs/_quarto.yml", f"format.html.css names a missing file {css}")
    committed = {n: (nbs / n).read_text() if (nbs / n).exists() else None for n in ("nbdev.yml", "sidebar.yml")}
    refresh_quarto_yml()
    generated = [("nbdev.yml", "nbdev_docs regenerates it from settings.ini (refresh_quarto_yml)")]
    if not cfg.custom_sidebar:  # nbdev_docs regenerates the sidebar, so the committed one must be what it generates
        nbdev_sidebar.__wrapped__(path=nbs)
        generated.append(("sidebar.yml", "run nbdev_sidebar"))
    for name, fix in generated:
        if committed[name] is None:
            problems.add(f"nbs/{name}", f"missing: {fix}, and commit it")
        elif committed[name] != (nbs / name).read_text():
            problems.add(f"nbs/{name}", f"out of date with the notebooks/settings.ini: {fix}, and commit it")
    if committed["sidebar.yml"] is None:
        if cfg.custom_sidebar:
            problems.add("nbs/sidebar.yml", "missing (settings.ini has custom_sidebar = True)")
        return
    side = yaml.safe_load(committed["sidebar.yml"])
    entries = []

    def walk(items):
        for it in items or []:
            if isinstance(it, str):
                entries.append(it)
            elif isinstance(it, dict):
                if "contents" in it:
                    walk(it["contents"])
                elif "href" in it:
                    entries.append(it["href"])

    walk(((side or {}).get("website") or {}).get("sidebar", {}).get("contents"))
    for e in entries:
        if not (nbs / e).exists():
            problems.add("nbs/sidebar.yml", f"entry {e} names no file")
    for rel in notebooks(nbs):
        if rel.as_posix() not in entries:
            problems.add("nbs/sidebar.yml", f"does not list {rel.as_posix()}")
    deploy = [p for p in (work / ".github" / "workflows").glob("*.y*ml") if "quarto-ghp" in p.read_text()]
    if not deploy:
        problems.add(".github/workflows", "no deploy workflow (fastai/workflows/quarto-ghp)")


# ---- processing ----------------------------------------------------------------------------------
def notebooks(nbs: Path):
    "The notebooks nbdev turns into pages (nbdev's rules: no _/. files or folders)."
    from nbdev.doclinks import nbglob

    return sorted(Path(p).relative_to(nbs) for p in nbglob(nbs, skip_folder_re=r"(?:^[_.]|^www$)"))


def process(work: Path, problems: Problems) -> Path:
    "nbdev's `proc_nbs` (without its Quarto install), one notebook per worker process, a failure reported per notebook."
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    import nbdev.doclinks, nbdev.serve_drv
    from nbdev.config import get_config
    from nbdev.serve import _proc_file

    nbdev.doclinks._build_modidx()
    nbs, cache = get_config().nbs_path, work / "_proc"
    cache.mkdir(exist_ok=True)
    files = [Path(f) for f in nbdev.doclinks.nbglob(nbs, file_glob="", file_re="")]
    files += [nbs / n for n in ("_quarto.yml", "_brand.yml") if (nbs / n).exists()]
    jobs = [j for j in (_proc_file(f, cache=cache, path=nbs) for f in files) if j]
    ctx = multiprocessing.get_context("spawn")
    # check_api_docs reports nbdev's "imports and other code" warning per cell, as a problem: not again, 20 lines each
    os.environ["PYTHONWARNINGS"] = "ignore:Found cells containing imports and other code:UserWarning"
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1), mp_context=ctx) as pool:
        futures = {pool.submit(nbdev.serve_drv.main, job): job for job in jobs}
    for future, job in futures.items():
        e = future.exception()
        if e is not None:
            first = " ".join(str(e).split(":\n", 1)[0].split())
            problems.add(
                f"nbs/{job[0].relative_to(nbs)}",
                f"nbdev's processing failed ({first}); a cell that imports "
                "is run by nbdev when the docs are built: keep imports in cells of their own",
            )
    return cache


# ---- pages ---------------------------------------------------------------------------------------
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_EXPLICIT_ID = re.compile(r"\{[^}]*#([A-Za-z][\w.:-]*)[^}]*\}")


def pandoc_id(text: str) -> str:
    "Pandoc's auto identifier of a heading (what Quarto uses for anchors)."
    text = _EXPLICIT_ID.sub("", text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links, images -> their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"\*{1,3}([^*]+)\*{1,3}", r"\1", text)
    text = re.sub(r"(?<!\w)_{1,3}([^_]+)_{1,3}(?!\w)", r"\1", text)  # intraword _ is not emphasis
    text = re.sub(r"[^\w\s.-]", "", text.lower(), flags=re.UNICODE)
    text = re.sub(r"\s+", "-", text.strip())
    text = re.sub(r"^[^a-z]+", "", text)
    return text or "section"


def markdown_texts(nb: dict):
    "Markdown of a processed notebook: markdown cells and markdown outputs (show_doc)."
    for c in nb.get("cells", []):
        src = "".join(c.get("source", ""))
        if c.get("cell_type") == "markdown":
            yield src
        for o in c.get("outputs", []):
            md = (o.get("data") or {}).get("text/markdown")
            if md:
                yield "".join(md) if isinstance(md, list) else md


def page_ids(nb: dict) -> set:
    ids, seen = set(), {}
    for md in markdown_texts(nb):
        md = _FENCE.sub("", md)
        for _, text in _HEADING.findall(md):
            explicit = _EXPLICIT_ID.search(text)
            base = explicit.group(1) if explicit else pandoc_id(text)
            n = seen.get(base, 0)
            seen[base] = n + 1
            ids.add(base if n == 0 else f"{base}-{n}")
        ids.update(re.findall(r"\{#([A-Za-z][\w.:-]*)", md))
    for c in nb.get("cells", []):
        for o in c.get("outputs", []):
            h = (o.get("data") or {}).get("text/html")
            if h:
                ids.update(re.findall(r'\bid="([^"]+)"', "".join(h) if isinstance(h, list) else h))
    return ids


def title_of(nb: dict):
    for c in nb.get("cells", [])[:3]:
        if c.get("cell_type") == "raw":
            m = re.search(r"^title:\s*(.+)$", "".join(c.get("source", "")), re.M)
            if m:
                return m.group(1).strip()
    return None


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            a = dict(attrs)
            if a.get("href") and "anchor-link" not in (a.get("class") or ""):  # not nbconvert's own heading anchors
                self.hrefs.append(a["href"])


def render(proc: Path, rel: Path, out_dir: Path, problems: Problems):
    "Render one processed notebook to HTML; return its notebook JSON and the links in the page."
    import nbformat
    from nbconvert import HTMLExporter

    nb_path = proc / rel
    nb = json.loads(nb_path.read_text())
    for i, c in enumerate(nb.get("cells", [])):
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                problems.add(f"nbs/{rel}", f"cell {i} has an error output: {o.get('ename')}: {o.get('evalue')}")
            elif (
                o.get("output_type") == "stream"
                and o.get("name") == "stderr"
                and "Traceback" in "".join(o.get("text", ""))
            ):
                problems.add(f"nbs/{rel}", f"cell {i} printed a traceback")
    try:
        body, _ = HTMLExporter(template_name="basic").from_notebook_node(nbformat.reads(json.dumps(nb), as_version=4))
    except Exception as e:
        problems.add(f"nbs/{rel}", f"nbconvert could not render it: {type(e).__name__}: {e}")
        return nb, []
    dest = (out_dir / rel).with_suffix(".html")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(body)
    parser = _Links()
    parser.feed(body)
    return nb, parser.hrefs


def check_links(pages: dict, site_url: str, repo_url: str, work: Path, problems: Problems) -> int:
    "pages: notebook path (relative to nbs/) -> (notebook JSON, hrefs). Returns how many links were checked."
    html_pages = {p.with_suffix(".html").as_posix(): p for p in pages}
    ids = {p: page_ids(nb) for p, (nb, _) in pages.items()}
    site = urlsplit(site_url.rstrip("/") + "/")
    repo = urlsplit(repo_url.rstrip("/") + "/")
    checked = 0
    for page, (nb, hrefs) in pages.items():
        for href in hrefs:
            u = urlsplit(href)
            if u.scheme in ("mailto", "javascript", "data", "tel"):
                continue
            target = None
            if u.scheme in ("http", "https"):
                if u.netloc == site.netloc and u.path.startswith(site.path):
                    target = u.path[len(site.path) :] or "index.html"
                elif u.netloc == repo.netloc and u.path.startswith(repo.path + "blob/"):
                    checked += 1
                    parts = u.path[len(repo.path + "blob/") :].split("/", 1)
                    f = work / unquote(parts[1]) if len(parts) == 2 else None
                    if f is None or not f.exists():
                        problems.add(f"nbs/{page}", f"source link {href} names no file in the repository")
                    elif re.fullmatch(r"L\d+", u.fragment or "") and int(u.fragment[1:]) > len(
                        f.read_text().splitlines()
                    ):
                        problems.add(f"nbs/{page}", f"source link {href} is past the end of the file")
                    continue
                else:
                    continue  # another site
            elif u.scheme or u.netloc:
                continue
            else:
                target = (
                    (Path(page).parent / unquote(u.path)).as_posix()
                    if u.path
                    else Path(page).with_suffix(".html").as_posix()
                )
            checked += 1
            target = os.path.normpath(target).replace(os.sep, "/")
            if target.endswith("/") or target == ".":
                target = (target.rstrip("/") + "/index.html").lstrip("./")
            if target.endswith(".ipynb"):
                target = target[: -len(".ipynb")] + ".html"
            if not target.endswith(".html") and (target + ".html") in html_pages:
                target += ".html"
            if target not in html_pages:
                problems.add(f"nbs/{page}", f"link {href} goes to a page that does not exist ({target})")
                continue
            frag = unquote(u.fragment or "")
            if (
                frag
                and frag not in ids[html_pages[target]]
                and frag.lower() not in {i.lower() for i in ids[html_pages[target]]}
            ):
                problems.add(f"nbs/{page}", f"link {href}: no heading #{frag} on {target}")
    return checked


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="keep the processed notebooks (_proc/) and rendered pages (_html/) in this directory")
    args = ap.parse_args(argv)
    problems = Problems()
    scratch = Path(args.out).resolve() if args.out else Path(tempfile.mkdtemp(prefix="cjm-docs-"))
    if args.out and scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    try:
        copy_repo(scratch)
        os.chdir(scratch)
        from nbdev.config import get_config

        cfg = get_config()
        nbs = cfg.nbs_path
        check_config(scratch, problems)
        proc = process(scratch, problems)
        out_dir = scratch / "_html"
        pages = {}
        for rel in notebooks(nbs):
            if not (proc / rel).exists():
                if not any(p.startswith(f"nbs/{rel}:") for p in problems):
                    problems.add(f"nbs/{rel}", "no page")
                continue
            nb, hrefs = render(proc, rel, out_dir, problems)
            if not title_of(nb):
                problems.add(f"nbs/{rel}", "no title: start the notebook with a '# Title' markdown cell")
            pages[rel] = (nb, hrefs)
        sys.path.insert(0, str(ROOT / "tools"))
        import check_api_docs

        problems.extend(p for nb in check_api_docs.all_notebooks() for p in check_api_docs.check(nb))
        site_url = f"{cfg.doc_host.rstrip('/')}{cfg.doc_baseurl}"
        checked = check_links(pages, site_url, cfg.git_url, scratch, problems)
        print(
            f"check_docs: {len(pages)} pages rendered, {checked} internal links checked"
            + (f"; output in {scratch}" if args.out else "")
        )
    finally:
        os.chdir(cwd)
        if not args.out:
            shutil.rmtree(scratch, ignore_errors=True)
    for p in problems:
        print(f"check_docs: {p}", file=sys.stderr)
    if problems:
        print(f"check_docs: FAILED with {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
