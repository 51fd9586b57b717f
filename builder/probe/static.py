"""The static probe: everything verify's static checks need, from one run inside the image.

Runs with the image's own Python, no network, no GPU. Imports that may fail or crash
(torch, sglang, the flag parser, the JIT probe) run in child processes, so one failure is
reported, not fatal. Under emulation most of the time is Python compiling the image's modules:
the children share one byte-code cache (the caller's PYTHONPYCACHEPREFIX), the parser's child
starts once torch is compiled, and it answers for `import sglang` too. Standard library only.
"""

from __future__ import annotations

import concurrent.futures
import glob
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import List, Optional

from ..contracts import LOCK_IN_IMAGE, PROBE_VERSION, GpuCode, Outcome, Runtime, StaticReply
from .fatbin import scan_file, scan_tree
from .loader import driver_libraries

# What each import reports; run as `python -c` in a child so a crash is an answer, not the end.
_IMPORTS = {
    "torch": "import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda, "
             "'archs': torch._C._cuda_getArchFlags().split(), 'gpu': torch.cuda.is_available()}))",
    "sglang": "import json, sglang; print(json.dumps({'version': sglang.__version__}))",
}


def run_python(code: str, *args: str, module: bool = False) -> Outcome:
    """Run Python code (or a module) with this interpreter; its last stdout line is JSON."""
    cmd = [sys.executable, "-m" if module else "-c", code, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return Outcome(True, json.loads(lines[-1]))
        except ValueError:
            pass
    return Outcome(False, None, last_error_line(proc.stderr) or f"exit {proc.returncode}, no output")


def last_error_line(stderr: str) -> str:
    """The line of a child's stderr that says why it failed (not a warning printed before it)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for pattern in (r"^\w*(Error|Exception)\b.*?:", r"\berror:"):
        hits = [ln for ln in lines if re.search(pattern, ln)]
        if hits:
            return hits[-1]
    return lines[-1] if lines else ""


def _dists() -> dict:
    """Installed distributions, canonical name -> version."""
    out = {}
    for d in md.distributions():
        name = re.sub(r"[-_.]+", "-", (d.metadata["Name"] or "")).lower()
        if name:
            out[name] = d.version
    return out


def libraries(roots: List[str]) -> List[GpuCode]:
    """GPU code of every library under ROOTS ('/' means every top directory but /proc, /sys, /dev)."""
    out: List[GpuCode] = []
    for root in roots:
        if root == "/":
            tops = [p for p in Path("/").iterdir() if str(p) not in ("/proc", "/sys", "/dev") and p.is_dir() and not p.is_symlink()]
        else:
            tops = [Path(root)]
        for top in sorted(tops):
            out += list(scan_tree(top))
    return out


def parse_flags(flags: List[str], target: Optional[str] = None) -> tuple:
    """(Outcome of parsing FLAGS with the image's SGLang, the choices it offers or None, its default backends per
    architecture of TARGET or None, the Outcome of importing sglang as that child saw it or None where it failed)."""
    child = run_python("builder.probe.flags", json.dumps(flags), *([target] if target else []), module=True)
    if not child.ok:  # sglang or its parser did not import: which of them, a child of its own says
        return child, None, None, None
    answer = child.value
    version = answer.get("version")  # None: an SGLang without __version__, which `import sglang`'s own child reports
    return (Outcome(answer["error"] is None, answer["parsed"], answer["error"]), answer["choices"], answer.get("defaults"),
            Outcome(True, {"version": version}) if version is not None else None)


def flashinfer_aot(declared: str, target: str) -> Outcome:
    """Each module DECLARED (the image's LABEL_FLASHINFER_AOT) as the image's FlashInfer resolves it with its JIT off for
    TARGET's architectures, and the SASS of the file it resolves to (builder.probe.flashinfer_aot, the code the build made
    them with)."""
    answer = run_python("builder.probe.flashinfer_aot", "resolve", declared, target, module=True)
    if not answer.ok:
        return answer
    for module in answer.value:
        module["sass"] = scan_file(Path(module["path"])).sass if module["path"] else []
    return answer


def static(flags: Optional[List[str]], target: Optional[str] = None, jit: bool = True, aot: Optional[str] = None) -> StaticReply:
    """FLAGS: server flags to parse (None: none given); TARGET: architectures (sm_100,sm_121) to run the JIT probe for
    (not with JIT false: the reply's jit is then None) and to read SGLang's default backends for; AOT: the FlashInfer
    modules the image declares built ahead of time (None: none)."""
    paths = sysconfig.get_paths()
    site = sorted({paths["purelib"], paths["platlib"]})
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        # The JIT probe first: its compile is the longest part (minutes under emulation).
        compiled = pool.submit(run_python, "builder.probe.jit", target, module=True) if target and jit else None
        pip = pool.submit(subprocess.run, [sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
        torch = pool.submit(run_python, _IMPORTS["torch"])
        prebuilt = pool.submit(flashinfer_aot, aot, target or "sm_120") if aot else None
        libs = [c for c in libraries(site) if c.has_gpu_code]
        # The flag parser imports SGLang, and so torch: started once torch's byte-code is in the probe's cache (where the
        # caller gives one, PYTHONPYCACHEPREFIX), it reads it rather than compiling it again.
        torch.result()
        # Parsed even with no flags given: the parser's choices are evidence for the feature table. Its child also
        # answers for `import sglang` (a child of its own asks again only where it failed).
        parsed = pool.submit(parse_flags, flags or [], target) if "sglang" in _dists() else None
        # torch loads the nvidia-* wheels' libraries (and its own) before any extension that
        # needs them: resolve with that path, as the process does at run time.
        preload = sorted(glob.glob(os.path.join(site[0], "nvidia", "*", "lib")) + glob.glob(os.path.join(site[0], "torch", "lib")))
        env = {**os.environ, "LD_LIBRARY_PATH": ":".join(preload)}

        def ldd(path: str) -> tuple:
            out = subprocess.run(["ldd", path], capture_output=True, text=True, env=env).stdout
            return path, sorted(set(re.findall(r"^\s*(\S+) => not found", out, re.M)))

        # Only shared objects link against anything; cubins and archives are not ldd's to read.
        missing = dict(pool.map(ldd, [c.path for c in libs if c.kind == "library"])) if shutil.which("ldd") else None
        pipc = pip.result()
    dists = _dists()
    flags_outcome, options, defaults, sglang = parsed.result() if parsed is not None else (None, None, None, None)
    if flags is None:
        flags_outcome = None
    jit_outcome = compiled.result() if compiled is not None else None
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout if shutil.which("ldconfig") else ""
    lock = Path(LOCK_IN_IMAGE).read_text() if os.path.exists(LOCK_IN_IMAGE) else None
    driver = driver_libraries([c.path for c in libs if c.kind == "library"])
    pip_out = (pipc.stdout + pipc.stderr).strip()[-2000:]
    return StaticReply(
        probe_version=PROBE_VERSION,
        python=sys.version.split()[0],
        executable=sys.executable,
        site_packages=site,
        dists=dists,
        pip_check=Outcome(pipc.returncode == 0, pip_out, None if pipc.returncode == 0 else (pip_out.splitlines() or ["failed"])[0]),
        imports={"torch": torch.result(), "sglang": sglang or run_python(_IMPORTS["sglang"])},
        flags=flags_outcome,
        server_options=options,
        jit=jit_outcome.value if jit_outcome is not None and jit_outcome.ok else (
            {t: {"error": jit_outcome.error} for t in (target or "").split(",")} if jit_outcome is not None else None),
        libraries=libs,
        ldd_missing=missing,
        runtime=Runtime(
            cc=shutil.which("cc") or shutil.which("gcc"),
            python_h=os.path.exists(os.path.join(paths["include"], "Python.h")),
            libnuma="libnuma.so.1" in ldconfig,
            ldd=shutil.which("ldd"),
        ),
        lock=lock,
        driver=driver,
        defaults=defaults,
        flashinfer_aot=prebuilt.result() if prebuilt is not None else None,
    )
