"""Sphinx configuration of the bsb-store documentation.

Built by ``tox -e docs`` with ``-W`` (every warning is an error), once as HTML and once
with the doctest builder, which runs the ``testcode`` examples of the guide pages.
"""

from __future__ import annotations

import importlib.util
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from bsb_store import __version__

project = "bsb-store"
author = "bsb-store developers"
copyright = "bsb-store developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# -- autodoc ------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
napoleon_google_docstring = True
napoleon_numpy_docstring = True

# -- doctest ------------------------------------------------------------------------
# Every example runs in its own empty temporary directory.
doctest_global_setup = """
import os as _os
import tempfile as _tempfile
_docs_cwd = _os.getcwd()
_docs_tmp = _tempfile.TemporaryDirectory()
_os.chdir(_docs_tmp.name)
"""
doctest_global_cleanup = """
_os.chdir(_docs_cwd)
_docs_tmp.cleanup()
"""

# -- HTML ---------------------------------------------------------------------------
html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"bsb-store {release}"
html_static_path: list[str] = []
