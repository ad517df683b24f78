"""What `pip install keras-ecl` gets: declared ranges, the constraints files, the wheel."""

import configparser
import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import keras_ecl
from keras_ecl import _keras_compat

ROOT = pathlib.Path(__file__).resolve().parents[1]


def install_requires():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    return {r.name: r for r in (Requirement(x) for x in lines if x and not x.startswith("#"))}


def pins(name):
    lines = (ROOT / name).read_text().splitlines()
    pinned = {}
    for line in lines:
        if line and not line.startswith("#"):
            package, version = line.split("==")
            pinned[package] = Version(version)
    return pinned


def test_install_requires_are_ranges_not_pins():
    for name, requirement in install_requires().items():
        assert not any(spec.operator == "==" for spec in requirement.specifier), name
        assert any(spec.operator == ">=" for spec in requirement.specifier), name


@pytest.mark.parametrize("constraints", ["constraints.txt", "constraints-oldest.txt"])
def test_both_constraints_files_lie_inside_the_declared_ranges(constraints):
    pinned = pins(constraints)
    for name, requirement in install_requires().items():
        assert requirement.specifier.contains(pinned[name]), (constraints, name)


def test_the_oldest_constraints_are_the_lower_bounds():
    pinned = pins("constraints-oldest.txt")
    for name, requirement in install_requires().items():
        lower = next(Version(s.version) for s in requirement.specifier if s.operator == ">=")
        assert pinned[name].release[: len(lower.release)] == lower.release, name


def test_the_version_warning_covers_the_tested_range():
    # _keras_compat warns outside the range make test-compat passes on: the
    # minor versions of the two constraints files.
    oldest, newest = pins("constraints-oldest.txt"), pins("constraints.txt")
    for name in ("keras", "tensorflow"):
        expected = tuple(f"{v.major}.{v.minor}" for v in (oldest[name], newest[name]))
        assert _keras_compat.TESTED_VERSIONS[name] == expected


def test_the_installed_stack_is_the_constraints_one():
    # make test installs with -c constraints.txt, make test-compat's oldest venv
    # with -c constraints-oldest.txt: the tests run on exactly those versions.
    from importlib import metadata

    stack = os.environ.get("KERAS_ECL_COMPAT_STACK")
    if stack == "newest":
        pytest.skip("the newest stack is whatever pip resolves inside the ranges")
    constraints = f"constraints-{stack}.txt" if stack else "constraints.txt"
    for name, version in pins(constraints).items():
        assert Version(metadata.version(name)) == version, (constraints, name)


def test_one_version_string():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["version"] == "attr: keras_ecl.__version__"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{keras_ecl.__version__}]" in changelog
    assert not re.search(r"version\s*=\s*['\"]\d", (ROOT / "pyproject.toml").read_text())


def test_the_licence_is_the_apache_text_the_metadata_names():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


QUICKSTART = """
import keras_ecl, pathlib, sys
assert pathlib.Path(keras_ecl.__file__).is_relative_to(pathlib.Path(sys.prefix)), keras_ecl.__file__
"""


def readme_quickstart():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- --8<-- [start:quickstart] -->")[1].split(
        "<!-- --8<-- [end:quickstart] -->"
    )[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README quickstart has no python block"
    return "\n".join(blocks)


@pytest.mark.large
def test_the_wheel_installs_alone_and_runs_the_readme_quickstart(tmp_path):
    # Build sdist and wheel from the source tree, install the wheel into a
    # fresh venv (no source tree on its path; dependencies from this venv's
    # site-packages, whose .pth files — the editable install — are not read)
    # and run the README's quickstart there.
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("keras_ecl-*.whl"))
    assert next(dist.glob("keras_ecl-*.tar.gz")).stat().st_size > 0
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("LICENSE") for n in names), names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
        + ["--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    # The dependencies, as a path line (not a site dir: its .pth files stay unread).
    pathlib.Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"  # a cwd without the source tree
    (work / "saved_models").mkdir(parents=True)
    script = work / "quickstart.py"
    script.write_text(QUICKSTART + readme_quickstart())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [python, "-I", str(script)], cwd=work, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    check = subprocess.run(
        [python, "-I", "-c", REQUIREMENTS_MET], cwd=work, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr[-3000:]


# The installed wheel's declared requirements accept the stack it ran on.
REQUIREMENTS_MET = """
from importlib import metadata
from packaging.requirements import Requirement
for line in metadata.requires("keras-ecl"):
    requirement = Requirement(line)
    if requirement.marker is not None:
        continue  # an extra
    version = metadata.version(requirement.name)
    assert requirement.specifier.contains(version), (line, version)
"""


def test_the_package_modules_import_each_other_without_cycles():
    import ast

    package = pathlib.Path(keras_ecl.__file__).parent
    graph = {}
    for path in package.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports too
            if isinstance(node, ast.ImportFrom) and node.module == "keras_ecl":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_ecl."):
                imported.add(node.module.split(".")[1])
        graph[path.stem] = imported & {p.stem for p in package.glob("*.py")}
    graph.pop("__init__")

    def reaches(start, target, seen=()):
        return any(
            nxt == target or (nxt not in seen and reaches(nxt, target, (*seen, nxt)))
            for nxt in graph.get(start, ())
        )

    assert [module for module in graph if reaches(module, module)] == []
