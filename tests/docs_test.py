"""The README, docs and CONTRIBUTING snippets run as written; the main job's smoke variant runs."""

import html.parser
import importlib
import logging
import logging.handlers
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from tests import testing

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def readme_quickstart():
    """The README's quickstart code (the docs site includes it by marker)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- --8<-- [start:quickstart] -->")[1].split("[end:quickstart]")[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


@pytest.mark.large
def test_documented_snippets_run_as_written_in_order(tmp_path, monkeypatch):
    # The quickstart's objects (x, y, mlp, distiller) carry into the pages that follow it.
    pages = [ROOT / "docs" / f"{page}.md" for page in ("export", "distribute", "resume")]
    export, distributed, resume = ("\n".join(python_blocks(page)) for page in pages)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "saved_models").mkdir()
    namespace = {}
    # A user who runs these sees no Python warning: each would be ours to fix.
    with testing.warnings_as_errors():
        exec(compile(readme_quickstart(), "README.md quickstart", "exec"), namespace)
        assert (tmp_path / "saved_models" / "student.keras").exists()
        history = namespace["distiller"].history.history
        assert {"loss", "student_loss", "extracurricular_loss"} <= set(history)

        exec(compile(export, "docs/export.md", "exec"), namespace)
        for name in ("student/saved_model.pb", "student.tflite", "student_int8.tflite"):
            assert (tmp_path / "saved_models" / name).exists(), name
        assert namespace["probabilities"].shape == (4, 3)
        assert namespace["on_device"]["probabilities"].shape == (4, 3)

        exec(compile(distributed, "docs/distribute.md", "exec"), namespace)
        history = namespace["distiller"].history.history
        assert len(history["extracurricular_loss"]) == 2
        assert namespace["strategy"].num_replicas_in_sync == 1  # one CPU here: the default

        exec(compile(resume, "docs/resume.md", "exec"), namespace)
        history = namespace["distiller"].history.history
        assert len(history["loss"]) == 3  # no backup yet: from the start (kills: resume_test.py)
        assert not (tmp_path / "backups" / "student").exists()  # removed at the end


@pytest.mark.large
def test_demo_smoke_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            # Warnings are errors (the user would see them), but for upstream ones.
            *(f"-W{spec}" for spec in ("error", *testing.UPSTREAM_WARNINGS)),
            str(ROOT / "examples" / "mnist1d_distillation.py"),
            "--smoke",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for name in ("teacher", "ERM", "KD", "ECL"):
        assert re.search(rf"^{name}\s+0\.\d{{3}}", table, flags=re.M), table
    assert (tmp_path / "mnist1d_ecl_student.keras").exists()
    assert (tmp_path / "mnist1d_ecl_student" / "saved_model.pb").exists()
    assert (tmp_path / "mnist1d_demo.png").stat().st_size > 10_000
    # The TFLite student is scored on the test set and agrees with the Keras one.
    keras_line = re.search(r"Keras .* test accuracy (0\.\d{3})", table)
    tflite_line = re.search(r"TFLite .*\.tflite\s+test accuracy (0\.\d{3})", table)
    assert keras_line and tflite_line, table
    assert abs(float(keras_line[1]) - float(tflite_line[1])) <= 0.002


@pytest.mark.parametrize(
    "module",
    [
        "heads",
        "losses",
        "objectives",
        "samplers",
        "distiller",
        "export",
        "callbacks",
        "distribute",
        "averaging",
    ],
)
def test_public_docstrings_have_examples(module):
    import importlib
    import inspect

    mod = importlib.import_module(f"keras_ecl.{module}")
    for name, obj in vars(mod).items():
        public = inspect.isclass(obj) or inspect.isfunction(obj)
        if name.startswith("_") or not public or obj.__module__ != mod.__name__:
            continue
        if name in ("Head", "Sampler"):
            continue  # base classes document the contract, not a use
        assert "Example:" in (obj.__doc__ or ""), f"{module}.{name} has no Example"


CONTRIBUTING_CHECK = """
import numpy as np
import keras_ecl
from tests import testing

