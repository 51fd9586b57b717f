"""Start-up with and without byte-code, in one run, side by side: the default target built both ways.

Each variant (the profile's ``compile_bytecode`` on and off, nothing else changed) is built from scratch from a warm
wheelhouse under its own scratch repository, removed after it is measured. For each, in fresh containers (a new one per
run, the page cache warmed once first): the time of ``import torch`` and of the server's first import
(``import sglang.srt.entrypoints.http_server``), then of the same import again in the same container (Python's
byte-code now on disk, as a second server start in one container would find it). The goal: in a fresh container, the
server's first import within 1.2x of the second. The image's size and the build's seconds are reported each way.

``sgl_kernel`` opens ``libcuda.so.1`` at import; with no GPU here, a stub library of that name (functions that return
an error, as CUDA's link stub) is mounted for the import. BENCH_TARGET picks another target; BENCH_RUNS the runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.assemble.plan import make_plan  # noqa: E402
from builder.assemble.stages import Built, build_image  # noqa: E402
from builder.check import evidence  # noqa: E402
from builder.check.repro import remove_tags  # noqa: E402
from builder.engine import connect  # noqa: E402
from builder.inputs.lockfile import check_lock  # noqa: E402
from builder.inputs.profile import load_profile  # noqa: E402
from builder.inputs.wheelhouse import fetch  # noqa: E402
from builder.ui import Reporter  # noqa: E402

MODULES = ("torch", "sglang.srt.entrypoints.http_server")
STUB_DIR = "/usr/local/lib/sglbuild-bench-stub"


def stub_libcuda(engine, image: str, directory: Path) -> Path:
    """A libcuda.so.1 defining every driver function the image's sgl_kernel libraries link against, each returning
    CUDA_ERROR_NO_DEVICE (as CUDA's link stub): what their import needs to load, with no GPU here."""
    import io
    import tarfile

    container = engine.client.containers.create(image, ["true"], entrypoint=[])
    try:
        bits, _ = container.get_archive(f"{site_packages(engine, image)}/sgl_kernel")
        tarfile.open(fileobj=io.BytesIO(b"".join(bits))).extractall(directory / "image", filter="data")
    finally:
        container.remove(force=True)
    wanted = set()
    for so in (directory / "image").rglob("*.so"):
        out = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True, text=True).stdout
        wanted |= {line.split()[-1].split("@")[0] for line in out.splitlines() if line.split()[-1].startswith("cu")}
    source = "".join(f"int {name}(void) {{ return 100; }}\n" for name in sorted(wanted))
    path = directory / "libcuda.so.1"
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(path), "-x", "c", "-"], input=source.encode(), check=True)
    return path


def site_packages(engine, image: str) -> str:
    out = engine.client.containers.run(image, ["python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       entrypoint=[], remove=True, network_disabled=True)
    return out.decode().strip()


def imports(engine, image: str, module: str, stub: Path) -> tuple[float, float]:
    """(first, second) import of MODULE in one new container of IMAGE, in seconds."""
    timed = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = engine.client.containers.run(image, ["sh", "-c", f"python -c '{timed}' && python -c '{timed}'"], entrypoint=[], remove=True,
                                       network_disabled=True, environment={"LD_LIBRARY_PATH": STUB_DIR},
                                       volumes={str(stub.parent): {"bind": STUB_DIR, "mode": "ro"}}, stderr=False)
    first, second = (float(x) for x in out.decode().split()[-2:])
    return first, second


def main() -> None:
    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target(os.environ.get("BENCH_TARGET") or None)
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    lock = check_lock(profile, target)
    wheels = ROOT / "wheels"
    reporter = Reporter(quiet=True)
    fetch(lock, wheels, reporter)
    engine = connect()
    results: dict[str, dict] = {}
    for mode, on in (("byte-code", True), ("no byte-code", False)):
        repo = f"sglbuild-bench/{'bytecode' if on else 'no-bytecode'}"
        plan = make_plan(dataclasses.replace(target, compile_bytecode=on), lock, profile.revision, repo=repo, builder=engine.builder)
        try:
            built: Built = build_image(engine, plan, wheels, reporter, fresh=True,
                                       derive=lambda p, image: evidence.complete(engine, p, image, reporter, fresh=True))
            image = f"{repo}:final"
            engine.images.tag(built.image_id, image)
            stub = stub_libcuda(engine, image, Path(tempfile.mkdtemp(prefix="sglbuild-bench-stub-")))
            imports(engine, image, "torch", stub)  # the page cache warmed: every measured run reads the same way
            row: dict = {"image_id": built.image_id, "size": engine.images.get(image).size, "build_s": built.seconds}
            for module in MODULES:
                pairs = [imports(engine, image, module, stub) for _ in range(runs)]
                row[module] = {"first": statistics.median(p[0] for p in pairs), "second": statistics.median(p[1] for p in pairs)}
            results[mode] = row
        finally:
            remove_tags(engine, [repo])
    on, off = results["byte-code"], results["no byte-code"]
    print(f"\n{'in a fresh container (median of ' + str(runs) + ')':44} {'no byte-code':>13} {'byte-code':>10} {'ratio':>7}")
    for module in MODULES:
        for when in ("first", "second"):
            a, b = off[module][when], on[module][when]
            print(f"{'import ' + module + ' (' + when + ')':44} {a:11.2f} s {b:8.2f} s {b / a:7.2f}")
    for module in MODULES:
        a, b = off[module]["first"] / off[module]["second"], on[module]["first"] / on[module]["second"]
        print(f"{'first / second, ' + module:44} {a:12.2f}x {b:9.2f}x  goal <= 1.2x with byte-code")
    print(f"{'image size':44} {off['size'] / 1e9:11.2f} GB {on['size'] / 1e9:6.2f} GB {on['size'] / off['size']:7.2f}")
    print(f"{'build from scratch (warm wheelhouse)':44} {off['build_s']:11.1f} s {on['build_s']:8.1f} s {on['build_s'] / off['build_s']:7.2f}")
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    (out / "bench-startup.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
