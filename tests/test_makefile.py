"""The newcomer's commands: `make run` installs what running needs and nothing else; `make test` adds the test
tools. Read from make's own plan (`make -n -B`: every step printed, none run)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def plan(target: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # --no-print-directory: under `make test` this make is a sub-make (MAKELEVEL is inherited) and would print
    # "make[1]: Entering/Leaving directory" around its plan.
    done = subprocess.run(["make", "--no-print-directory", "-n", "-B", target], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_installs_only_the_runtime_requirements():
    steps = plan("run")
    assert "-r requirements.txt" in steps and "requirements-dev.txt" not in steps
    assert steps.strip().splitlines()[-1].endswith("python app.py")


def test_make_test_installs_the_test_tools_too():
    steps = plan("test")
    assert "-r requirements-dev.txt" in steps and "pytest" in steps
