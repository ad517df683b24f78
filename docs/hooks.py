"""The docs build's own code: an MkDocs hook and a griffe extension.

The hook serves the repository files the pages link to from where they are
(BENCHMARKS.md and CONTRIBUTING.md become pages, figures and the notebook are
copied as they are, so links keep their GitHub paths: a page in docs/ links
`../BENCHMARKS.md`, which works on GitHub, and the hook points it at the
site's `BENCHMARKS.md`) and writes the Pygments stylesheet, so code is
coloured without fetching anything. The extension shows the public API as
users call it (see `PublicAPI`). mkdocs.yml keeps this file out of the site.
"""

import glob
import inspect
import pathlib
import re

import griffe
from mkdocs.structure.files import File
from pygments.formatters import HtmlFormatter

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXTRA = ["BENCHMARKS.md", "CONTRIBUTING.md", "examples/colab_tpu.ipynb"]
PYGMENTS_CSS = "css/pygments.css"  # listed in mkdocs.yml's extra_css


def on_files(files, config):
    figures = sorted(glob.glob("benchmarks/results/*.png", root_dir=ROOT))
    for path in [*EXTRA, *figures]:
        files.append(File(path, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    style = HtmlFormatter(style="default").get_style_defs(".highlight")
    files.append(File.generated(config, PYGMENTS_CSS, content=style))
    return files


def on_page_markdown(markdown, page, config, files):
    # GitHub resolves ../X from docs/; the site serves X (on_files) at its root.
    def site_path(link):
        return f"]({link[1]}" if files.get_file_from_path(link[1]) else link[0]

    return re.sub(r"\]\(\.\./([^)#\s]+)", site_path, markdown)


def _is_private(path):
    return any(part.startswith("_") for part in path.split("."))


class PublicAPI(griffe.Extension):
    """Shows classes and methods as a user meets them, not as they are built.

    - A private base (`_LocationScale`, or one from `keras_ecl._keras_compat`)
      gives way to its own bases in "Bases:", so `Normal` shows `Head`
      (docs/templates/python/readthedocs/class.html.jinja renders them).
    - A public method taking `*args, **kwargs` that overrides a Keras method
      (`Distiller.fit` binds its arguments to `keras.Model.fit`'s) shows the
      signature of the method it forwards to.
    """

    def on_package(self, *, pkg, loader, **kwargs):
        for cls in _classes(pkg):
            # For the template only: inheritance (an inherited `__init__`) needs them all.
            cls.extra["public_api"]["bases"] = _public_bases(cls, loader.modules_collection)
            for function in cls.functions.values():
                if not function.is_alias and not function.name.startswith("_"):
                    _forwarded_signature(cls, function)


def _classes(obj):
    for member in obj.members.values():
        if member.is_alias:
            continue
        if member.is_class:
            yield member
        if member.is_module or member.is_class:
            yield from _classes(member)


def _public_bases(cls, collection):
    bases = []
    for base in cls.bases:
        path = base if isinstance(base, str) else base.canonical_path
        if not _is_private(path):
            bases.append(base)
        else:  # the private base's own bases, if griffe loaded it
            try:
                private = collection[path]
            except KeyError:
                continue
            bases.extend(b for b in _public_bases(private, collection) if b not in bases)
    return bases


def _forwarded_signature(cls, function):
    kinds = {parameter.kind for parameter in function.parameters}
    variadic = {griffe.ParameterKind.var_positional, griffe.ParameterKind.var_keyword}
    if not variadic <= kinds:
        return
    runtime = griffe.dynamic_import(cls.path)
    for base in inspect.getmro(runtime)[1:]:
        if function.name in vars(base) and not base.__module__.startswith(cls.package.name):
            signature = inspect.signature(getattr(base, function.name))
            function.parameters = griffe.Parameters(
                *(
                    griffe.Parameter(
                        name,
                        kind=griffe.ParameterKind(parameter.kind.description),
                        default=None
                        if parameter.default is inspect.Parameter.empty
                        else repr(parameter.default),
                    )
                    for name, parameter in signature.parameters.items()
                )
            )
            return
