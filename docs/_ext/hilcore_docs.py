"""Sphinx extension of the hilcore docs.

* ``hilcore-benchmarks`` (directive) renders ``benchmarks/results/*.json`` at build time;
* ``optional-doc`` (role) links to a page when it is part of the build and names its file otherwise;
* Markdown links from a page in ``docs/`` to repository files outside it that Sphinx cannot link
  (``../README.md``: a Markdown file that is not a page; ``../tests/``: a folder) become a download link
  to the file, and the folder's path in code, instead of a broken cross-reference (a warning, so an error
  under ``-W``). Other links are left to MyST (a ``.py`` file is a download link already).

Every JSON file becomes a section: the machine it ran on, then its tables.
The result files the benchmark scripts write today get curated tables
(``bench_cluster.py``, ``bench_scale.py``, ``bench_knn.py``,
``bench_hil_ops.py``, ``bench_epoch.py``); any other file gets a generic
rendering (its scalar fields, and one table per list of records), so a new
benchmark never breaks the build. A PNG next to a JSON file with the same
stem (as ``benchmarks/plot.py`` writes) is shown under it; other PNGs in the
folder come at the end.

Usage in an reStructuredText page::

    .. hilcore-benchmarks::
       :results: ../benchmarks/results

(``:results:`` is relative to the page; the default is ``../benchmarks/results``
from ``docs/``.)
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective, SphinxRole
from sphinx.util.nodes import nested_parse_with_titles

__all__ = ["setup", "render_results"]


# ------------------------------------------------------------------ formatting
def _esc(text) -> str:
    """Plain text safe inside reStructuredText (every markup character escaped)."""
    s = str(text).replace("\n", " ")
    out = []
    for ch in s:
        if ch in "\\*`_|[]<>:":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _num(v, digits: int = 3) -> str:
    """A number as people read it: ints with thousands separators, floats to ``digits`` significant places."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def _secs(v) -> str:
    return "-" if v is None else f"{_num(v)} s"


