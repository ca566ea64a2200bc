"""Every Python block of the README runs as written (from an empty directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compile(BLOCKS[index], f"README.md python block {index}", "exec")
    exec(code, {"__name__": f"readme_block_{index}"})


def _train_commands() -> list[list[str]]:
    """The README's ``diffpool-train`` command lines, continuation lines joined, split."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("diffpool-train"):
                commands.append(shlex.split(line)[1:])
    return commands


def test_readme_train_commands_compose_for_every_job():
    """Every ``diffpool-train`` line of the README names real config groups and keys: each
    job of each sweep composes (running them is what tests/test_cli.py does)."""
    import itertools

    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser

    commands = _train_commands()
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
                assert cfg.model.variant and cfg.data.name
                jobs += 1
    assert jobs >= 180  # the README's sweep: 3 variants x 3 encoders x 2 ratios x 10 folds
