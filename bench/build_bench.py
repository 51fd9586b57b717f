"""sglbuild against the naive build of the same pins, in one run, side by side.

The naive way is facts.md's: FROM the same imported base, COPY the wheelhouse into the
context, pip install torch + sgl-kernel, then sglang (classic builder). Both start
from a warm wheelhouse and an existing base image; sglbuild's stage images are removed
first so its "full build" rebuilds every stage above the base.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.base import ensure_base  # noqa: E402
from builder.engine import connect  # noqa: E402
from builder.lock import check_lock  # noqa: E402
from builder.plan import make_plan  # noqa: E402
from builder.profile import load_profile  # noqa: E402
from builder.ui import Reporter  # noqa: E402
from builder.wheelhouse import fetch  # noqa: E402

NAIVE_TAG = "sglbuild-bench/naive:latest"
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def sh(cmd: list[str], **kw) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, **kw)
    return time.monotonic() - t0


def sglbuild(*args: str) -> float:
    return sh([sys.executable, "-m", "builder.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL)


def main() -> None:
    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target(None)
    lock = check_lock(profile, target)
    wheels = ROOT / "wheels"
    fetch(lock, wheels, Reporter(quiet=True))
    engine = connect()
    plan = make_plan(target, lock, profile.revision)
    ensure_base(engine, target, lock, plan.base)
    base = plan.base

    # sglbuild: full build (every stage above the base), then a no-op rebuild.
    for stage in reversed(plan.stages):
        engine.images.remove(stage.tag, force=True)
    for tag in engine.images.tags_under((target.human_tag,)):
        engine.images.remove(tag, force=True)
    ours_full = sglbuild("build", "--quiet")
    ours_noop = sglbuild("build", "--quiet")
    ours_size = engine.images.get(target.human_tag).attrs["Size"]

    # Naive: COPY the wheelhouse, pip install (classic builder), same base and pins.
    with tempfile.TemporaryDirectory(prefix="sglbuild-bench-", dir=wheels) as ctx:  # same disk: hardlinks
        ctxp = Path(ctx)
        (ctxp / "wheelhouse").mkdir()
        for w in lock.wheels:
            if w.stage != "tools":
                os.link(wheels / w.filename, ctxp / "wheelhouse" / w.filename)
        pins = {w.name: w.version for w in lock.wheels}
        (ctxp / "Dockerfile").write_text(
            f"FROM {base}\n"
            "RUN python3 -m venv /opt/venv\n"
            "COPY wheelhouse /wheelhouse\n"
            f"RUN /opt/venv/bin/pip install --no-index --find-links /wheelhouse torch=={pins['torch']} sgl-kernel=={pins['sgl-kernel']}\n"
            f"RUN /opt/venv/bin/pip install --no-index --find-links /wheelhouse sglang=={pins['sglang']}\n"
        )
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        naive_cmd = [DOCKER, "build", "-q", "-t", NAIVE_TAG, str(ctxp)]
        try:
            naive_full = sh([*naive_cmd[:2], "--no-cache", *naive_cmd[2:]], env=env, stdout=subprocess.DEVNULL)
            naive_noop = sh(naive_cmd, env=env, stdout=subprocess.DEVNULL)
            naive_size = engine.images.get(NAIVE_TAG).attrs["Size"]
        finally:
            subprocess.run([DOCKER, "rmi", "-f", NAIVE_TAG], capture_output=True)

    rows = [
        ("full build, warm wheelhouse", f"{ours_full:.1f} s", f"{naive_full:.1f} s", ours_full / naive_full, "<= 0.5"),
        ("no-op rebuild", f"{ours_noop:.2f} s", f"{naive_noop:.2f} s", ours_noop / naive_noop, "<= 3 s"),
        ("image size", f"{ours_size / 1e9:.2f} GB", f"{naive_size / 1e9:.2f} GB", ours_size / naive_size, "<= 0.7"),
    ]
    print(f"\n{'':30} {'sglbuild':>12} {'naive':>12} {'ratio':>7}  target")
    for name, a, b, ratio, goal in rows:
        print(f"{name:30} {a:>12} {b:>12} {ratio:7.2f}  {goal}")
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    (out / "bench-build.json").write_text(json.dumps({
        "ours": {"full_s": ours_full, "noop_s": ours_noop, "size": ours_size},
        "naive": {"full_s": naive_full, "noop_s": naive_noop, "size": naive_size},
    }, indent=2))


if __name__ == "__main__":
    main()