def _median(v):
    """The median of a list of timings (or the value itself)."""
    if isinstance(v, list):
        xs = sorted(x for x in v if isinstance(x, (int, float)))
        if not xs:
            return None
        m = len(xs) // 2
        return xs[m] if len(xs) % 2 else 0.5 * (xs[m - 1] + xs[m])
    return v


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _flatten(d: dict, prefix: str = "") -> dict:
    """One record's scalar fields; nested dicts become ``a.b`` columns, lists of scalars their median."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            if v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                out[key + " (median)"] = _median(v)
        else:
            out[key] = v
    return out


class _Page:
    """Accumulates reStructuredText lines."""

    def __init__(self):
        self.lines: list[str] = []

    def add(self, *lines: str):
        self.lines.extend(lines)

    def para(self, text: str):
        self.add(text, "")

    @staticmethod
    def _cell(text: str) -> str:
        """A table cell: never empty, and a leading ``-`` (missing value) is not a bullet list."""
        text = str(text)
        if text == "":
            return "\\ "
        if text.startswith("-") and (len(text) == 1 or text[1] == " "):
            return "\\" + text
        return text

    def table(self, header: list[str], rows: list[list[str]], title: str | None = None):
        if not rows:
            return
        self.add(f".. list-table:: {title}" if title else ".. list-table::", "   :header-rows: 1", "")
        for row in [header] + rows:
            cells = [self._cell(c) for c in row]
            self.add(f"   * - {cells[0]}")
            for cell in cells[1:]:
                self.add(f"     - {cell}")
        self.add("")


def _machine(res: dict) -> str:
    m = res.get("machine")
    if not isinstance(m, dict):
        return ""
    parts = [m.get("device_name") or m.get("cpu_model") or m.get("device")]
    if m.get("device") and m.get("device") != parts[0]:
        parts.append(f"device {m['device']}")
    if m.get("cpu_count"):
        parts.append(f"{m['cpu_count']} CPU cores")
    if m.get("torch_threads"):
        parts.append(f"{m['torch_threads']} torch threads")
    if m.get("memory_total_gb"):
        parts.append(f"{m['memory_total_gb']:.0f} GB")
    for lib in ("torch", "numpy", "hilcore"):
        if m.get(lib):
            parts.append(f"{lib} {m[lib]}")
    return ", ".join(_esc(p) for p in parts if p)


# ------------------------------------------------------------------ known formats
def _cluster(res: dict, page: _Page) -> bool:
    """bench_cluster.py: hilcore vs the dense baseline per N."""
    rows = res.get("rows")
    if res.get("benchmark") != "cluster" or not isinstance(rows, list):
        return False
    out = []
    for r in rows:
        h = r.get("hilcore") or {}
        hs = r.get("hilcore_stages_s") or {}
        b = r.get("baseline") or {}
        base = _secs(r["baseline_s"]) if r.get("baseline_s") is not None else _esc(b.get("skipped", "-"))
        rss_b = b.get("peak_rss_mb")
        rss_h = h.get("peak_rss_mb")
        out.append([
            _num(r.get("n")), base, _secs(r.get("hilcore_s")),
            f"{r['ratio']:.1f}x" if r.get("ratio") else "-",
            " / ".join(_num(hs.get(s)) for s in ("knn", "jaccard", "dbscan")),
            f"{_num(rss_b) if rss_b else '-'} / {_num(rss_h) if rss_h else '-'}",
            _num(r.get("ari")), _num(r.get("clusters")), _num(r.get("noise")),
        ])
    page.table(["N", "baseline", "hilcore", "ratio", "kNN / Jaccard / DBSCAN s", "peak RSS MB baseline / hilcore",
                "ARI", "clusters", "noise"], out, "Clustering (kNN + Jaccard + DBSCAN), medians")
    tot = res.get("sysu_total")
    if isinstance(tot, dict) and tot.get("ratio"):
        page.para(f"SYSU-MM01 total (N = {_num(tot.get('n'))}): baseline {_secs(tot.get('baseline_s'))}, "
                  f"hilcore {_secs(tot.get('hilcore_s'))}, **{tot['ratio']:.1f}x**.")
    return True


def _scale(res: dict, page: _Page) -> bool:
    """bench_scale.py: time and peak memory against N."""
    rows = res.get("rows")
    if res.get("benchmark") != "scale" and not (isinstance(rows, list) and rows and "stages_s" in rows[0]):
        return False
    out = []
    for r in rows or []:
        st = r.get("stages_s") or {}
        mem = r.get("peak_gpu_mb", r.get("peak_rss_mb"))
        status = str(r.get("status", "-")) + (f" ({r['reason']})" if r.get("reason") else "")
        out.append([_num(r.get("n")), _esc(status), _secs(r.get("total_s")),
                    " / ".join(_num(st.get(s)) for s in ("knn", "jaccard", "dbscan")),
                    _num(mem) if mem is not None else "-"])
    page.table(["N", "status", "total", "kNN / Jaccard / DBSCAN s", "peak memory MB"], out, "Scaling")
    return True


def _knn(res: dict, page: _Page) -> bool:
    """bench_knn.py: the kNN implementations side by side."""
    rows = res.get("rows")
    if res.get("benchmark") != "knn" or not isinstance(rows, list):
        return False
    impls: list[str] = []
    for r in rows:
        for name in (r.get("impl") or {}):
            if name not in impls:
                impls.append(name)
    out = []
    for r in rows:
        im = r.get("impl") or {}
        cells = [_num(r.get("n")), _num(r.get("dim")), _num(r.get("k"))]
        for name in impls:
            v = im.get(name) or {}
            g = v.get("gflops")
            cells.append(f"{_secs(v.get('median_s'))}" + (f" ({_num(g)} GFLOP/s)" if g else ""))
        out.append(cells)
    page.table(["N", "D", "k"] + [_esc(i) for i in impls], out, "Exact kNN, median time (dense-equivalent rate)")
    if res.get("note"):
        page.para(f"Note: {_esc(res['note'])}")
    return True


def _hil_ops(res: dict, page: _Page) -> bool:
    """bench_hil_ops.py: each HIL operator against its loop reference."""
    items = res.get("results")
    if not isinstance(items, list) or not items or "op" not in items[0]:
        return False
    out = []
    for r in items:
        params = ", ".join(f"{_esc(k)}={_num(v)}" for k, v in (r.get("params") or {}).items())
        out.append([_esc(r.get("op")), _esc(r.get("backend", "auto")), params, _secs(r.get("loop_s")),
                    _secs(r.get("hilcore_s")), f"{r['speedup']:.1f}x" if r.get("speedup") else "-",
                    f"{_esc(r.get('check', ''))}: {'ok' if r.get('ok') else 'FAILED'}"])
    page.table(["op", "backend", "size", "loop reference", "hilcore", "speed-up", "check"], out,
               "HIL operators against per-sample / per-cluster loops")
    return True


def _epoch(res: dict, page: _Page) -> bool:
    """bench_epoch.py: cluster_epoch against the loop reference, stage by stage."""
    if "hilcore_stages" not in res or "loop_s" not in res:
        return False
    page.para(f"N = {_num(res.get('n_rgb'))} RGB + {_num(res.get('n_ir'))} IR, D = {_num(res.get('dim'))}: "
              f"hilcore {_secs(res.get('hilcore_s'))}, loop reference {_secs(res.get('loop_s'))}, "
              f"**{res.get('speedup', 0):.1f}x**; identical labels: RGB {_num(res.get('same_labels_rgb'))}, "
              f"IR {_num(res.get('same_labels_ir'))}, shared {_num(res.get('same_shared_labels'))}.")
    hs, ls = res.get("hilcore_stages") or {}, res.get("loop_stages") or {}
    page.table(["stage", "hilcore s"], [[_esc(k), _num(v)] for k, v in hs.items()], "cluster_epoch stages")
    page.table(["stage", "loop reference s"], [[_esc(k), _num(v)] for k, v in ls.items()], "Loop reference stages")
    counts = res.get("counts") or {}
    page.table(["count", "value"], [[_esc(k), _num(v)] for k, v in counts.items()], "Clusters found")
    return True


def _generic(res, page: _Page) -> None:
    """Any other result file: its scalar fields, then a table per list of records."""
    if not isinstance(res, dict):
        page.para(_esc(json.dumps(res)[:500]))
        return
    scal = [[_esc(k), _esc(_num(v))] for k, v in _flatten({k: v for k, v in res.items()
                                                           if k != "machine" and not isinstance(v, list)}).items()]
    page.table(["field", "value"], scal)
    for k, v in res.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            recs = [_flatten(x) for x in v]
            cols: list[str] = []
            for rec in recs:
                cols += [c for c in rec if c not in cols]
            cols = cols[:12]  # keep the table readable
            page.table([_esc(c) for c in cols], [[_esc(_num(rec.get(c))) for c in cols] for rec in recs], _esc(k))


_RENDERERS = (_cluster, _scale, _knn, _hil_ops, _epoch)


def _committed(results_dir: Path, pattern: str) -> list[Path]:
    """The files of ``results_dir`` matching ``pattern`` that are committed to git (a benchmark run on this
    machine, not yet committed, is not published); every matching file when ``results_dir`` is not in a git
    checkout (a source archive) or git is missing."""
    import subprocess

    if not results_dir.is_dir():
        return []
    found = sorted(results_dir.glob(pattern))
    try:
        proc = subprocess.run(["git", "ls-tree", "-r", "-z", "--name-only", "HEAD", "--", "."], cwd=results_dir,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return found
    if proc.returncode != 0:
        return found          # not a git checkout (or no commit yet)
    names = {Path(n).name for n in proc.stdout.decode("utf-8", "replace").split("\0") if n}
    return [f for f in found if f.name in names]


def render_results(results_dir: Path, rel_prefix: str) -> tuple[list[str], list[Path]]:
    """reStructuredText for every result file in ``results_dir``; also returns the files read.

    ``rel_prefix`` is how the page refers to ``results_dir`` (for the images).
    """
    page = _Page()
    files, pngs = _committed(results_dir, "*.json"), _committed(results_dir, "*.png")
    shown: set[Path] = set()
    if not files and not pngs:
        page.para(f"No benchmark results found in ``{results_dir.name}/``; run the scripts in ``benchmarks/``.")
    for f in files:
        title = _esc(f.stem)
        page.add(title, "-" * len(title), "")
        try:
            res = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            page.para(f"Could not read ``{f.name}``: {_esc(e)}")
            continue
        mach = _machine(res) if isinstance(res, dict) else ""
        quick = " (quick run, small sizes)" if isinstance(res, dict) and res.get("quick") else ""
        page.para(f"From ``benchmarks/results/{f.name}``{quick}." + (f" Machine: {mach}." if mach else ""))
        if isinstance(res, dict) and isinstance(res.get("params"), dict):
            page.para("Parameters: " + ", ".join(f"{_esc(k)} = {_esc(_num(v))}" for k, v in res["params"].items()
                                                 if _scalar(v)) + ".")
        if not (isinstance(res, dict) and any(r(res, page) for r in _RENDERERS)):
            _generic(res, page)
        png = f.with_suffix(".png")
        if png in pngs:
            shown.add(png)
            page.add(f".. image:: {rel_prefix}/{png.name}", f"   :alt: {_esc(png.stem)}", "   :width: 100%", "")
    rest = [p for p in pngs if p not in shown]
    if rest:
        page.add("Other plots", "-----------", "")
        for p in rest:
            page.add(f".. figure:: {rel_prefix}/{p.name}", f"   :alt: {_esc(p.stem)}", "   :width: 100%", "",
                     f"   ``{p.name}``", "")
    return page.lines, files + pngs


class BenchmarkResults(SphinxDirective):
    has_content = False
    option_spec = {"results": directives.unchanged}

    def run(self):
        rel = self.options.get("results", "../benchmarks/results").rstrip("/")
        page_dir = Path(self.env.doc2path(self.env.docname)).parent
        results_dir = (page_dir / rel).resolve()
        lines, used = render_results(results_dir, rel)
        for p in used:
            self.env.note_dependency(os.path.abspath(p))
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source=str(results_dir)), node)
        return node.children


_LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\(([^()\s]+)\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _outside_link(srcdir: Path, docdir: Path, text: str, target: str) -> str | None:
    """The replacement of ``[text](target)`` when ``target`` is a repository path outside the docs, else None."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return None
    path = target.split("#", 1)[0]
    if not path:
        return None
    full = (docdir / path).resolve()
    try:
        full.relative_to(srcdir.resolve())
        return None  # inside the docs: a page or a file Sphinx handles
    except ValueError:
        pass
    if full.is_dir():
        return f"{text} (`{path}`)"
    if full.is_file() and full.suffix in (".md", ".rst", ".txt"):
        return f"{{download}}`{text} <{path}>`"
    return None


