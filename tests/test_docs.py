"""The README's and the docs' examples as a newcomer runs them: every Python block runs as
written (from an empty directory), every ``diffpool-train`` line composes for every job of its
sweep, and the README's shell commands run (slow test; training budgets cut to one batch)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(page: Path) -> list[str]:
    """A page's Python blocks, each with the blocks before it on the page (a page reads as one
    session: later blocks use what earlier ones defined)."""
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    return ["\n".join(blocks[: i + 1]) for i in range(len(blocks))]


PYTHON = [(page, i, code) for page in PAGES for i, code in enumerate(_blocks(page))]


def test_readme_has_python_examples():
    assert len(_blocks(README)) >= 3


@pytest.mark.parametrize("page, index, code", PYTHON, ids=[f"{p.stem}-{i}" for p, i, _ in PYTHON])
def test_python_block_runs(page, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page.name} python block {index}", "exec"), {"__name__": page.stem})


def test_the_readme_training_from_python_is_quiet_and_leaves_only_its_results(tmp_path):
    """The README's "From Python" fit, as a newcomer runs it (a fresh process in an empty
    directory): none of Lightning's tips, accelerator lines it does not have or the LeafSpec
    warning (importing diffpool.training leaves them out, as diffpool-train does), and the
    dataset and the checkpoint are all it leaves: no lock file, no checkpoints/ of its own."""
    import os
    import subprocess
    import sys

    (code,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
               if "Trainer(" in b and "TUDataModule" in b]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the time only (2 epochs of MUTAG)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-3000:]
    for noise in ("Tip", "litlogger", "litmodels", "LeafSpec", "TPU available", "Warning"):
        assert noise not in printed, printed[-3000:]
    assert "GPU available" in printed  # Lightning's own information stays
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    data = [f for f in files if f.startswith(("data/TU/MUTAG/raw/", "data/TU/MUTAG/processed/"))]
    assert data and [f for f in files if f not in data] == [
        "runs/mutag/checkpoints/epoch=1-step=16.ckpt"
    ]


def _cli_lines(prefix: str = "diffpool-", pages=(README,)) -> list[str]:
    """The shell lines of ``pages`` that call a console script, continuation lines joined,
    comments dropped."""
    lines = []
    blocks = [
        b for page in pages for b in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    ]
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith(prefix):
                lines.append(line)
    return lines


def _train_commands(pages=(README,)) -> list[list[str]]:
    """The ``diffpool-train`` command lines of ``pages``, split."""
    import shlex

    return [shlex.split(line)[1:] for line in _cli_lines("diffpool-train", pages)]


@pytest.mark.slow
def test_readme_cli_commands_run(tmp_path):
    """Every ``diffpool-*`` line of the README runs in a fresh directory, in order, exactly as
    written: the single runs, the predictions, the sweep (every job) and its report. About
    4 minutes (the README states each command's time)."""
    import os
    import subprocess
    import sys

    lines = _cli_lines()
    assert any(line.startswith("diffpool-report") for line in lines)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in lines:
        proc = subprocess.run(
            line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    single_runs = sum("-m" not in args for args in _train_commands())
    assert len(list(tmp_path.rglob("results.json"))) == single_runs + 18  # + the sweep's jobs
    assert (tmp_path / "runs" / "enzymes" / "predictions-all.csv").exists()
    reports = list(tmp_path.rglob("report.md"))
    assert len(reports) == 1 and reports[0].read_text().count("| model.variant=") == 18


@pytest.mark.slow  # composes every job of every sweep: 25 s; CI runs it
def test_readme_train_commands_compose_for_every_job():
    """Every ``diffpool-train`` line of the README and the docs names real config groups and
    keys: each job of each sweep composes (running them is what tests/cli/test_cli.py does)."""
    import itertools

    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser

    commands = _train_commands(PAGES)
    assert len(commands) >= 3 and any("-m" in c for c in commands)
    parser = OverridesParser.create()
    jobs = 0
    with initialize_config_module("diffpool.conf", version_base="1.3"):
        for args in commands:
            overrides = parser.parse_overrides([a for a in args if a != "-m"])
            choices = []
            for o in overrides:
                values = (
                    list(o.sweep_string_iterator())
                    if o.is_sweep_override()
                    else [o.get_value_element_as_str()]
                )
                choices.append([f"{o.get_key_element()}={v}" for v in values])
            for combo in itertools.product(*choices):
                cfg = compose("train", overrides=list(combo))
                assert cfg.model.variant and (cfg.data.get("name") or cfg.data.get("dataset"))
                jobs += 1
    assert jobs >= len(commands) + 17  # the sweeps expanded (the README's alone has 18 jobs)


#: a shape comment of a Python block: ``out.x      # [20, 22, 64]   what it is``
SHAPE_COMMENT = re.compile(r"^([A-Za-z_][\w.]*)\s+#\s*\[(\d+(?:,\s*\d+)*)\]", flags=re.M)
SHAPED = [
    (page, i, code)
    for page, i, code in PYTHON
    if SHAPE_COMMENT.search(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)[i])
]


def test_the_readme_has_shape_comments():
    assert any(page == README for page, _, _ in SHAPED)


@pytest.mark.parametrize("page, index, code", SHAPED, ids=[f"{p.stem}-{i}" for p, i, _ in SHAPED])
def test_shape_comments_are_what_the_code_returns(page, index, code, tmp_path, monkeypatch):
    """Every ``expr  # [d, d, ...]`` comment of a page's Python blocks is the shape that
    ``expr`` has when the block runs as written, and the README's statement of the dense
    adjacency block its layer example builds (``one `B × N × N` block``) is what it builds."""
    from diffpool.functional import _layouts as layouts

    blocks = []
    dense_adjacency = layouts.PaddedBatch.dense_adjacency

    def spy(self, *args, **kwargs):
        out = dense_adjacency(self, *args, **kwargs)
        blocks.extend(tuple(b.shape) for b in out)
        return out

    monkeypatch.setattr(layouts.PaddedBatch, "dense_adjacency", spy)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": page.stem}
    exec(compile(code, f"{page.name} python block {index}", "exec"), namespace)
    own = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)[index]
    comments = SHAPE_COMMENT.findall(own)  # of this block, read after it ran
    assert comments
    for expr, dims in comments:
        expected = tuple(int(d) for d in dims.split(","))
        assert tuple(eval(expr, namespace).shape) == expected, f"{expr}  # {list(expected)}"
    if page == README and "DiffPoolConv(" in code:
        stated = re.search(r"one `(\d+) × (\d+) × (\d+)` block", README.read_text())
        assert stated, "the README states the dense adjacency block of its layer example"
        assert tuple(int(d) for d in stated.groups()) in blocks, blocks


