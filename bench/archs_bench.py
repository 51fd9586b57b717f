"""`sglbuild archs` against cuobjdump: every GPU file of the wheelhouse, then torch's libtorch_cuda.so; static verify's time.

1. The whole wheelhouse: every ELF, archive and fatbin member of every wheel, extracted once,
   read by sglbuild's reader and by `cuobjdump --list-elf --list-ptx` (no cached answers):
   how many GPU files get the same answer, and the time each tool spent.
2. libtorch_cuda.so (1 GB): each tool as its own process, so its peak memory (max RSS) is its own.
3. `sglbuild verify IMAGE --gpu off` on the default image (the JIT probe and feature table included).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))
from authority import compare_wheelhouse  # noqa: E402
from builder.inputs.lockfile import check_lock  # noqa: E402
from builder.inputs.profile import load_profile  # noqa: E402


def timed(cmd: list[str], **kw) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in MB, stdout of one child process."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **kw)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with exit {proc.returncode}")
    return time.monotonic() - t0, usage.ru_maxrss // 1024, out


def cuobjdump() -> str:
    hits = sorted(Path(sys.prefix).glob("lib/python3*/site-packages/nvidia/cu*/bin/cuobjdump"))
    if not hits:
        raise SystemExit("cuobjdump not found: pip install nvidia-cuda-cuobjdump (a test extra)")
    return str(hits[0])


def wheelhouse_agreement() -> dict:
    rows, spent = compare_wheelhouse(ROOT / "wheels", cuobjdump())
    gpu = [r for r in rows if r.theirs.entries or r.ours.entries]
    same = sum(r.agree for r in gpu)
    kinds = {"libraries": sum(".so" in r.file.rsplit("/", 1)[-1] for r in gpu), "cubins": sum(r.file.endswith(".cubin") for r in gpu),
             "archives": sum(r.file.endswith(".a") for r in gpu)}
    print(f"\nwhole wheelhouse: {len(rows)} ELF/archive/fatbin files read, {len(gpu)} with GPU code "
          f"({kinds['libraries']} libraries, {kinds['cubins']} cubins, {kinds['archives']} archives)")
    print(f"{'':28} {'sglbuild archs':>15} {'cuobjdump':>12} {'ratio':>8}  target")
    print(f"{'GPU files, same answer':28} {same:>10}/{len(gpu):<4} {'':>12} {'':>8}  N/N")
    print(f"{'reading time (extracted)':28} {spent['ours_s']:14.2f}s {spent['cuobjdump_s']:11.2f}s "
          f"{spent['cuobjdump_s'] / max(spent['ours_s'], 1e-9):7.1f}x")
    for r in gpu:
        if not r.agree:
            print(f"  DIFFERS {r.file}: ours {r.ours}, cuobjdump {r.theirs}")
    return {"files": len(rows), "gpu_files": len(gpu), "same": same, **kinds, **spent}


def main() -> None:
    wheelhouse = wheelhouse_agreement()
    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target(None)
    lock = check_lock(profile, target)
    torch = lock.wheel("torch")
    with tempfile.TemporaryDirectory(prefix="sglbuild-archs-", dir=ROOT / "wheels") as tmp:
        with zipfile.ZipFile(ROOT / "wheels" / torch.filename) as zf:
            zf.extract("torch/lib/libtorch_cuda.so", tmp)
        so = Path(tmp, "torch/lib/libtorch_cuda.so")
        size = so.stat().st_size
        os.sync()  # the extracted file is written out before either tool reads it
        # Three runs each, taken in turn; the median of each counts (a build just before can leave the disk busy).
        ours_runs, theirs_runs = [], []
        for _ in range(3):
            ours_runs.append(timed([sys.executable, "-m", "builder.cli", "archs", "--json", str(so)], cwd=ROOT))
            theirs_runs.append(timed([cuobjdump(), "--list-elf", str(so)]))
        ours_s, ours_mb, ours_out = sorted(ours_runs)[1]
        theirs_s, theirs_mb, theirs_out = sorted(theirs_runs)[1]
    ours = set(json.loads(ours_out)[0]["sass"])
    theirs = set(re.findall(r"\.(sm_\d+a?)\.cubin", theirs_out))
    image = target.human_tag
    verify_s, _, _ = timed([sys.executable, "-m", "builder.cli", "verify", image, "--gpu", "off"], cwd=ROOT)

    print(f"\nlibtorch_cuda.so ({size / 1e9:.2f} GB) from torch {torch.version}")
    print(f"{'':28} {'sglbuild archs':>15} {'cuobjdump':>12} {'ratio':>8}  target")
    print(f"{'time':28} {ours_s:14.2f}s {theirs_s:11.2f}s {theirs_s / ours_s:7.1f}x  >= 10x faster")
    print(f"{'peak memory (max RSS)':28} {ours_mb:13d}MB {theirs_mb:10d}MB {'':>8}  <= 200 MB")
    print(f"{'SASS architectures':28} {len(ours):15d} {len(theirs):12d} {'same' if ours == theirs else 'DIFFERENT':>8}  identical")
    print(f"  {' '.join(sorted(ours, key=lambda a: (int(re.sub(r'[^0-9]', '', a)), a)))}")
    print(f"{'static verify, ' + image:28} {verify_s:14.1f}s {'':>12} {'':>8}  <= 30 s")
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    (out / "bench-archs.json").write_text(json.dumps({
        "wheelhouse": wheelhouse, "archs_s": ours_s, "archs_mb": ours_mb, "cuobjdump_s": theirs_s, "cuobjdump_mb": theirs_mb,
        "same": ours == theirs, "sass": sorted(ours), "verify_s": verify_s}, indent=2))


if __name__ == "__main__":
    main()