def rewrite_outside_links(app, docname: str, source: list[str]) -> None:
    """``source-read`` hook for the Markdown pages (see the module docstring); code blocks are left alone."""
    src = Path(app.srcdir)
    doc = Path(app.env.doc2path(docname))
    if doc.suffix != ".md":
        return
    out, in_code = [], False
    for line in source[0].splitlines(keepends=True):
        if _FENCE.match(line):
            in_code = not in_code
        if not in_code and "](" in line:
            def sub(m):
                new = _outside_link(src, doc.parent, m.group(1), m.group(2))
                return m.group(0) if new is None else new
            line = _LINK.sub(sub, line)
        out.append(line)
    source[0] = "".join(out)


class OptionalDoc(SphinxRole):
    """``{optional-doc}`title <docname>``: a link to ``docname`` when that page is part of the build, else the
    title and the file name as plain text (for pages other branches add, so the build never has a dead link)."""

    def run(self):
        text = self.text.strip()
        if text.endswith(">") and "<" in text:
            title, target = text[:-1].rsplit("<", 1)
            title, target = title.strip(), target.strip()
        else:
            title = target = text
        target = target[:-3] if target.endswith(".md") else target
        here = os.path.dirname(self.env.docname)
        docname = target.lstrip("/") if target.startswith("/") else os.path.normpath(os.path.join(here, target))
        docname = docname.replace(os.sep, "/")
        if docname in self.env.found_docs:
            ref = addnodes.pending_xref("", nodes.inline(title, title), refdomain="std", reftype="doc",
                                        reftarget="/" + docname, refexplicit=True, refwarn=True,
                                        refdoc=self.env.docname)
            return [ref], []
        return [nodes.inline(title, title), nodes.Text(" ("), nodes.literal(f"docs/{docname}.md", f"docs/{docname}.md"),
                nodes.Text(")")], []


def setup(app):
    app.add_directive("hilcore-benchmarks", BenchmarkResults)
    app.add_role("optional-doc", OptionalDoc())
    app.connect("source-read", rewrite_outside_links)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