def _api_callables() -> list[tuple[str, object, str]]:
    """``(name, callable, docstring)`` of every class, function and listed member that
    docs/api.rst documents (a class's own docstring documents its constructor)."""
    import importlib
    import inspect

    def resolve(name: str):
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for part in parts[i:]:
                obj = getattr(obj, part)
            return obj
        raise ImportError(name)

    rst = (ROOT / "docs" / "api.rst").read_text()
    found = []
    for kind, name, body in re.findall(
        r"\.\. auto(class|function|module):: (\S+)\n((?:   .*\n?)*)", rst
    ):
        obj = resolve(name)
        members = re.search(r":members: ([^\n]+(?:\n      [^\n]+)*)", body)
        members = (
            [m.strip() for m in members.group(1).replace("\n", " ").split(",")] if members else []
        )
        if kind == "function":
            found.append((name, obj, inspect.getdoc(obj) or ""))
        if kind == "class":
            found.append((name, obj.__init__, inspect.getdoc(obj) or ""))
        for member in members:
            value = getattr(obj, member)
            if inspect.isclass(value):
                found.append((f"{name}.{member}", value.__init__, inspect.getdoc(value) or ""))
            elif inspect.isfunction(value) or inspect.ismethod(value):
                found.append((f"{name}.{member}", value, inspect.getdoc(value) or ""))
    return found


API = _api_callables()


@pytest.mark.parametrize("name, function, doc", API, ids=[name for name, _, _ in API])
def test_the_api_page_documents_every_argument(name, function, doc):
    """What docs/api.rst renders says what the code takes: no member shows torch's inherited
    ``forward`` text ("Should be overridden by all subclasses"), every parameter is named in
    the docstring, and every name of its ``Args:`` is a parameter (no ``**options`` that the
    signature does not have)."""
    import inspect

    assert "Should be overridden by all subclasses" not in doc, f"{name} has no docstring"
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return
    names = [p for p in parameters if p not in ("self", "cls")]
    args = re.search(r"^Args:\n(.*?)(?=^\S|\Z)", doc, flags=re.M | re.S)
    if not args:
        return
    listed = [n.lstrip("*") for n in re.findall(r"^    (\*{0,2}\w+)\s*[(:]", args.group(1), re.M)]
    assert not [n for n in listed if n not in names], f"{name} documents what it does not take"
    assert not [n for n in names if n not in doc], f"{name} does not name all its parameters"
