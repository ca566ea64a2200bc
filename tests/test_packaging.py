"""The package as installed: its declared dependencies, and the core install without extras."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from helpers import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

#: what the core install must hold: the layers' needs only
CORE = {"torch", "torch-geometric", "numpy", "filelock"}

#: modules of distributions that are not installed here, by the name pip knows them by
NOT_INSTALLED = {"torch_cluster": "torch-cluster", "torch_scatter": "torch-scatter"}


def _name(requirement: str) -> str:
    """The distribution of a requirement: ``"torch_geometric>=2.6"`` -> ``"torch-geometric"``."""
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> dict[str, set[str]]:
    """Every distribution pyproject declares, with the extras (or ``core``) that declare it."""
    declared: dict[str, set[str]] = {}
    for requirement in PROJECT["dependencies"]:
        declared.setdefault(_name(requirement), set()).add("core")
    for extra, requirements in PROJECT["optional-dependencies"].items():
        for requirement in requirements:
            declared.setdefault(_name(requirement), set()).add(extra)
    return declared


def _imports(path: Path) -> set[str]:
    """The top-level third-party modules a source file imports."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "diffpool"}


def test_every_imported_module_is_declared():
    """A module imported anywhere under src/ belongs to a declared distribution, and the core
    dependencies are the layers' needs only."""
    distributions = metadata.packages_distributions()
    declared = _declared()
    undeclared = {}
    for path in sorted((ROOT / "src").rglob("*.py")):
        for module in _imports(path):
            names = distributions.get(module) or [NOT_INSTALLED.get(module, module)]
            if not any(_name(n) in declared for n in names):
                undeclared[module] = path.relative_to(ROOT)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    core = {name for name, where in declared.items() if "core" in where}
    assert core == CORE
    assert not any("<" in r for r in PROJECT["dependencies"]), "no upper bound without a reason"


def test_every_config_folder_and_subpackage_is_in_the_wheel():
    """setuptools lists its packages by hand (pyproject.toml): every folder of conf/ (as
    diffpool.conf.*) and of src/diffpool that holds configs or modules is one, and its YAML
    files are package data (a config group missing from the wheel composes nowhere but here)."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed, data = set(setuptools["packages"]), setuptools["package-data"]
    for top, package in ((ROOT / "conf", "diffpool.conf"), (ROOT / "src" / "diffpool", "diffpool")):
        for folder in [top, *(p for p in top.rglob("*") if p.is_dir())]:
            if "__pycache__" in folder.parts:
                continue
            name = ".".join([package, *folder.relative_to(top).parts])
            if any(folder.glob("*.py")) or any(folder.glob("*.yaml")):
                assert name in listed, name
            if any(folder.glob("*.yaml")):
                assert data.get(name) == ["*.yaml"], name


def test_version_has_one_source():
    import diffpool

    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "diffpool.__version__"}
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert f"## [{diffpool.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (ROOT / "src" / "diffpool" / "py.typed").exists()


def _extras_modules() -> set[str]:
    """The top-level modules of every distribution an extra adds (not of the core)."""
    declared = _declared()
    extra_only = {name for name, where in declared.items() if "core" not in where}
    return {
        module
        for module, names in metadata.packages_distributions().items()
        if any(_name(n) in extra_only for n in names)
    } | {"hydra_plugins", "pytorch_lightning"}


def _run(args, cwd, check=True):
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_the_core_install_runs_the_layer_and_names_the_missing_extras(tmp_path):
    """The wheel in a fresh environment that holds the core dependencies only (this
    environment's site-packages without any extra's modules): the README's layer quickstart
    runs there, and the training stack, DiffPool-Det, the plots and the console scripts say
    which extra to install."""
    wheels = tmp_path / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(wheels), str(ROOT)],
        tmp_path,
    )
    wheel = next(wheels.glob("diffpool-*.whl"))
    # the core: a folder of links to this environment's packages, less the extras' modules
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    core = tmp_path / "core-site"
    core.mkdir()
    left_out = _extras_modules()
    for entry in site.iterdir():
        top = entry.name.split(".")[0].split("-")[0]
        if top in left_out or "diffpool" in entry.name or entry.suffix == ".pth":
            continue
        (core / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = str(venv / "bin" / "python")
    venv_site = _run([python, "-c", "import site; print(site.getsitepackages()[0])"], tmp_path)
    Path(venv_site.stdout.strip(), "core.pth").write_text(f"{core}\n")
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", str(wheel)],
        tmp_path,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run([python, "-c", "import lightning"], empty, check=False).returncode != 0
    readme = (ROOT / "README.md").read_text()
    quickstart = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    assert "DiffPoolConv" in quickstart
    _run([python, "-c", quickstart + "\nimport diffpool.models, diffpool.functional"], empty)
    for code, extra in (
        ("import diffpool.training", "train"),
        ("import diffpool.viz", "viz"),
        (
            "from diffpool.transforms import ClusterAssignment\n"
            "from diffpool.datasets import hierarchical_communities\n"
            "ClusterAssignment()(hierarchical_communities(1)[0])",
            "det",
        ),
    ):
        failed = _run([python, "-c", code], empty, check=False)
        # the extra's name and a command that installs it from a clone (no distribution of
        # this name is published: pip install "diffpool[...]" would fail)
        assert failed.returncode != 0 and f"the '{extra}' extra" in failed.stderr
        assert f'pip install ".[{extra}]" (in the folder of a clone' in failed.stderr
    for script, extra in (("diffpool-train", "train"), ("diffpool-report", "train")):
        failed = _run([str(venv / "bin" / script), "x"], empty, check=False)
        assert failed.returncode != 0
        assert f'pip install ".[{extra}]"' in failed.stderr + failed.stdout


@pytest.mark.parametrize("extra", ["train", "det", "viz", "launchers"])
def test_extras_name_what_they_provide(extra):
    from diffpool.utils.extras import EXTRAS, missing, require

    assert extra in EXTRAS and extra in PROJECT["optional-dependencies"]
    assert missing(extra) == []  # installed here
    require(extra, "this test")
    # this checkout runs from its source tree: the command installs the extra into it, from
    # any folder
    command = re.escape(f'pip install -e "{ROOT}[bogus]"')
    with pytest.raises(ImportError, match=rf"needs the 'bogus' extra, .*: {command}$"):
        EXTRAS["bogus"] = ("no_such_module_anywhere",)
        try:
            require("bogus", "something")
        finally:
            del EXTRAS["bogus"]
