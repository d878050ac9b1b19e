"""The pytest plugin (`nomad_actions.testing`, entry point `pytest11`) as a plugin author
uses it: the example plugin's own test suite runs in a fresh pytest process, finds the
fixtures through the entry point, and passes offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nomad_actions.registry import get_actions

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "nomad-actions-example"


def test_example_plugin_is_installed_through_its_entry_point() -> None:
    ids = set(get_actions())
    assert "nomad_actions_example.formulas:formulas_action" in ids
    assert "nomad_actions_example.pubchem:pubchem_action" in ids


def test_example_plugin_tests_pass_with_the_pytest_plugin(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        cwd=tmp_path,  # outside this repo: no conftest of ours is involved
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "4 passed" in proc.stdout, proc.stdout[-2000:]
