"""linux/arm64's FlashInfer modules without emulation, measured: the ways to compile one module side by side, and what
the stages cost each platform, in one run.

Needs the stages `sglbuild build blackwell` makes (both platforms; BENCH_TARGET picks another target that declares
[flashinfer_aot] for linux/arm64), all from the plans:

- the ways, for the declared decode module (bf16, bf16 KV cache, head dimension 128) and arm64's architectures, each in
  a fresh container, no network: native (amd64's host code, the reference), cross (what the build does: this nvcc for
  the device code, Debian's g++-aarch64-linux-gnu for the host code, in a container of the flashinfer-aot-cross stage),
  and, with BENCH_EMULATED=1, emulated (the arm64 toolchain stage under QEMU: about 10 minutes for this one module on 2
  cores). For each: seconds, the ELF machine, and whether its GPU code is byte for byte the native compile's (the
  .nv_fatbin entries, per architecture);
- the same device code for another architecture list: the sm_100 entries of a compile for amd64's list (sm_100, sm_120)
  against arm64's (sm_100, sm_121), so whether one platform's device code could serve the other's;
- the stages, rebuilt without the engine's cache (their tags move to the same images: the stages are reproducible):
  amd64's flashinfer-aot (compiles natively), the flashinfer-aot-cross stage (compiles arm64's on amd64) and arm64's
  flashinfer-aot (unpacks them under emulation); arm64's cost over amd64's is the last two against the first.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.assemble.stages import build_stages, serving_modules  # noqa: E402
from builder.contracts import STAGE_AOT  # noqa: E402
from builder.engine import connect  # noqa: E402
from builder.engine.archives import tar_archive  # noqa: E402
from builder.engine.images import tar_member_bytes  # noqa: E402
from builder.inputs.profile import load_profile  # noqa: E402
from builder.probe.fatbin import sass_digests  # noqa: E402
from builder.pipeline import plans  # noqa: E402
from builder.ui import Reporter  # noqa: E402

DECODE = '{"dtype":"bf16","head_dims":[128],"kv_dtypes":["bf16"],"modules":["decode"]}'


def fatbin_entries(elf: bytes) -> list[tuple[str, str]]:
    """(SASS architecture, sha256 of the entry as stored) for each SASS entry of the module's .nv_fatbin (sglbuild's
    reader; tests/test_fatbin.py holds the digests against the cubins cuobjdump extracts)."""
    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(elf)
        f.flush()
        return sass_digests(Path(f.name))


def compile_one(client, image: str, archs: str, script: str, runtime: bytes | None, epoch: int,
                platform: str | None = None) -> tuple[float, bytes]:
    """The decode module compiled in a fresh container of IMAGE (cross-compiled for aarch64 when RUNTIME, arm64's CUDA
    runtime wheel, is given), with the stage's SOURCE_DATE_EPOCH as its step has it; its seconds and the module's bytes."""
    cross = "--cross aarch64-linux-gnu /tmp/sysroot /tmp/out" if runtime else ""
    out_dir = "/tmp/out" if runtime else "/opt/venv/lib/python3*/site-packages/flashinfer/data/aot"
    setup = "python3 -B -m zipfile -e /tmp/runtime.whl /tmp/sysroot && " if runtime else ""
    command = (f"{setup}t0=$(date +%s.%N); /opt/venv/bin/python -B /tmp/aot.py build '{DECODE}' {archs} /tmp/ws {cross} >/dev/null && "
               f"t1=$(date +%s.%N); echo $t0 $t1; cp {out_dir}/*/*.so /tmp/module.so")
    files = {"aot.py": script.encode(), **({"runtime.whl": runtime} if runtime else {})}
    container = client.containers.create(image, ["sh", "-c", command], network_disabled=True, entrypoint=[],
                                         environment={"SOURCE_DATE_EPOCH": str(epoch)}, **({"platform": platform} if platform else {}))
    try:
        container.put_archive("/tmp", tar_archive(files, epoch))
        container.start()
        if container.wait()["StatusCode"] != 0:
            sys.exit(f"aot_cross_bench: the compile in {image} failed: {container.logs(tail=5).decode()}")
        t0, t1 = map(float, container.logs(stderr=False).decode().split()[-2:])
        bits, _ = container.get_archive("/tmp/module.so")
        return t1 - t0, tar_member_bytes(b"".join(bits))["module.so"]
    finally:
        container.remove(force=True)


def main() -> None:
    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target(os.environ.get("BENCH_TARGET", "blackwell"))
    engine = connect()
    client = engine.client
    made = plans(profile, target, engine.builder, ("linux/amd64", "linux/arm64"))
    amd64, arm64 = made["linux/amd64"], made["linux/arm64"]
    if arm64.cross is None:
        sys.exit(f"aot_cross_bench: {target.name} does not cross-compile linux/arm64's FlashInfer modules")
    cross = arm64.cross.stages[-1]
    for stage in (cross, *(s for s in arm64.stages if s.spec.kind == STAGE_AOT)):
        if not client.images.list(name=stage.tag):
            sys.exit(f"aot_cross_bench: no {stage.tag} here: run 'sglbuild build {target.name}' first")
    script = (ROOT / "builder" / "probe" / "flashinfer_aot.py").read_text()
    runtime = (ROOT / "wheels" / cross.spec.wheels[0].filename).read_bytes()
    toolchain = cross.spec.parent
    arm_archs = ",".join(arm64.archs)
    epoch = target.base.source_date_epoch

    native_s, native = compile_one(client, toolchain, arm_archs, script, None, epoch)
    cross_s, crossed = compile_one(client, cross.tag, arm_archs, script, runtime, epoch)
    rows = [("native (amd64 host code)", native_s, native), ("cross (this build's way)", cross_s, crossed)]
    if os.environ.get("BENCH_EMULATED") == "1":
        emu_image = [s for s in arm64.stages if s.name == "toolchain"][0].tag
        emu_s, emulated = compile_one(client, emu_image, arm_archs, script, None, epoch, platform="linux/arm64")
        rows.append(("emulated (arm64, QEMU)", emu_s, emulated))
    ref = fatbin_entries(native)
    print(f"linux/arm64's FlashInfer modules: {target.name}, the decode module for {arm_archs}, on {os.cpu_count()} cores")
    for name, seconds, data in rows:
        machine = {62: "x86-64", 183: "aarch64"}.get(int.from_bytes(data[18:20], "little"), "?")
        same = fatbin_entries(data) == ref
        print(f"  {name:<28} {seconds:7.1f} s   {machine:<8} GPU code {'the same bytes as' if same else 'differs from'} the native compile's"
              f" ({len(ref)} entries)")
    _, other = compile_one(client, toolchain, ",".join(amd64.archs), script, None, epoch)
    shared = [a for a, _ in ref if a in {x for x, _ in fatbin_entries(other)}]
    same_shared = sorted(e for e in fatbin_entries(other) if e[0] in shared) == sorted(e for e in ref if e[0] in shared)
    print(f"  {shared[0] if shared else '?'} for {','.join(amd64.archs)} against {arm_archs}: "
          f"{'the same bytes' if same_shared else 'different code (the architecture list reaches the device compile)'}")

    reporter = Reporter(quiet=True)
    wheels = ROOT / "wheels"
    timed = {}
    unpack = next(s for s in arm64.stages if s.spec.kind == STAGE_AOT)
    top_layer = lambda tag: client.images.get(tag).attrs["RootFS"]["Layers"][-1]  # noqa: E731
    before = {"modules": serving_modules(engine, arm64, cross.tag).served[-1].sha256,
              **{s.tag: top_layer(s.tag) for s in (unpack, next(s for s in amd64.stages if s.spec.kind == STAGE_AOT))}}
    for label, plan, stage in (("amd64 flashinfer-aot (native compile)", amd64, next(s for s in amd64.stages if s.spec.kind == STAGE_AOT)),
                               ("flashinfer-aot-cross (arm64's, on amd64)", arm64.cross, cross)):
        t0 = time.monotonic()
        image = build_stages(engine, plan, wheels, reporter, fresh=True, only=[stage])[-1].image_id
        timed[label] = time.monotonic() - t0
    served = serving_modules(engine, arm64, image)  # the cross stage's, just rebuilt
    t0 = time.monotonic()
    build_stages(engine, served, wheels, reporter, fresh=True, only=[unpack])
    timed["arm64 flashinfer-aot (unpack, emulated)"] = time.monotonic() - t0
    for label, seconds in timed.items():
        print(f"  stage {label:<42} {seconds:7.1f} s")
    same = [served.served[-1].sha256 == before["modules"]] + [top_layer(tag) == layer for tag, layer in before.items() if tag != "modules"]
    print(f"  rebuilt without cache: arm64's modules {'the same bytes' if same[0] else 'DIFFER'}; the two flashinfer-aot stages' "
          f"layers {'the same' if all(same[1:]) else 'DIFFER'} (diff IDs)")
    extra = timed["flashinfer-aot-cross (arm64's, on amd64)"] + timed["arm64 flashinfer-aot (unpack, emulated)"]
    base = timed["amd64 flashinfer-aot (native compile)"]
    print(f"  arm64's modules cost {extra:.1f} s against amd64's {base:.1f} s: {extra - base:+.1f} s ({extra / base:.2f}x)")
    print(json.dumps({"ways": {n: round(s, 1) for n, s, _ in rows}, "stages": {k: round(v, 1) for k, v in timed.items()}}))


if __name__ == "__main__":
    main()
