"""The type gate covers the training package (issue 25): mypy checks training/ under its installed name,
`shapemask_training`, through the link typecheck/shapemask_training -> ../training (pyproject.toml)."""

from __future__ import annotations

import re

from support import REPO


def test_mypy_checks_training_as_shapemask_training():
    link = REPO / "typecheck" / "shapemask_training"
    assert link.is_symlink() and link.resolve() == (REPO / "training").resolve()
    section = (REPO / "pyproject.toml").read_text().split("[tool.mypy]", 1)[1].split("\n[", 1)[0]
    files = re.search(r"^files = \[(.*)\]$", section, re.M)
    assert files and {"shapemask_ros", "typecheck/shapemask_training"} <= set(re.findall(r'"([^"]+)"', files[1]))
    assert re.search(r'^mypy_path = "typecheck"$', section, re.M)
    assert re.search(r"^explicit_package_bases = true$", section, re.M)
