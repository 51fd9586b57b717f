"""The CI image pipeline's GitHub Actions workflow passes actionlint (a real workflow linter)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "image.yml"


def actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint is not installed (pip install -e '.[test]')", pytrace=False)
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-config-file", str(ROOT / ".github" / "actionlint.yaml"), str(path)],
                          capture_output=True, text=True, cwd=ROOT)


def test_workflow_lints_clean():
    r = lint(WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_linter_does_catch_mistakes(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("needs: build", "needs: bild"))
    r = lint(broken)
    assert r.returncode == 1 and "bild" in r.stdout


def test_gpu_job_verifies_the_pushed_digest_before_moving_the_tag():
    text = WORKFLOW.read_text()
    gpu = text[text.index("  gpu-verify:"):]
    assert "needs: build" in gpu and "self-hosted" in gpu and "gpu-sm120" in gpu
    steps = [m.group(0) for m in re.finditer(r"docker pull|--gpu require --model|promote --require-gpu", gpu)]
    assert steps == ["docker pull", "--gpu require --model", "promote --require-gpu"]
    build = text[text.index("  build:"):text.index("  gpu-verify:")]
    assert "lock --update" in build and "sglbuild push" in build and "--cache \"$CACHE_REPO\"" in build
    assert build.index("login-action") < build.index("--cache")  # the cache is a registry: log in first
    assert "GITHUB_STEP_SUMMARY" in text[text.index("  pull-request:"):text.index("  build:")]
