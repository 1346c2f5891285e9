"""Every entry of the command tables resolves: `shapemask_ros.cli.COMMANDS` and the training package's
`shapemask_training.cli_commands.COMMANDS` name modules and functions as strings, which only a run of that
command would otherwise check. Training modules need TensorFlow: those entries are `tf`-marked (conftest.py)."""

from __future__ import annotations

import ast
import importlib

import pytest

from shapemask_ros import cli
from support import REPO


def _training_table() -> dict[str, tuple[str, str, str, str]]:
    """The training table read from its source: the lane without TensorFlow may lack the package itself."""
    tree = ast.parse((REPO / "training" / "cli_commands.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "COMMANDS":
            assert node.value is not None
            return ast.literal_eval(node.value)
    raise AssertionError("training/cli_commands.py has no COMMANDS table")


def _check(name: str, spec: tuple[str, ...]) -> None:
    assert len(spec) == 4, f"{name}: expected (module, add-args function, run function, help), got {spec}"
    module_name, add_name, run_name, help_text = spec
    module = importlib.import_module(module_name)
    for attr in (add_name, run_name):
        assert callable(getattr(module, attr, None)), f"{name}: {module_name}.{attr} is not a function"
    assert help_text.strip(), f"{name}: no help text"


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_runtime_command_resolves(name):
    _check(name, cli.COMMANDS[name])


@pytest.mark.tf
@pytest.mark.parametrize("name", sorted(_training_table()))
def test_training_command_resolves(name):
    _check(name, _training_table()[name])


def test_the_tables_do_not_collide():
    """A training command named like a runtime one would be dropped silently by `all_commands`."""
    assert not set(cli.COMMANDS) & set(_training_table())


@pytest.mark.tf
def test_the_cli_finds_the_training_table_through_its_entry_point():
    from shapemask_training.cli_commands import COMMANDS

    assert COMMANDS == _training_table() and set(COMMANDS) <= set(cli.all_commands())
