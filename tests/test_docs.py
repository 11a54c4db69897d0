"""The documentation: every public object has a runnable example and a reference entry; the Sphinx build is clean.

The examples themselves run as doctests in the same ``python -m pytest -q``
(pyproject.toml: ``--doctest-modules`` over ``hilcore/``); here we check that
none is missing, that the API reference lists every public name, and that
``sphinx-build -W`` (warnings are errors) builds the site, benchmark page
included, without a network.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hilcore
import hilcore.compat
import hilcore.eval
import hilcore.synthetic

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HAVE_SPHINX = importlib.util.find_spec("sphinx") is not None and importlib.util.find_spec("myst_parser") is not None
needs_sphinx = pytest.mark.skipif(not HAVE_SPHINX, reason="sphinx and myst-parser are not installed "
                                                           "(pip install -e '.[docs]')")

# result containers: their fields are shown by the examples of the functions that return them
_RESULT_TYPES = {"EpochClusters", "MatchResult"}


def _public():
    out = [(f"hilcore.{n}", getattr(hilcore, n)) for n in hilcore.__all__ if n != "__version__"]
    out += [(f"hilcore.compat.{n}", getattr(hilcore.compat, n)) for n in hilcore.compat.__all__]
    out += [(f"hilcore.eval.{n}", getattr(hilcore.eval, n)) for n in ("sysu_metrics", "sysu_gallery")]
    out += [("hilcore.synthetic", hilcore.synthetic)]
    return out


@pytest.mark.parametrize("name,obj", _public(), ids=[n for n, _ in _public()])
def test_public_object_has_an_example_with_output(name, obj):
    if name.rsplit(".", 1)[-1] in _RESULT_TYPES:
        pytest.skip(f"{name} is a result container; the example of the function returning it shows its fields")
    doc = inspect.getdoc(obj) or ""
    lines = doc.splitlines()
    prompts = [i for i, ln in enumerate(lines) if ln.lstrip().startswith(">>> ")]
    assert prompts, f"{name}: the docstring has no example (>>> lines)"
    # at least one expected output: a non-empty line after a prompt that is neither a prompt nor a continuation
    outputs = [ln for ln in lines[prompts[0] + 1:] if ln.strip() and not ln.lstrip().startswith((">>>", "..."))]
    assert outputs, f"{name}: the example shows no output to check"
    assert not any(ln.strip() == "..." for ln in outputs), f"{name}: an expected output hidden behind '...'"


def _documented_names() -> set[str]:
    names = set()
    for rst in (DOCS / "api").glob("*.rst"):
        text = rst.read_text()
        module = "hilcore"
        for line in text.splitlines():
            m = re.match(r"\.\. currentmodule:: (\S+)", line)
            if m:
                module = m.group(1)
            m = re.match(r"\.\. auto(?:function|class|exception):: (\S+)", line)
            if m:
                target = m.group(1)
                names.add(target if target.startswith("hilcore.") else f"{module}.{target}")
    return names


def test_api_reference_lists_every_public_name():
    documented = _documented_names()
    missing = [n for n, _ in _public() if n != "hilcore.synthetic" and n not in documented]
    assert not missing, f"not in docs/api/*.rst: {missing}"


def _sphinx(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(out / ".doctrees"),
           *extra, str(src), str(out / "html")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


@needs_sphinx
def test_docs_build_without_warnings(tmp_path):
    r = _sphinx(DOCS, tmp_path)
    assert r.returncode == 0, f"sphinx-build -W failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    html = tmp_path / "html"
    page = (html / "api" / "clustering.html").read_text()
    # the signature and the example of jaccard_distance are rendered
    assert 'id="hilcore.jaccard_distance"' in page
    assert "max_distance" in page and "k1" in page
    assert "jaccard_distance</span></span><span class=\"sig-paren\">(" in page
    example = page[page.index('id="hilcore.jaccard_distance"'):page.index('id="hilcore.dbscan"')]
    assert '<span class="gp">&gt;&gt;&gt; </span>' in example and '<span class="n">diagonal</span>' in example
    assert "((200, 200), 0.0)" in example            # its expected output
    # every guide and API page exists; the index links to them
    for p in ("index", "guide", "benchmarks", "api/index", "api/hil", "api/memory", "api/compat",
              "api/backends", "api/eval"):
        assert (html / f"{p}.html").is_file(), p
    index = (html / "index.html").read_text()
    assert 'href="guide.html"' in index and 'href="api/index.html"' in index
    # the Markdown pages in docs/ are all part of the build (glob toctree)
    for md in DOCS.glob("*.md"):
        assert (html / f"{md.stem}.html").is_file(), md.name
        assert f'href="{md.stem}.html"' in index or md.stem == "index", md.name
    # one section per result file on the benchmark page, with the numbers of the file
    bench = (html / "benchmarks.html").read_text()
    for f in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        assert f.name in bench, f.name
    cluster = ROOT / "benchmarks" / "results" / "cluster_cpu_intel-xeon.json"
    if cluster.exists():
        tot = json.loads(cluster.read_text()).get("sysu_total")
        if tot and tot.get("ratio"):
            assert f"{tot['ratio']:.1f}x" in bench


def _mini_project(tmp_path: Path, page: str, results: dict[str, object]) -> Path:
    src = tmp_path / "src"
    (src / "results").mkdir(parents=True)
    for name, content in results.items():
        (src / "results" / name).write_text(content if isinstance(content, str) else json.dumps(content))
    (src / "conf.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(DOCS / "_ext")!r})
        extensions = ["myst_parser", "hilcore_docs"]
        project = "t"
        html_static_path = []
    """))
    (src / "index.rst").write_text("Index\n=====\n\n.. toctree::\n\n   bench\n   page\n")
    (src / "bench.rst").write_text("Bench\n=====\n\n.. hilcore-benchmarks::\n   :results: results\n")
    (src / "page.md").write_text(page)
    return src


