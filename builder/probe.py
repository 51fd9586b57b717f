"""Checks that run inside an image (or on a GPU host) with that Python; answers JSON.

Stdlib only, plus builder.fatbin: this module is mounted into images that have no
sglbuild installed. The last line of output is the JSON answer.

    python3 -m builder.probe archs ROOT...      GPU code of every library under ROOT
    python3 -m builder.probe env                interpreter, distributions, runtime tools
    python3 -m builder.probe gpu [--target sm_120]   device, matmul and RMSNorm checks
"""

from __future__ import annotations

import json
import sys


def _archs(roots: list[str]) -> list[dict]:
    from pathlib import Path

    from .fatbin import scan_tree

    out = []
    skip = ("/proc", "/sys", "/dev")
    for root in roots:
        if root == "/":
            tops = [p for p in Path("/").iterdir() if str(p) not in skip and p.is_dir() and not p.is_symlink()]
        else:
            tops = [Path(root)]
        for top in sorted(tops):
            out += [c.to_dict() for c in scan_tree(top)]
    return out


LOCK_IN_IMAGE = "/usr/share/sglbuild/lock.json"

_TORCH = ("import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda, "
          "'archs': torch._C._cuda_getArchFlags().split(), 'gpu': torch.cuda.is_available()}))")
_SGLANG = "import json, sglang; print(json.dumps({'version': sglang.__version__}))"
_FLAGS = ("import argparse, json, sys; from sglang.srt.server_args import ServerArgs; p = argparse.ArgumentParser(); "
          "ServerArgs.add_cli_args(p); a = p.parse_args(['--model-path', 'x', *json.loads(sys.argv[1])]); "
          "print(json.dumps({'attention_backend': a.attention_backend, 'disable_custom_all_reduce': a.disable_custom_all_reduce, "
          "'sampling_backend': a.sampling_backend}))")


def _static(flags_json: str) -> dict:
    """Everything verify's static checks need, from one run inside the image."""
    import concurrent.futures
    import glob
    import importlib.metadata as md
    import os
    import re
    import shutil
    import subprocess
    import sysconfig

    def py(code: str, *args: str) -> dict:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        ok = proc.returncode == 0 and bool(lines)
        err = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"ok": ok, "value": json.loads(lines[-1]) if ok else None, "error": None if ok else err}

    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        torch_f = pool.submit(py, _TORCH)
        sglang_f = pool.submit(py, _SGLANG)
        flags_f = pool.submit(py, _FLAGS, flags_json) if flags_json != "null" else None
        pipc_f = pool.submit(subprocess.run, [sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
        libs = _archs(site)
        gpu_libs = [d["path"] for d in libs if d["sass"] or d["ptx"]]

        # torch loads the nvidia-* wheels' libraries (and its own) before any extension that
        # needs them: resolve with that path, as the process does at run time.
        preload = sorted(glob.glob(os.path.join(site[0], "nvidia", "*", "lib")) + glob.glob(os.path.join(site[0], "torch", "lib")))
        env = {**os.environ, "LD_LIBRARY_PATH": ":".join(preload)}

        def ldd(path: str) -> tuple[str, list[str]]:
            out = subprocess.run(["ldd", path], capture_output=True, text=True, env=env).stdout
            return path, sorted(set(re.findall(r"^\s*(\S+) => not found", out, re.M)))

        missing = dict(pool.map(ldd, gpu_libs)) if shutil.which("ldd") else None
        pipc = pipc_f.result()
    dists = {}
    for d in md.distributions():
        name = re.sub(r"[-_.]+", "-", (d.metadata["Name"] or "")).lower()
        if name:
            dists[name] = d.version
    include = sysconfig.get_paths()["include"]
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout if shutil.which("ldconfig") else ""
    lock = None
    if os.path.exists(LOCK_IN_IMAGE):
        with open(LOCK_IN_IMAGE) as f:
            lock = f.read()
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "site_packages": site,
        "dists": dists,
        "pip_check": {"exit_code": pipc.returncode, "output": (pipc.stdout + pipc.stderr).strip()[-2000:]},
        "torch": torch_f.result(),
        "sglang": sglang_f.result(),
        "flags": flags_f.result() if flags_f else None,
        "archs": libs,
        "ldd_missing": missing,
        "runtime": {
            "cc": shutil.which("cc") or shutil.which("gcc"),
            "python_h": os.path.exists(os.path.join(include, "Python.h")),
            "libnuma": "libnuma.so.1" in ldconfig,
            "ldd": shutil.which("ldd"),
        },
        "lock": lock,
    }


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["archs"]:
            answer: object = _archs(argv[1:] or ["/"])
        elif argv[:1] == ["flags"]:
            proc = __import__("subprocess").run([sys.executable, "-c", _FLAGS, argv[1]], capture_output=True, text=True)
            err = (proc.stderr.strip().splitlines() or [""])[-1]
            answer = {"ok": proc.returncode == 0, "error": None if proc.returncode == 0 else err}
        elif argv[:1] == ["static"]:
            answer = _static(argv[1] if len(argv) > 1 else "null")
        elif argv[:1] == ["gpu"]:
            from .gpuprobe import gpu_checks

            answer = gpu_checks(argv[1:])
        else:
            answer = {"probe_error": f"unknown probe command {argv!r}"}
    except Exception as exc:  # noqa: BLE001 - reported as JSON to the caller
        answer = {"probe_error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer))
    return 1 if isinstance(answer, dict) and "probe_error" in answer else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
