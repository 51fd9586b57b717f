"""The profile's image targets side by side, in one run: full build, image size, static verify time.

Each target is built with every stage above the base removed first (the base, shared, stays), from
a warm wheelhouse, then verified statically (no GPU). Targets: BENCH_TARGETS, default: the default
target and ``blackwell``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.engine import connect  # noqa: E402
from builder.inputs.lockfile import check_lock  # noqa: E402
from builder.assemble.plan import make_plan  # noqa: E402
from builder.inputs.profile import load_profile  # noqa: E402


def sglbuild(*args: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=ROOT, check=False,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seconds = time.monotonic() - t0
    if r.returncode not in (0, 1):  # 1: verify ran and failed; the figures still stand
        raise SystemExit(f"sglbuild {' '.join(args)} exited {r.returncode}")
    return json.loads(r.stdout), seconds


def main() -> None:
    profile = load_profile(ROOT / "sglbuild.toml")
    names = os.environ.get("BENCH_TARGETS", f"{profile.default_target},blackwell").split(",")
    engine = connect()
    rows = []
    for name in names:
        target = profile.target(name)
        plan = make_plan(target, check_lock(profile, target), profile.revision, builder=engine.builder)
        subprocess.run([sys.executable, "-m", "builder.cli", "fetch", "--quiet", name], cwd=ROOT, check=True)
        for stage in reversed(plan.stages):
            engine.images.remove(stage.tag, force=True)
        built, build_s = sglbuild("build", "--json", name)
        report, verify_s = sglbuild("verify", built["image_id"], "--gpu", "off", "--format", "json")
        facts = report.get("facts", {})
        rows.append({"target": name, "build_s": build_s, "size": built["size"], "verify_s": verify_s,
                     "image_id": built["image_id"], "sglang": facts.get("sglang"), "torch": facts.get("torch")})
    print(f"\n{'':26}" + "".join(f"{r['target']:>22}" for r in rows))
    print(f"{'SGLang':26}" + "".join(f"{str(r['sglang']):>22}" for r in rows))
    print(f"{'torch':26}" + "".join(f"{str(r['torch']):>22}" for r in rows))
    print(f"{'full build (above base)':26}" + "".join(f"{r['build_s']:>20.1f} s" for r in rows))
    print(f"{'image size':26}" + "".join(f"{r['size'] / 1e9:>19.2f} GB" for r in rows))
    print(f"{'static verify':26}" + "".join(f"{r['verify_s']:>20.1f} s" for r in rows))
    if len(rows) == 2:
        a, b = rows
        print(f"{'ratio (second / first)':26} build {b['build_s'] / a['build_s']:.2f}, size {b['size'] / a['size']:.2f}, "
              f"verify {b['verify_s'] / a['verify_s']:.2f}")
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    (out / "bench-targets.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