@needs_sphinx
def test_benchmark_directive_renders_known_and_unknown_files(tmp_path):
    cluster = {"benchmark": "cluster", "machine": {"device": "cpu", "device_name": "Test CPU", "cpu_count": 3},
               "params": {"k1": 30, "eps": 0.6},
               "rows": [{"n": 1234, "hilcore_s": 0.5, "baseline_s": 2.0, "ratio": 4.0, "ari": 1.0,
                         "hilcore_stages_s": {"knn": 0.25, "jaccard": 0.2, "dbscan": 0.05},
                         "hilcore": {"peak_rss_mb": 100.0}, "baseline": {"peak_rss_mb": 300.0}},
                        {"n": 99999, "hilcore_s": 9.0, "hilcore": {}, "baseline": {"skipped": "does not fit"}}]}
    scale = {"benchmark": "scale", "machine": {"device": "cuda", "device_name": "Test GPU"},
             "rows": [{"n": 10000, "status": "ok", "total_s": 0.25, "peak_gpu_mb": 512.0,
                       "stages_s": {"knn": 0.125, "jaccard": 0.1, "dbscan": 0.025}},
                      {"n": 1000000, "status": "oom", "reason": "in knn: CUDA out of memory"}]}
    strange = {"what": "a future benchmark", "value": float("nan"), "nested": {"a": 1, "b": [1, 2, 3]},
               "records": [{"x": 1, "y": "*bold?*"}, {"x": 2, "z": None}]}
    (tmp_path / "NOTES.md").write_text("# notes outside the docs\n")
    (tmp_path / "folder").mkdir()
    src = _mini_project(tmp_path, "# Page\n\nsee {optional-doc}`the missing page <nowhere>` and "
                        "{optional-doc}`the bench <bench>`; [the notes](../NOTES.md#top), "
                        "[a folder](../folder/).\n\n```\n[in code](../NOTES.md)\n```\n",
                        {"cluster_t.json": cluster, "scale_t.json": scale, "other.json": strange, "broken.json": "{not json",
                         "cluster_t.png": "not really a png", "loose.png": "x"})
    r = _sphinx(src, tmp_path / "out")
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    html = (tmp_path / "out" / "html" / "bench.html").read_text()
    assert "1,234" in html and "4.0x" in html and "0.5 s" in html and "2 s" in html
    assert "does not fit" in html and "Test CPU" in html and "3 CPU cores" in html
    assert "1,000,000" in html and "oom (in knn" in html and "0.125 / 0.1 / 0.025" in html and "Test GPU" in html
    assert "a future benchmark" in html and "*bold?*" in html   # escaped, not emphasis
    assert "nested.b (median)" in html
    assert "Could not read" in html and "broken.json" in html
    assert "cluster_t.png" in html and "loose.png" in html
    tables = re.findall(r"<table.*?</table>", html, flags=re.S)
    assert tables and not any("<ul" in t for t in tables), "a missing value rendered as a bullet list"
    page = (tmp_path / "out" / "html" / "page.html").read_text()
    assert "docs/nowhere.md" in page and 'href="bench.html"' in page
    # links out of the docs: a Markdown file becomes a download, a folder its path; code blocks stay as written
    assert re.search(r'class="reference download internal"[^>]*href="_downloads/[0-9a-f]+/NOTES.md"', page)
    assert '<span class="pre">../folder/</span>' in page
    assert '<span class="n">code</span><span class="p">](</span>' in page


def _package_doctests():
    import doctest
    import importlib
    import pkgutil

    finder = doctest.DocTestFinder(exclude_empty=True)
    for info in pkgutil.walk_packages(hilcore.__path__, "hilcore."):
        if info.name.startswith("hilcore.train") or (info.name.startswith("hilcore.backend.triton")
                                                       and importlib.util.find_spec("triton") is None):
            continue
        mod = importlib.import_module(info.name)
        yield from (t for t in finder.find(mod) if t.examples)


def test_gpu_examples_are_tagged_to_skip_without_a_gpu():
    """An example that needs a GPU carries the comment root conftest.py turns into a skip with a reason."""
    tags = ("# needs a CUDA GPU", "# needs CUDA or TRITON_INTERPRET=1")
    found = 0
    for t in _package_doctests():
        found += 1
        src = "\n".join(ex.source for ex in t.examples)
        if ".cuda()" in src or 'device="cuda"' in src or "device='cuda'" in src:
            assert any(tag in src for tag in tags), f"{t.name}: uses CUDA without a '# needs a CUDA GPU' tag"
    assert found >= 25, f"only {found} docstring examples found in hilcore/"
