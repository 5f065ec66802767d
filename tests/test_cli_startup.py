"""The CLI answers at once: importing it (what `envwatch --help` does) loads no heavy module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# pydantic is not here: the CLI's argument checks name config's settings types (config.schema), and its
# import costs about 0.1 s of the 0.5 s a command may take before it answers.
HEAVY = ("pandas", "numpy", "sklearn", "scipy", "sqlalchemy", "matplotlib", "fastapi", "paho")


def _modules_after(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_loads_no_heavy_module() -> None:
    loaded = {m.split(".")[0] for m in _modules_after("import center.cli")}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_help_lists_every_command_group_without_heavy_modules() -> None:
    code = ("from typer.testing import CliRunner\nfrom center.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "assert all(w in r.output for w in ('detect', 'cases', 'tickets', 'alerts', 'run')), r.output\n")
    loaded = {m.split(".")[0] for m in _modules_after(code)}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_a_command_still_loads_what_it_needs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("registry: 12\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "center.cli", "config", "check", str(bad)], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "problem" in r.stderr
