"""Sphinx configuration of the hilcore documentation.

Build (from the repository root; no network needed, intersphinx is off):

    python -m sphinx -W -b html docs docs/_build/html

The API reference is read from the docstrings (autodoc + napoleon, Google
style); the Markdown pages (``docs/*.md``) go through myst-parser; the
benchmark page is generated from ``benchmarks/results/*.json`` by the local
extension ``docs/_ext/hilcore_docs.py``.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # hilcore from this checkout, installed or not
sys.path.insert(0, os.path.join(HERE, "_ext"))

import torch  # noqa: E402

if not torch.cuda.is_available():
    # the Triton modules are documented too; without a GPU they import for the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import hilcore  # noqa: E402

project = "hilcore"
author = "the hilcore authors"
copyright = "the hilcore authors, MIT licence"
version = release = hilcore.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "hilcore_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
templates_path = []
# Markdown pages written for GitHub may skip heading levels (H1 -> H3); that is cosmetic, not an error
suppress_warnings = ["myst.header"]

# autodoc / napoleon: Google-style docstrings, signatures as written in the source
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# MyST: `#anchor` links to headings, and ::: fences
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# no network during the build: sphinx.ext.intersphinx is deliberately not enabled

html_theme = "alabaster"
html_static_path = []
html_title = f"hilcore {release}"
html_theme_options = {
    "description": "Jaccard + DBSCAN clustering kernels for visible-infrared ReID (HIL)",
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_show_sourcelink = False
pygments_style = "sphinx"