sampler = keras_ecl.samplers.get("uniform_noise")
assert type(sampler).__name__ == "UniformNoise", sampler
assert "UniformNoise" in keras_ecl.samplers.SAMPLERS.examples()
testing.run_serialization_test(sampler)
x, y = testing.classification_data()
distiller = testing.make_distiller(sampler="uniform_noise", samples_per_example=2)
testing.short_fit(distiller, x, y)
head = keras_ecl.heads.get("logistic")
raw = np.zeros((2, 2), "float32")
assert np.isfinite(head.negative_log_likelihood(np.zeros((2, 1)), raw)).all()
try:
    head.kl_divergence(raw, raw)
except NotImplementedError:
    print("walkthrough ok")
"""


@pytest.mark.large
def test_contributing_walkthrough_registers_a_sampler_and_a_head_that_work():
    # In a subprocess: registering classes must not leak into the other tests.
    sampler, head = python_blocks(ROOT / "CONTRIBUTING.md")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "\n".join(map(textwrap.dedent, [sampler, head, CONTRIBUTING_CHECK])),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "walkthrough ok" in result.stdout


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The docs site, built once per session as `make docs` builds it, with --strict.

    A docstring naming a parameter the signature lacks, a bad section, a broken
    link or a link to a missing anchor fails the build, and so CI. In this
    process, which has imported TensorFlow already (the docs import keras_ecl
    for the signatures of methods that forward to Keras): a few seconds, not ~15.
    """
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    site = tmp_path_factory.mktemp("docs") / "site"
    warnings = logging.handlers.BufferingHandler(capacity=1000)
    warnings.setLevel(logging.WARNING)
    logging.getLogger("mkdocs").addHandler(warnings)
    cwd = os.getcwd()
    os.chdir(ROOT)  # mkdocs.yml's paths are relative to the repository root
    try:
        build(load_config(str(ROOT / "mkdocs.yml"), site_dir=str(site), strict=True))
    except Abort as error:
        pytest.fail(f"{error} {[record.getMessage() for record in warnings.buffer]}")
    finally:
        os.chdir(cwd)
        logging.getLogger("mkdocs").removeHandler(warnings)
    return site


def test_the_api_reference_builds_with_warnings_as_errors(site):
    for page in ["index", "distiller", "heads", "samplers", "teachers", "bad-input", "BENCHMARKS"]:
        assert (site / f"{page}.html").stat().st_size > 5_000, page
    heads = (site / "heads.html").read_text()
    assert "DecoupledCategorical" in heads and "min_scale" in heads  # docstrings rendered
    assert "Every refusal, verbatim" in (site / "bad-input.html").read_text()
    assert (site / "benchmarks" / "results" / "mnist1d.png").exists()


class _Page(html.parser.HTMLParser):
    """The ids, links, code blocks and class bases of one built page."""

    def __init__(self, path):
        super().__init__()
        self.ids, self.links, self.pres, self.bases = set(), [], [], []
        self._open = []  # (tag, classes) of the elements around the current one
        self.feed(path.read_text())

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "pre":
            self.pres.append(any("highlight" in c for _, c in self._open))
        if tag in ("span", "a") and any("doc-class-bases" in c for _, c in self._open):
            self.bases.append(attrs.get("title", ""))
        if tag not in ("br", "img", "input", "link", "meta", "hr", "col"):
            self._open.append((tag, classes))

    def handle_endtag(self, tag):
        while self._open and self._open.pop()[0] != tag:
            pass


def _pages(site):
    return {
        path.name: _Page(path) for path in sorted(site.glob("*.html")) if path.name != "404.html"
    }


def test_the_site_has_no_dead_links_or_anchors(site):
    pages = _pages(site)
    dead = []
    for name, page in pages.items():
        for href in page.links:
            if re.match(r"[a-z]+:", href):  # https:, mailto:
                continue
            path, _, anchor = href.partition("#")
            target = (site / name).parent / path if path else site / name
            if not target.exists():
                dead.append(f"{name}: {href}")
            elif anchor and target.suffix == ".html" and anchor not in pages[target.name].ids:
                dead.append(f"{name}: {href}")
    assert not dead
    assert len(pages) >= 13 and sum(len(p.links) for p in pages.values()) > 500


