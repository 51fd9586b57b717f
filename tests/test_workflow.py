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


# -- the pipeline's shape, read from the workflow and held to the profile ------------------------------

RUNNER_ARCH = {"ubuntu-24.04": "amd64", "ubuntu-24.04-arm": "arm64", "x64": "amd64", "ARM64": "arm64"}


def declared() -> dict[str, dict[str, list[str]]]:
    """target -> platform -> its GPU architectures, as the profile declares them."""
    from builder.inputs.profile import load_profile

    profile = load_profile(ROOT / "sglbuild.toml")
    return {name: {p: list(t.archs(p)) for p in t.platform_names} for name, t in profile.targets.items()}


def run_text(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def problems(workflow: dict, targets: dict[str, dict[str, list[str]]]) -> list[str]:
    """What is wrong with the image pipeline's jobs, against what the profile declares (empty: nothing)."""
    jobs, out = workflow["jobs"], []
    build = jobs["build"]
    entries = build["strategy"]["matrix"]["include"]
    if {(e["target"], e["platform"]) for e in entries} != {(t, p) for t, ps in targets.items() for p in ps}:
        out.append("build: not one job per declared target and platform")
    for e in entries:
        if RUNNER_ARCH.get(e["runner"]) != e["platform"].split("/")[1]:
            out.append(f"build: {e['target']} {e['platform']} runs on {e['runner']}, not a runner of its architecture")
    if build["runs-on"] != "${{ matrix.runner }}":
        out.append("build: runs-on is not the entry's runner")
    text = run_text(build)
    for verb in ("fetch", "build", "push"):
        calls = re.findall(rf"sglbuild {verb} [^\n]*", text)
        if not calls or not all('--platform "$PLATFORM"' in c for c in calls):
            out.append(f"build: sglbuild {verb} is not given only its platform")
    if not re.search(r"sglbuild push [^\n]*--sign-key", text):
        out.append("build: the push is not signed")
    push_env = next((s.get("env", {}) for s in build["steps"] if "sglbuild push" in s.get("run", "")), {})
    if "secrets.SGLBUILD_SIGN_KEY" not in str(push_env) or "secrets.SGLBUILD_KEY_PASSWORD" not in str(push_env):
        out.append("build: the signing key and its password do not come from secrets")
    if "out/digest-" not in text or not any(s.get("uses", "").startswith("actions/upload-artifact") for s in build["steps"]):
        out.append("build: the digest is not the job's artifact")
    join = jobs.get("join", {})
    if join.get("needs") != "build":
        out.append("join: does not wait for the platforms' jobs")
    downloads = [s for s in join.get("steps", []) if s.get("uses", "").startswith("actions/download-artifact")]
    if not any(s["with"].get("pattern") == "digest-${{ matrix.target }}-*" for s in downloads):
        out.append("join: does not take every platform's digest")
    if not re.search(r"sglbuild join \S+ \$\(cat out/digests/digest-\*\.txt\) --key", run_text(join) if join else ""):
        out.append("join: sglbuild join does not consume the jobs' digests with the public key")
    gpu = jobs["gpu-verify"]
    if gpu.get("needs") != "join":
        out.append("gpu-verify: does not read the joined index")
    gpu_entries = gpu["strategy"]["matrix"]["include"]
    if {(e["target"], e["platform"], e["arch"]) for e in gpu_entries} != {(t, p, a) for t, ps in targets.items() for p, archs in ps.items() for a in archs}:
        out.append("gpu-verify: not one job per declared architecture")
    for e in gpu_entries:
        if RUNNER_ARCH.get(e["cpu"]) != e["platform"].split("/")[1]:
            out.append(f"gpu-verify: {e['target']} {e['arch']} runs on a {e['cpu']} runner, not {e['platform']}")
    if gpu["runs-on"] != ["self-hosted", "linux", "${{ matrix.cpu }}", "gpu-${{ matrix.arch }}"]:
        out.append("gpu-verify: runs-on does not name the runner's CPU and GPU")
    if not re.search(r'sglbuild verify "\$\(cat out/index.txt\)" --platform "\$PLATFORM" --arch "\$ARCH" --gpu require', run_text(gpu)):
        out.append("gpu-verify: does not verify its platform from the index on the GPU")
    promote = jobs["promote"]
    if set(promote.get("needs") or []) != {"join", "gpu-verify"}:
        out.append("promote: does not wait for every platform's verdict")
    if not re.search(r"sglbuild promote --require-gpu \S*verdicts", run_text(promote)):
        out.append("promote: does not require the GPU verdicts")
    return out


def workflow() -> dict:
    import yaml

    return yaml.safe_load(WORKFLOW.read_text())


def test_each_platform_builds_on_its_own_runner_and_promote_waits_for_every_verdict():
    assert problems(workflow(), declared()) == []


@pytest.mark.parametrize("mutation, expected", [
    (lambda w: w["jobs"]["build"]["strategy"]["matrix"]["include"][3].update(runner="ubuntu-24.04"), "not a runner of its architecture"),
    (lambda w: w["jobs"]["build"]["strategy"]["matrix"]["include"].pop(), "not one job per declared target and platform"),
    (lambda w: [s.update(run=s["run"].replace(' --platform "$PLATFORM"', "")) for s in w["jobs"]["build"]["steps"]
                if "sglbuild build" in s.get("run", "")], "sglbuild build is not given only its platform"),
    (lambda w: [s.update(run=s["run"].replace("--sign-key", "--key")) for s in w["jobs"]["build"]["steps"]
                if "sglbuild push" in s.get("run", "")], "the push is not signed"),
    (lambda w: w["jobs"]["join"].update(needs="pull-request"), "join: does not wait"),
    (lambda w: w["jobs"]["gpu-verify"]["strategy"]["matrix"]["include"].pop(), "not one job per declared architecture"),
    (lambda w: w["jobs"]["gpu-verify"]["strategy"]["matrix"]["include"][4].update(cpu="x64"), "runs on a x64 runner, not linux/arm64"),
    (lambda w: w["jobs"]["promote"].update(needs=["join"]), "promote: does not wait for every platform's verdict"),
])
def test_the_shape_check_catches_each_broken_pipeline(mutation, expected):
    broken = workflow()
    mutation(broken)
    assert any(expected in p for p in problems(broken, declared())), problems(broken, declared())


def test_pull_requests_lint_and_the_build_logs_in_before_its_cache():
    text = WORKFLOW.read_text()
    build = text[text.index("  build:"):text.index("  join:")]
    assert "lock --update" in build and '--cache "$CACHE_REPO"' in build
    assert build.index("login-action") < build.index("--cache")  # the cache is a registry: log in first
    assert "GITHUB_STEP_SUMMARY" in text[text.index("  pull-request:"):text.index("  build:")]
