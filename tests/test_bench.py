"""The bench scripts cannot rot unseen: each one's imports resolve against today's helpers and product, and the
reliability run's quick mode (a few fuzzed inputs, Ctrl-C during lock and fetch, on the suite's small target) runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support import ROOT

BENCHES = sorted((ROOT / "bench").glob("*.py"))
LOAD = ("import importlib.util, sys; sys.path[:0] = [sys.argv[2], sys.argv[3]]; "
        "spec = importlib.util.spec_from_file_location('bench_under_test', sys.argv[1]); "
        "spec.loader.exec_module(importlib.util.module_from_spec(spec)); print('loaded')")


@pytest.mark.parametrize("script", BENCHES, ids=[p.stem for p in BENCHES])
def test_each_bench_script_loads_with_todays_helpers(script, tmp_path):
    """Its module body (every import of the suite's helpers and of sglbuild) runs; its main does not."""
    r = subprocess.run([sys.executable, "-c", LOAD, str(script), str(ROOT), str(ROOT / "tests")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "SGLBUILD_STATE": str(tmp_path / "state")})
    assert r.returncode == 0 and r.stdout.strip() == "loaded", r.stderr[-2000:]


@pytest.mark.engine
def test_the_reliability_run_quick_mode_prints_its_table(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "reliability.py"), "--quick"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "fuzz: profile" in r.stdout and "Ctrl-C" in r.stdout and r.stdout.rstrip().splitlines()[-1].startswith("total")