def test_the_site_shows_public_signatures_and_bases(site):
    api = ["distiller", "heads", "samplers", "losses", "teachers", "distribute", "export", "resume"]
    text = {page: (site / f"{page}.html").read_text() for page in api}
    # Signatures, under their headings (or in them, without separate_signature).
    pattern = r'<div class="doc-signature highlight">(.*?)</div>|class="doc doc-heading">(.*?)</h'
    signatures = [
        re.sub(r"<[^>]+>", "", "".join(match))
        for page in api
        for match in re.findall(pattern, text[page], re.S)
    ]
    assert len(signatures) > 50
    assert not [s for s in signatures if "*args" in s and "**kwargs" in s]
    # A class heading shows how to build it; Distiller's fit is Keras' own.
    assert any(s.startswith("Distiller(\n    student,") for s in signatures), signatures[:3]
    assert any(s.startswith("fit(\n    x=None,\n    y=None,") for s in signatures)
    # "Bases:" names public classes only (title: the full path), private ones replaced.
    bases = [title for page in api for title in _Page(site / f"{page}.html").bases]
    assert bases and not [b for b in bases if re.search(r"(^|[ .(])_", b)], bases
    assert "keras.Model" in bases and "keras.callbacks.BackupAndRestore" in bases
    assert "keras_ecl.heads.Head" in " ".join(bases)  # Normal's, through _LocationScale


def test_the_site_colours_code_offline(site):
    pages = _pages(site)
    pres = [inside for page in pages.values() for inside in page.pres]
    assert len(pres) > 100 and all(pres)  # every code block went through Pygments
    index = (site / "index.html").read_text()
    keyword, space = '<span class="kn">import</span>', '<span class="w"> </span>'
    assert f'{keyword}{space}<span class="nn">keras</span>' in index
    assert ".highlight .kn" in (site / "css" / "pygments.css").read_text()
    for name in pages:
        assert "cdnjs" not in (site / name).read_text(), name
    assert not (site / "hooks.py").exists() and not (site / "templates").exists()


def _github_anchors(path):
    """The anchors GitHub gives a markdown file's headings (and explicit ids)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    anchors, seen = set(re.findall(r'<a (?:id|name)="([^"]+)"', text)), {}
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_relative_links_in_the_markdown_resolve():
    files = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
    dead, checked = [], 0
    for path in files:
        text = re.sub(r"```.*?```|`[^`\n]*`", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            checked += 1
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                dead.append(f"{path.name}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _github_anchors(resolved):
                dead.append(f"{path.name}: {target}")
    assert not dead
    assert checked > 20


def test_the_benchmark_summary_is_built_from_the_results_and_fits_a_screen(tmp_path):
    run_all = importlib.import_module("benchmarks.run_all")
    run_all.write_report(str(ROOT / "benchmarks" / "results"), str(tmp_path / "BENCHMARKS.md"))
    text = (ROOT / "BENCHMARKS.md").read_text()
    assert (tmp_path / "BENCHMARKS.md").read_text() == text, "run `run_all --report-only`"
    summary = text.split("## Summary")[1].split("\n## ")[0]
    tables = re.findall(r"^\| .*\|$", summary, flags=re.M)
    assert len(tables) > 30
    assert max(row.count(" | ") + 1 for row in tables) <= 8


def test_every_row_of_the_migration_table_names_a_test_that_exists():
    page = (ROOT / "docs" / "migration.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and "::test_" in line]
    assert len(rows) >= 10
    for row in rows:
        cited = re.findall(r"`(\w+_test\.py)::(test_\w+)(?:\[[\w-]+\])?`", row)
        assert cited, row
        for path, name in cited:
            assert f"\ndef {name}(" in (ROOT / "tests" / path).read_text(), (path, name)
