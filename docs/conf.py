"""Sphinx configuration of cnnext's documentation.

Build it (warnings are errors) with::

    pip install ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html

The API reference is generated from each public module's ``__all__`` (see
``write_api_pages``), so a name added to a module appears without editing
these files; the gallery's examples (docs/examples/plot_*.py) run during the
build and draw their figures on the bundled MNIST sample or Fashion-MNIST.
"""

import importlib
import os
import sys
import types
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# `python -m sphinx` from the checkout's root puts the root first on sys.path,
# where `import cnnext` would find the uncompiled source tree: document (and
# run the gallery with) the installed package instead.
sys.path[:] = [path for path in sys.path if Path(path or ".").resolve() != ROOT]

# The build shares its machine (CI: 2 cores): idle OpenMP threads sleep after
# ~16 us instead of spinning ~5 ms and stealing the core the next call needs.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import cnnext  # noqa: E402

project = "cnnext"
author = "The cnnext developers"
copyright = "the cnnext developers"
release = cnnext.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "**/*.md", "examples/README.rst"]
templates_path = ["_templates"]
html_static_path = []
default_role = "code"
nitpicky = False

# -------------------------------------------------------------- API pages
# (module, page title, lead sentence); modules other issues add are documented
# as soon as they can be imported.
API_MODULES = [
    ("cnnext", "cnnext", "The top-level package: the model, checkpoints, threads, the build."),
    ("cnnext.functional", "cnnext.functional", "Validated kernels on NCHW arrays."),
    ("cnnext.layers", "cnnext.layers", "Layers for ``Sequential``."),
    ("cnnext.optim", "cnnext.optim", "Optimisers."),
    ("cnnext.losses", "cnnext.losses", "Loss functions."),
    ("cnnext.models", "cnnext.models", "Ready-made networks."),
    ("cnnext.datasets", "cnnext.datasets", "MNIST, Fashion-MNIST and the bundled sample."),
    ("cnnext.history", "cnnext.history", "What ``fit`` returns."),
    ("cnnext.callbacks", "cnnext.callbacks", "Callbacks for ``fit``."),
    ("cnnext.interop", "cnnext.interop", "ONNX and PyTorch in and out."),
    ("cnnext.compat", "cnnext.compat", "The seed notebook's own API."),
]


def public_names(module):
    """The names of ``module.__all__`` that are not modules (those get pages of their own)."""
    return [name for name in module.__all__ if not name.startswith("__")
            and not isinstance(getattr(module, name), types.ModuleType)]


def write_api_pages(out):
    """Write api/<module>.rst for every importable public module and api/index.rst."""
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    for name, title, lead in API_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # not landed yet
        names = public_names(module)
        lines = [title, "=" * len(title), "", f".. automodule:: {name}", "   :no-members:", "",
                 lead, ""]
        if names:
            lines += [f".. currentmodule:: {name}", "", ".. autosummary::",
                      "   :toctree: generated", "   :nosignatures:", ""]
            lines += [f"   {n}" for n in sorted(names, key=str.lower)]
        page = name.replace("cnnext.", "") if name != "cnnext" else "cnnext"
        text = "\n".join(lines) + "\n"
        path = out / f"{page}.rst"
        if not path.exists() or path.read_text() != text:  # keep mtimes: incremental builds
            path.write_text(text)
        pages.append(page)
    index = ["API reference", "=============", "",
             "Every public name of every public module, generated from their docstrings.",
             "", ".. toctree::", "   :maxdepth: 1", ""] + [f"   {page}" for page in pages]
    text = "\n".join(index) + "\n"
    if not (out / "index.rst").exists() or (out / "index.rst").read_text() != text:
        (out / "index.rst").write_text(text)


write_api_pages(DOCS / "api")

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"
autoclass_content = "class"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
}
# The build runs offline (CI, 2 cores): no inventory downloads unless asked.
if not os.environ.get("CNNEXT_DOCS_INTERSPHINX"):
    intersphinx_mapping = {}

# ---------------------------------------------------------------- gallery


sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "reset_modules": ("matplotlib",),
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "min_reported_time": 0,
    "show_memory": False,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "line_numbers": False,
    "plot_gallery": os.environ.get("CNNEXT_DOCS_GALLERY", "True"),
}

# ------------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"cnnext {release}"
html_theme_options = {
    "github_url": "https://github.com/cnnext/cnnext",
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_show_sourcelink = False
