"""The reproducible build against the plain build of the same target, in one run, side by side.

"Plain" is the same pipeline and the same stages without the reproducibility measures:
no SOURCE_DATE_EPOCH, no step ends by setting the times of what it touched, no second
install of wheels whose files clash, and the image keeps the engine's own config (no
normalize step). Both
builds are from scratch: each bootstraps its base and ignores every stage image and the
engine's build cache. Each tags only into its own namespace, removed after it is timed.
The reproducible build runs first, so any warming (page cache, engine) favours the plain one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.assemble.stages import Built, build_image  # noqa: E402
from builder.engine import connect  # noqa: E402
from builder.inputs.lockfile import check_lock  # noqa: E402
from builder.assemble.plan import make_plan  # noqa: E402
from builder.inputs.profile import load_profile  # noqa: E402
from builder.check.repro import remove_tags  # noqa: E402
from builder.ui import Reporter  # noqa: E402
from builder.inputs.wheelhouse import fetch  # noqa: E402


def main() -> None:
    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target(None)
    lock = check_lock(profile, target)
    wheels = ROOT / "wheels"
    reporter = Reporter(quiet=True)
    fetch(lock, wheels, reporter)
    engine = connect()

    runs: dict[str, Built] = {}
    for mode in ("reproducible", "plain"):
        repo = f"sglbuild-bench/{mode}"
        plan = make_plan(target, lock, profile.revision, reproducible=mode == "reproducible", repo=repo, builder=engine.builder)
        try:
            runs[mode] = build_image(engine, plan, wheels, reporter, fresh=True)
            engine.images.tag(runs[mode].image_id, f"{repo}:final")
        finally:
            remove_tags(engine, [repo])
    ours, plain = runs["reproducible"], runs["plain"]

    def stages(r: Built) -> float:
        return sum(s.seconds for s in r.stages)

    rows = [("base bootstrap", ours.base_seconds, plain.base_seconds)]
    rows += [(f"  stage {a.name}", a.seconds, b.seconds) for a, b in zip(ours.stages, plain.stages)]
    rows += [
        ("stages above the base", stages(ours), stages(plain)),
        ("normalize", ours.normalize_seconds, plain.normalize_seconds),
        ("stages + normalize", stages(ours) + ours.normalize_seconds, stages(plain) + plain.normalize_seconds),
        ("whole build from scratch", ours.seconds, plain.seconds),
    ]
    print(f"\n{'from scratch, warm wheelhouse':30} {'reproducible':>13} {'plain':>9} {'ratio':>7}  target")
    for name, a, b in rows:
        goal = "<= 1.3" if name in ("whole build from scratch", "stages + normalize") else ""
        ratio = f"{a / b:7.2f}" if b > 0.05 else f"{'-':>7}"
        print(f"{name:30} {a:11.2f} s {b:7.2f} s {ratio}  {goal}")
    print(f"{'image ID':30} {ours.image_id[7:19]:>13} {plain.image_id[7:19]:>9}")
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    (out / "bench-repro.json").write_text(json.dumps({
        mode: {"seconds": r.seconds, "base_s": r.base_seconds, "normalize_s": r.normalize_seconds,
               "stages": {s.name: s.seconds for s in r.stages}, "image_id": r.image_id, "layers": r.layers}
        for mode, r in runs.items()
    }, indent=2))


if __name__ == "__main__":
    main()
