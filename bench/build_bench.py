"""sglbuild against the naive build of the same pins, in one run, side by side, on each engine.

The naive way is facts.md's: FROM the same imported base, COPY the wheelhouse into the
context, pip install torch + sgl-kernel, then sglang, with the engine's own builder (the
classic one on 20.10, BuildKit on 26). Both start from a warm wheelhouse and an existing base
image; sglbuild's stage images are removed first so its "full build" rebuilds every stage
above the base.

With a second engine (``BENCH_ENGINES``, default: the host's, and ci/engine.sh's when it
answers), the same rows are measured there, and a cold engine (none of the target's images,
no wheelhouse used) builds the target from a warm registry cache against the same build from
scratch without it. Each engine's images are removed before the next build: on containerd's
image store an image takes about twice its size on disk (its layers' blobs and their snapshots).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.assemble.base import ensure_base  # noqa: E402
from builder.engine import connect  # noqa: E402
from builder.state import scratch  # noqa: E402
from builder.engine.buildkit import docker_cli  # noqa: E402
from builder.inputs.lockfile import check_lock  # noqa: E402
from builder.assemble.plan import make_plan  # noqa: E402
from builder.inputs.profile import load_profile  # noqa: E402
from builder.ui import Reporter  # noqa: E402
from builder.inputs.wheelhouse import fetch  # noqa: E402

NAIVE_TAG = "sglbuild-bench/naive:latest"
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
SECOND = "unix:///var/lib/sglbuild-engine26/rootfs/run/dsock/docker.sock"


def sh(cmd: list[str], env: dict[str, str], **kw) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env=env, **kw)
    return time.monotonic() - t0


def sglbuild(env: dict[str, str], *args: str) -> dict:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "builder.cli", *args, "--json"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return {**json.loads(r.stdout), "wall_s": time.monotonic() - t0}


def forget(engine, plan, target) -> None:
    """Remove the target's stage images and tags from ENGINE (the base stays unless asked), and BuildKit's
    build cache, which would otherwise answer every step of a "full" build from the last one."""
    for stage in reversed(plan.stages):
        engine.images.remove(stage.tag, force=True)
    for tag in engine.images.tags_under((target.human_tag, "sglbuild/stage:image-")):  # and BuildKit's re-labelled finals
        engine.images.remove(tag, force=True)
    if engine.builder == "buildkit":
        subprocess.run([docker_cli() or DOCKER, "builder", "prune", "-af"], env={**os.environ, "DOCKER_HOST": engine.where},
                       check=True, capture_output=True)


def one_engine(host: str | None) -> dict:
    env = {**os.environ, **({"DOCKER_HOST": host} if host else {})}
    if host:
        os.environ["DOCKER_HOST"] = host
    else:
        os.environ.pop("DOCKER_HOST", None)
    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target(None)
    lock = check_lock(profile, target)
    wheels = ROOT / "wheels"
    fetch(lock, wheels, Reporter(quiet=True))
    engine = connect()
    plan = make_plan(target, lock, profile.revision, builder=engine.builder)
    ensure_base(engine, target, lock, plan.base)
    forget(engine, plan, target)
    ours_full = sglbuild(env, "build")
    ours_noop = sglbuild(env, "build")
    ours_size = engine.images.get(target.human_tag).size
    forget(engine, plan, target)  # room for the naive image: on containerd's store each image takes about twice its size

    with scratch("bench", wheels) as ctx:  # same disk: hard links
        ctxp = Path(ctx)
        (ctxp / "wheelhouse").mkdir()
        for w in lock.wheels:
            if w.stage != "tools":
                os.link(wheels / w.filename, ctxp / "wheelhouse" / w.filename)
        pins = {w.name: w.version for w in lock.wheels}
        (ctxp / "Dockerfile").write_text(
            f"FROM {plan.base}\n"
            "RUN python3 -m venv /opt/venv\n"
            "COPY wheelhouse /wheelhouse\n"
            f"RUN /opt/venv/bin/pip install --no-index --find-links /wheelhouse torch=={pins['torch']} sgl-kernel=={pins['sgl-kernel']}\n"
            f"RUN /opt/venv/bin/pip install --no-index --find-links /wheelhouse sglang=={pins['sglang']}\n"
        )
        if engine.builder == "buildkit":  # the engine's default builder: what `docker build` does on 23 and later
            # No network in its steps either (the wheels are in the context), as on sglbuild's BuildKit path.
            naive_cmd = [docker_cli() or DOCKER, "buildx", "build", "-q", "--network", "none", "-t", NAIVE_TAG, str(ctxp)]
        else:
            env = {**env, "DOCKER_BUILDKIT": "0"}
            naive_cmd = [DOCKER, "build", "-q", "-t", NAIVE_TAG, str(ctxp)]
        try:
            naive_full = sh([*naive_cmd[:-1], "--no-cache", naive_cmd[-1]], env, stdout=subprocess.DEVNULL)
            naive_noop = sh(naive_cmd, env, stdout=subprocess.DEVNULL)
            naive_size = engine.images.get(NAIVE_TAG).size
        finally:
            subprocess.run([DOCKER, "rmi", "-f", NAIVE_TAG], capture_output=True, env=env)
    return {"engine": engine.version, "builder": engine.builder, "image_id": ours_full["image_id"],
            "ours": {"full_s": ours_full["wall_s"], "noop_s": ours_noop["wall_s"], "size": ours_size},
            "naive": {"full_s": naive_full, "noop_s": naive_noop, "size": naive_size}}


def cold_cache(host: str | None) -> dict:
    """On engine HOST: fill a registry cache, empty the engine of the target, build from the cache; then from scratch."""
    if host:
        os.environ["DOCKER_HOST"] = host
    else:
        os.environ.pop("DOCKER_HOST", None)
    env = {**os.environ}
    # The second engine reaches this host's registry on its veth address; the host's engine on loopback.
    registry = subprocess.run([str(ROOT / "ci" / "registry.sh"), "5026"], env={**env, "REGISTRY_HOST": "10.200.26.1" if host else "127.0.0.1",
                              "REGISTRY_DIR": str(ROOT / "out" / "bench-registry")}, check=True, capture_output=True, text=True).stdout.strip()
    repo = f"{registry}/sglbuild-bench/cache"
    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target(None)
    lock = check_lock(profile, target)
    engine = connect()
    plan = make_plan(target, lock, profile.revision, builder=engine.builder)
    try:
        filled = sglbuild(env, "build", "--cache", repo)  # pushes every stage the registry lacks (the base too)
        forget(engine, plan, target)
        engine.images.remove(plan.base, force=True)
        away = ROOT / "wheels.bench-away"
        (ROOT / "wheels").rename(away)  # a cold runner: no wheelhouse either
        try:
            warm = sglbuild(env, "build", "--cache", repo)
        finally:
            away.rename(ROOT / "wheels")
        forget(engine, plan, target)
        engine.images.remove(plan.base, force=True)
        scratch = sglbuild(env, "build")  # the same empty engine, no cache: base and every stage
    finally:
        pid = ROOT / "out" / "bench-registry" / "registry.pid"
        if pid.exists():
            subprocess.run(["kill", pid.read_text().strip()])
        shutil.rmtree(ROOT / "out" / "bench-registry", ignore_errors=True)
    return {"filled_image_id": filled["image_id"], "warm_cache": {"s": warm["wall_s"], "image_id": warm["image_id"],
            "pulled": [s["name"] for s in warm["stages"] if s["status"] == "pulled"], "base_built": warm["base_built"]},
            "scratch": {"s": scratch["wall_s"], "image_id": scratch["image_id"]}}


def main() -> None:
    # BENCH_ENGINES: which engines, comma-separated: "host" (DOCKER_HOST or the default socket) and addresses.
    default = "host" + (f",{SECOND}" if Path(SECOND[len("unix://"):]).exists() else "")
    engines: list[str | None] = [None if h == "host" else h for h in os.environ.get("BENCH_ENGINES", default).split(",") if h]
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    results: list[dict] = []
    cold = None
    for h in engines:  # each engine's figures are kept as soon as they are measured
        results.append(one_engine(h))
        print(json.dumps(results[-1]), flush=True)
        (out / "bench-build.json").write_text(json.dumps({"engines": results, "cold_cache": cold}, indent=2))
    # The cold engine: BENCH_COLD names it ("host", or an address), default the last engine measured.
    cold_on = os.environ.get("BENCH_COLD", "host" if engines[-1] is None else engines[-1])
    cold = cold_cache(None if cold_on == "host" else cold_on) if cold_on != "none" else None

    print(f"\n{'':44} {'sglbuild':>12} {'naive':>12} {'ratio':>7}  target")
    for r in results:
        ours, naive, name = r["ours"], r["naive"], f"Docker {r['engine']}, {r['builder']}"
        print(f"{name}  (image {r['image_id'][:19]})")
        for label, a, b, goal in [("  full build, warm wheelhouse", ours["full_s"], naive["full_s"], "<= 0.3 (BuildKit)"),
                                  ("  no-op rebuild", ours["noop_s"], naive["noop_s"], "<= 3 s")]:
            print(f"{label:44} {a:>10.1f} s {b:>10.1f} s {a / b:7.2f}  {goal}")
        print(f"{'  image size':44} {ours['size'] / 1e9:>9.2f} GB {naive['size'] / 1e9:>9.2f} GB {ours['size'] / naive['size']:7.2f}  <= 0.7")
    if cold:
        w, s = cold["warm_cache"], cold["scratch"]
        print(f"\ncold engine ({results[-1]['builder']}){'':22} {'warm cache':>12} {'no cache':>12} {'ratio':>7}")
        print(f"{'  base + every stage, to a tagged image':44} {w['s']:>10.1f} s {s['s']:>10.1f} s {w['s'] / s['s']:7.2f}")
        print(f"  pulled: {', '.join(w['pulled'])}; base built: {w['base_built']}; "
              f"same image ID: {w['image_id'] == s['image_id'] == cold['filled_image_id']} ({w['image_id'][:19]})")
    (out / "bench-build.json").write_text(json.dumps({"engines": results, "cold_cache": cold}, indent=2))


if __name__ == "__main__":
    main()
