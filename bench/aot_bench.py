"""FlashInfer's modules ahead of time, measured: the stage's compile, its size, and a container's first FlashInfer call
with the modules prebuilt against the same image compiling them at first use, in one run, side by side.

Needs the image `sglbuild build blackwell --platform linux/amd64` makes (BENCH_IMAGE picks another with the
io.sglbuild.flashinfer-aot label) and its toolchain stage image (the flashinfer-aot stage's parent), both from the plan:

- the stage's work: the same in-image code the stage runs (builder/probe/flashinfer_aot.py build), in a fresh container
  of the stage's parent, no network: seconds, module count, bytes (against the image's size), and how many of the
  modules it makes are byte for byte the image's (the compile is reproducible);
- the first call: in fresh containers, ``get_batch_decode_module`` for the declared decode shape, as FlashInfer's decode
  wrapper calls it at a server's first request, after ``import flashinfer`` (timed apart). Prebuilt: the image as built,
  JIT off. At first use: the same image with flashinfer/data/aot hidden under an empty tmpfs, so FlashInfer compiles
  the module for the image's architectures with the image's nvcc (what the image costs without this stage). No GPU is
  needed for either: the load, or the compile. The GPU side is bench/flashinfer_gpu.py, on a GPU machine.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker.errors  # noqa: E402

from builder.assemble.plan import make_plan  # noqa: E402
from builder.contracts import LABEL_FLASHINFER_AOT, LABEL_GPU_ARCH, STAGE_AOT  # noqa: E402
from builder.engine import connect  # noqa: E402
from builder.inputs.lockfile import check_lock  # noqa: E402
from builder.inputs.profile import load_profile  # noqa: E402
from builder.probe.flashinfer_aot import arch_list  # noqa: E402

SITE = "/opt/venv/lib/python3.11/site-packages"
FIRST_CALL = (
    "import json, time; t0 = time.perf_counter(); import torch, flashinfer; from flashinfer.decode import get_batch_decode_module; "
    "t1 = time.perf_counter(); get_batch_decode_module(torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.int32, 128, 128, 0, "
    "False, False); t2 = time.perf_counter(); print(json.dumps({'import_s': t1 - t0, 'first_call_s': t2 - t1}))"
)


def run(client, image: str, command: list[str], **kwargs) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = client.containers.run(image, command, remove=True, network_disabled=True, entrypoint=[], **kwargs)
    return time.perf_counter() - t0, out.decode()


def first_call(client, image: str, archs: str, hidden: bool) -> dict:
    env = {"FLASHINFER_CUDA_ARCH_LIST": archs, **({} if hidden else {"FLASHINFER_DISABLE_JIT": "1"})}
    extra = {"tmpfs": {f"{SITE}/flashinfer/data/aot": ""}} if hidden else {}
    _, out = run(client, image, ["/opt/venv/bin/python", "-c", FIRST_CALL], environment=env, **extra)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target(os.environ.get("BENCH_TARGET", "blackwell"))
    plan = make_plan(target, check_lock(profile, target, "linux/amd64"), "bench")
    image_ref = os.environ.get("BENCH_IMAGE", plan.human_tag)
    engine = connect()
    client = engine.client
    try:
        image = client.images.get(image_ref)
        declared = image.labels[LABEL_FLASHINFER_AOT]
    except (docker.errors.ImageNotFound, KeyError):
        sys.exit(f"aot_bench: no {image_ref} with FlashInfer's modules ahead of time here: run 'sglbuild build {target.name} "
                 "--platform linux/amd64' first")
    archs = image.labels[LABEL_GPU_ARCH].split(",")
    aot = next(s for s in plan.stages if s.spec.kind == STAGE_AOT)
    parent = client.images.get(aot.spec.parent)
    runs = int(os.environ.get("BENCH_RUNS", "3"))

    script = (ROOT / "builder" / "probe" / "flashinfer_aot.py").read_text()
    work = ("cat > /tmp/aot.py <<'EOF'\n" + script + "\nEOF\n"
            f"/opt/venv/bin/python -B /tmp/aot.py build '{declared}' {','.join(archs)} /tmp/sglbuild-aot >/dev/null && "
            f"du -sb {SITE}/flashinfer/data/aot && cd {SITE}/flashinfer/data/aot && sha256sum */*.so")
    # as the stage's step runs it: SOURCE_DATE_EPOCH set (a build argument there)
    seconds, out = run(client, parent.id, ["sh", "-c", work], environment={"SOURCE_DATE_EPOCH": str(target.base.source_date_epoch)})
    size = int(out.split()[0])
    again = dict(line.split()[::-1] for line in out.strip().splitlines()[1:])
    _, built = run(client, image.id, ["sh", "-c", f"cd {SITE}/flashinfer/data/aot && sha256sum */*.so"])
    theirs = dict(line.split()[::-1] for line in built.strip().splitlines())
    count, same = len(again), sum(again[k] == theirs.get(k) for k in again)
    stage_bytes = client.images.get(aot.tag).attrs["Size"] - parent.attrs["Size"] if client.images.list(name=aot.tag) else None

    spell = arch_list(archs)
    first_call(client, image.id, spell, hidden=False)  # the page cache warmed once, as for every later run
    prebuilt = [first_call(client, image.id, spell, hidden=False) for _ in range(runs)]
    jit = [first_call(client, image.id, spell, hidden=True) for _ in range(max(1, runs // 3))]
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    pre_s, jit_s = med(prebuilt, "first_call_s"), med(jit, "first_call_s")
    print(f"FlashInfer ahead of time: {image_ref} ({image.short_id}), {', '.join(archs)}, on {os.cpu_count()} cores")
    print(f"  the stage's compile       {seconds:8.1f} s   {count} modules, {size / 1e6:.1f} MB"
          + (f" (the stage's layer: {stage_bytes / 1e6:.1f} MB of the image's {image.attrs['Size'] / 1e9:.2f} GB)" if stage_bytes else ""))
    print(f"  compiled again            {same} of {count} modules byte for byte the image's (a second compile, another container)")
    print(f"  import flashinfer         {med(prebuilt, 'import_s'):8.2f} s   (the same either way; {runs} runs)")
    print(f"  first decode module, prebuilt {pre_s:8.3f} s   (loaded, JIT off)")
    print(f"  first decode module, at first use {jit_s:8.1f} s   (compiled for {spell} with the image's nvcc)")
    print(f"  ratio                     {jit_s / pre_s:8.0f}x")


if __name__ == "__main__":
    main()
