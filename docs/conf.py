"""Sphinx configuration for greenzmq's documentation site.

Build (CI does this, warnings are errors)::

    pip install ".[docs]" && scripts/build-docs.sh

The guides are the Markdown pages in this folder (read by myst-parser), the
API reference is autodoc over the library's own docstrings (docs/api/), and
the theme is furo. The docstrings are numpy-style with one custom section,
"Green behaviour", which napoleon renders as a section of its own.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.errors import PycodeError
from sphinx.ext.autodoc.mock import mock
from sphinx.pycode import ModuleAnalyzer
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# document the checkout this file belongs to, even if another greenzmq is installed
sys.path.insert(0, str(ROOT))

from greenzmq._version import VERSION  # noqa: E402

project = "greenzmq"
author = "the greenzmq authors"
copyright = "greenzmq authors, BSD-3-Clause"  # noqa: A001 (Sphinx's name)
release = VERSION
version = VERSION

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# -- MyST: the guides are plain GitHub Markdown --------------------------------
# "#bad-payloads"-style links to headings, as GitHub makes them
myst_heading_anchors = 3

# -- autodoc + napoleon: the docstrings as they are -----------------------------
autodoc_member_order = "bysource"
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Importing locust monkey-patches the whole process (gevent.monkey.patch_all),
# which the build must not do; greenzmq.locust only needs locust's names to be
# documented. autodoc_mock_imports is not enough: autodoc and viewcode import
# a class's base module again outside their mock, so the mock stays for the
# whole build.
_mock_locust = mock(["locust"])
_mock_locust.__enter__()

napoleon_google_docstring = False  # prose like "Returns: ..." is not a section
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# "Green behaviour" (what blocks, what raises, which greenlet) is a section of
# its own in every public docstring; without this it would be an RST title
# inside a docstring ("Unexpected section title")
napoleon_custom_sections = ["Green behaviour"]

# -- HTML ------------------------------------------------------------------------
html_theme = "furo"
html_title = f"greenzmq {VERSION}"
html_static_path: list[str] = []
html_show_sourcelink = False

# warnings are errors in CI (-W); cross-references to pyzmq, gevent and the
# standard library stay plain text (no intersphinx: the build needs no network)
nitpicky = False
# The same object is documented under the facade's name and its module's
# (greenzmq.Context and greenzmq.context.Context, the codec names re-exported
# by greenzmq.serialize): autodoc marks the first as an alias (":canonical:"),
# but a short name in a signature's type hint ("Context") still finds both.
# Either target is the same object, so the ambiguity is not a defect.
suppress_warnings = ["ref.python"]

# -- links from the guides and the README to files of the repository ------------
# The guides and the README (included by index.md) link to source files and
# READMEs outside docs/ (``greenzmq/_waiter.py``, ``../loadtests/README.md``).
# They are not pages of the site: with GREENZMQ_SOURCE_URL set (e.g.
# "https://github.com/OWNER/greenzmq/blob/main/"), such a link goes to that
# file in the repository browser; without it, the link text stays, as code.
SOURCE_URL = os.environ.get("GREENZMQ_SOURCE_URL", "")


def _node_source(node: Any) -> str | None:
    while node is not None:
        if getattr(node, "source", None):
            return node.source
        node = node.parent
    return None


class RepositoryFileLinks(SphinxPostTransform):
    """Turn links to repository files outside docs/ into source links or text."""

    default_priority = 5  # before myst's reference resolver (9) warns about them

    def run(self, **kwargs: Any) -> None:
        for node in list(self.document.findall(addnodes.pending_xref)) + list(
            self.document.findall(addnodes.download_reference)
        ):
            if node.get("reftype") != "myst":
                continue
            target = str(node.get("reftarget", "")).split("#", 1)[0]
            source = _node_source(node)
            if not target or not source or "://" in target:
                continue
            if node.get("refdomain") == "doc":  # a Markdown file: its target is a docname
                path = (DOCS / (target + ".md")).resolve()
            else:  # a path, relative to the file that holds the link
                path = (Path(source).parent / target).resolve()
            if not path.exists() or path.is_relative_to(DOCS) or not path.is_relative_to(ROOT):
                continue
            relpath = path.relative_to(ROOT).as_posix()
            text = node.astext()
            if SOURCE_URL:
                new: nodes.Node = nodes.reference(
                    "", "", nodes.literal(text, text), refuri=SOURCE_URL + relpath
                )
            else:
                new = nodes.literal(text, text)
            node.replace_self(new)


# -- constants in __all__ -------------------------------------------------------------
# autodoc documents module-level data only when it has a "#:" comment where it is
# assigned, so a constant re-exported from another module (greenzmq.device's
# BURST, pyzmq's TOPIC_DELIM) would be left out. For those, the API page gets a
# py:data entry with the doc comment of the module that defines it, if any.


def _is_data(obj: Any) -> bool:
    return not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj) or callable(obj))


def _attr_doc(modname: str, name: str) -> list[str] | None:
    try:
        return ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", name))
    except PycodeError:
        return None


def _defined_in(modname: str, name: str, obj: Any) -> tuple[str | None, list[str]]:
    """Where a re-exported constant comes from, and its doc comment there."""
    pattern = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=", re.M)
    found = None
    for other, module in sorted(sys.modules.items()):
        if other == modname or not other.startswith(("greenzmq", "zmq")) or module is None:
            continue
        if getattr(module, name, None) is not obj:
            continue
        doc = _attr_doc(other, name)
        if doc:
            return other, doc
        try:
            source = inspect.getsource(module)
        except (OSError, TypeError):
            continue
        if pattern.search(source):
            found = other
    return found, []


def add_reexported_constants(app: Sphinx, docname: str, source: list[str]) -> None:
    if not docname.startswith("api/greenzmq."):
        return
    modname = docname.removeprefix("api/")
    module = importlib.import_module(modname)
    entries = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if not _is_data(obj) or _attr_doc(modname, name) or f"py:data:: {name}\n" in source[0]:
            continue
        origin, doc = _defined_in(modname, name, obj)
        text = [f"Re-exported from :mod:`{origin}`." if origin else "", "", *doc]
        body = "\n".join(f"   {line}" if line else "" for line in text)
        entries.append(f".. py:data:: {name}\n   :module: {modname}\n   :value: {obj!r}\n\n{body}\n")
    if entries:
        source[0] += "\n```{eval-rst}\n" + "\n".join(entries) + "```\n"


# -- every public name is documented ---------------------------------------------
# Each page docs/api/greenzmq.X.md documents module greenzmq.X: every name in its
# __all__ must have an entry, and the facade page every name that greenzmq
# defines or swaps for pyzmq's. A public module needs a page, or a line here.
NOT_IN_API = {
    "greenzmq.eventloop.ioloop": "its names are on the greenzmq.eventloop page",
    "greenzmq.eventloop.periodic": "its names are on the greenzmq.eventloop page",
    "greenzmq.eventloop.zmqstream": "its names are on the greenzmq.eventloop page",
    "greenzmq.service.http": "on the greenzmq.service page",
    "greenzmq.demo": "the main job's launcher (python -m greenzmq.demo), see loadtesting.md",
    "greenzmq.demo.locustfile": "the main job's locustfile, see loadtesting.md",
}
logger = logging.getLogger(__name__)


def _public_modules() -> list[str]:
    import greenzmq

    found = pkgutil.walk_packages(greenzmq.__path__, "greenzmq.")
    return sorted(m.name for m in found if not any(part.startswith("_") for part in m.name.split(".")))


def _facade_names() -> list[str]:
    import zmq

    import greenzmq

    return [n for n in greenzmq.__all__ if getattr(greenzmq, n) is not getattr(zmq, n, None)]


def check_api_coverage(app: Sphinx, env: Any) -> None:
    documented = set(env.domains.python_domain.objects) | set(env.domains.python_domain.modules)
    pages = {p.stem: p for p in sorted((DOCS / "api").glob("greenzmq.*.md"))}
    expected = [f"greenzmq.{n}" for n in _facade_names()]
    for modname in pages:
        expected += [f"{modname}.{n}" for n in getattr(importlib.import_module(modname), "__all__", [])]
    for name in expected:
        if name not in documented:
            logger.warning("%s is public (__all__) but has no entry in docs/api/", name)
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages.values())
    for modname in _public_modules():
        if modname not in NOT_IN_API and f"automodule:: {modname}\n" not in text:
            logger.warning("public module %s has no page in docs/api/ (nor a NOT_IN_API reason)", modname)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_post_transform(RepositoryFileLinks)
    app.connect("source-read", add_reexported_constants)
    app.connect("env-check-consistency", check_api_coverage)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
