"""A multi-platform target's images side by side, in one run: arm64 (built and verified under QEMU's user-mode
emulation on this x86-64 machine) against amd64 (native).

For each platform of BENCH_TARGET (default: ``blackwell``), from a warm wheelhouse: every stage above the base
removed first (the final one too; the base with BENCH_BASE=1), a full build to a verified, tagged image, its size,
and a static verify (the probe runs in the image: emulated for arm64; BENCH_VERIFY=0 leaves it out). Each build and
verify runs with a scratch state directory: no derived flags, probe answers or gate passes from earlier builds, so
the evidence step, the gate and verify all probe for real. With BENCH_FROM_NOTHING=1 the run starts as `make image
TARGET=...` would on a fresh machine: an empty wheelhouse (a scratch one: yours stays), the base removed, and the whole
of lock --check, fetch and build timed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.check import evidence  # noqa: E402
from builder.assemble.plan import make_plan  # noqa: E402
from builder.engine import connect  # noqa: E402
from builder.inputs.lockfile import check_locks  # noqa: E402
from builder.inputs.profile import load_profile  # noqa: E402


def cli(*args: str, wheels: str | None = None, state: str | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "builder.cli", *(["--wheels", wheels] if wheels else []), *args], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, **({"SGLBUILD_STATE": state} if state else {})})
    if r.returncode not in (0, 1):
        raise SystemExit(f"sglbuild {' '.join(args)} exited {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
    return r, time.monotonic() - t0


def main() -> None:
    profile = load_profile(ROOT / "sglbuild.toml")
    name = os.environ.get("BENCH_TARGET", "blackwell")
    target = profile.target(name)
    engine = connect()
    locks = check_locks(profile, target)
    from_nothing = os.environ.get("BENCH_FROM_NOTHING") == "1"
    rows = []
    for platform in target.platform_names:
        plan = make_plan(target, locks.lock(platform), profile.revision, builder=engine.builder)
        known = evidence.cached(plan) if plan.awaiting_evidence else None  # a derived target's final stage, if built here
        stages = (plan.with_derived(known) if known is not None else plan).stages
        for tag in [s.tag for s in reversed(stages)] + ([plan.base] if from_nothing or os.environ.get("BENCH_BASE") == "1" else []):
            engine.images.remove(tag, force=True)
        with tempfile.TemporaryDirectory(prefix="sglbuild-bench-state-") as state:
            built, build_s = cli("build", name, "--platform", platform, "--json", state=state)
            image = json.loads(built.stdout)
            report, verify_s = (cli("verify", image["image_id"], "--gpu", "off", "--format", "json", "--fresh", state=state)
                                if os.environ.get("BENCH_VERIFY") != "0" else (None, None))
        rows.append({"platform": platform, "build_s": build_s, "size": image["size"], "verify_s": verify_s,
                     "verdict": json.loads(report.stdout)["passed"] if report else image["verify"].get("passed"),
                     "stages": {s["name"]: s.get("seconds") for s in image["stages"]},
                     "evidence_s": image["evidence_seconds"],
                     "gate_s": build_s - image["evidence_seconds"] - sum(s.get("seconds") or 0 for s in image["stages"])})
    whole = None
    if from_nothing:
        scratch = tempfile.mkdtemp(prefix="sglbuild-bench-wheels-")
        t0 = time.monotonic()
        for args in (("lock", "--check", name), ("fetch", "--quiet", name)):
            cli(*args, wheels=scratch)
        fetch_s = time.monotonic() - t0
        for platform in target.platform_names:
            plan = make_plan(target, locks.lock(platform), profile.revision, builder=engine.builder)
            for tag in [s.tag for s in reversed(plan.stages)] + [plan.base]:
                engine.images.remove(tag, force=True)
        cli("build", name, wheels=scratch)
        whole = (time.monotonic() - t0, fetch_s)
        shutil.rmtree(scratch)
    print(f"\n{name}{'':24}" + "".join(f"{r['platform']:>22}" for r in rows))
    print(f"{'full build, warm wheelhouse':30}" + "".join(f"{r['build_s']:>20.1f} s" for r in rows))
    for stage in rows[0]["stages"]:
        print(f"{'  ' + stage:30}" + "".join(f"{(r['stages'].get(stage) or 0):>20.1f} s" for r in rows))
    print(f"{'  the evidence probe':30}" + "".join(f"{r['evidence_s']:>20.1f} s" for r in rows))
    print(f"{'  the rest (normalize, gate)':30}" + "".join(f"{r['gate_s']:>20.1f} s" for r in rows))
    if all(r["verify_s"] for r in rows):
        print(f"{'static verify (probe)':30}" + "".join(f"{r['verify_s']:>20.1f} s" for r in rows))
    print(f"{'image size':30}" + "".join(f"{r['size'] / 1e9:>19.2f} GB" for r in rows))
    print(f"{'verdict':30}" + "".join(f"{'passed' if r['verdict'] else 'FAILED':>22}" for r in rows))
    if len(rows) == 2:
        a, b = rows
        verify = f"verify {b['verify_s'] / a['verify_s']:.2f}, " if a["verify_s"] and b["verify_s"] else ""
        print(f"ratio ({b['platform']} / {a['platform']}): build {b['build_s'] / a['build_s']:.2f}, {verify}size {b['size'] / a['size']:.2f}")
    if whole:
        print(f"make image TARGET={name} from nothing: {whole[0]:.0f} s (of which lock --check and fetch {whole[1]:.0f} s)")
    (ROOT / "out").mkdir(exist_ok=True)
    (ROOT / "out" / "bench-platforms.json").write_text(json.dumps({"rows": rows, "from_nothing": whole}, indent=2))


if __name__ == "__main__":
    main()
