"""cuobjdump, the authority on what GPU code a file carries, and sglbuild's reader held against it.

Used by the tests (every GPU file of the wheelhouse, nvcc-built fixtures) and by the benchmark.
cuobjdump comes from PATH or PyPI's ``nvidia-cuda-cuobjdump`` (a test dependency).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.contracts import GpuCode  # noqa: E402
from builder.probe.fatbin import may_hold_gpu_code, scan_file  # noqa: E402

_ELF_LINE = re.compile(r"^ELF file\s+\d+: .*\.(sm_\d+[af]?)\.cubin$", re.M)
_PTX_LINE = re.compile(r"^PTX file\s+\d+: .*\.(sm_\d+[af]?)\.ptx$", re.M)
_MAGICS = (b"\x7fELF", b"!<ar", b"\x50\xed\x55\xba")


def find_cuobjdump() -> str | None:
    hits = sorted(Path(sys.prefix).glob("lib/python3*/site-packages/nvidia/cu*/bin/cuobjdump"))
    return shutil.which("cuobjdump") or (str(hits[0]) if hits else None)


@dataclass(frozen=True)
class Listing:
    """What a tool says a file holds, in cuobjdump's names: SASS sm_XX[a], PTX sm_XX[af], and how many images."""

    sass: tuple[str, ...]
    ptx: tuple[str, ...]
    entries: int

    @classmethod
    def of(cls, code: GpuCode) -> "Listing":
        return cls(tuple(sorted(code.sass)), tuple(sorted(p.replace("compute_", "sm_") for p in code.ptx)), code.entries)


def cuobjdump_listing(tool: str, path: Path) -> Listing:
    out = subprocess.run([tool, "--list-elf", "--list-ptx", str(path)], capture_output=True, text=True).stdout
    sass, ptx = _ELF_LINE.findall(out), _PTX_LINE.findall(out)
    return Listing(tuple(sorted(set(sass))), tuple(sorted(set(ptx))), len(sass) + len(ptx))


@dataclass
class Agreement:
    file: str  # WHEEL!MEMBER
    ours: Listing
    theirs: Listing
    opened: bool  # whether sglbuild's tree and wheel scans open this file at all

    @property
    def agree(self) -> bool:
        return self.ours == self.theirs and (self.opened or not self.theirs.entries)


def gpu_candidates(wheel: Path) -> list[zipfile.ZipInfo]:
    """Every member cuobjdump could read: ELF files, archives and fatbins, found by their magic, whatever their names."""
    with zipfile.ZipFile(wheel) as zf:
        found = []
        for info in zf.infolist():
            if info.is_dir() or info.file_size < 64:
                continue
            with zf.open(info) as f:
                if f.read(4) in _MAGICS:
                    found.append(info)
        return found


def compare_wheelhouse(wheelhouse: Path, tool: str, cache: Path | None = None, workers: int = 2) -> tuple[list[Agreement], dict]:
    """Ours against cuobjdump on every candidate file of every wheel; cuobjdump's answers are cached by wheel hash.

    Returns the agreements and the time each tool spent (cuobjdump's includes extraction only when not cached).
    """
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    answers: dict = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    times = {"ours_s": 0.0, "cuobjdump_s": 0.0, "cuobjdump_cached": 0}
    results: list[Agreement] = []

    def one(wheel: Path) -> list[Agreement]:
        st = wheel.stat()
        key = f"{version}:{wheel.name}:{st.st_size}:{st.st_mtime_ns}"
        out = []
        with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory(prefix="sglbuild-authority-") as tmp:
            for info in gpu_candidates(wheel):
                target = Path(tmp, "f")  # both tools read the same extracted file
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                t0 = time.perf_counter()
                ours = Listing.of(scan_file(target))
                times["ours_s"] += time.perf_counter() - t0
                cached = answers.get(key, {}).get(info.filename)
                if cached is None:
                    t0 = time.perf_counter()
                    theirs = cuobjdump_listing(tool, target)
                    times["cuobjdump_s"] += time.perf_counter() - t0
                    answers.setdefault(key, {})[info.filename] = asdict(theirs)
                else:
                    theirs = Listing(tuple(cached["sass"]), tuple(cached["ptx"]), cached["entries"])
                    times["cuobjdump_cached"] += 1
                target.unlink()
                out.append(Agreement(f"{wheel.name}!{info.filename}", ours, theirs, may_hold_gpu_code(info.filename)))
        return out

    wheels = sorted(wheelhouse.glob("*.whl"), key=lambda p: -p.stat().st_size)  # the big ones first, in parallel
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rows in pool.map(one, wheels):
            results += rows
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(answers))
        os.replace(tmp, cache)
    return sorted(results, key=lambda a: a.file), times


if __name__ == "__main__":  # python tests/authority.py [WHEELHOUSE]: the disagreements, then the count
    tool = find_cuobjdump()
    rows, spent = compare_wheelhouse(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "wheels"), tool)
    gpu = [r for r in rows if r.theirs.entries or r.ours.entries]
    for r in gpu:
        if not r.agree:
            print(f"DIFFERS {r.file}: ours {r.ours} cuobjdump {r.theirs} opened={r.opened}")
    print(f"{sum(r.agree for r in gpu)}/{len(gpu)} GPU files identical ({len(rows)} files read); {spent}")
