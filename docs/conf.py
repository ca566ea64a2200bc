"""Sphinx configuration: the user guide (Markdown, MyST) and the API reference generated from
the docstrings (autodoc + napoleon; the docstrings' ``.. math::`` blocks render with MathJax).
Sphinx rather than MkDocs: the docstrings are reStructuredText in PyG's style, which autodoc
renders as written.

    pip install -e ".[docs,train,det,viz]"
    sphinx-build -W -b html docs docs/_build/html
"""

from __future__ import annotations

import diffpool

project = "diffpool"
author = "diffpool developers"
copyright = "2026, diffpool developers"
release = version = diffpool.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

autodoc_default_options = {"show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# offline builds: no inventories are fetched, references to torch/PyG stay plain text
intersphinx_mapping: dict = {}

html_theme = "furo"
html_title = f"diffpool {release}"
