"""``sglbuild archs``: the GPU code in files, wheels, trees and images.

An image is read by running the fatbin reader inside it with the image's own Python
(no network, sglbuild mounted read-only), so nothing is exported or unpacked.
"""

from __future__ import annotations

import json
from pathlib import Path

import docker

from .engine import find_image, run_in_image
from .errors import InputError, SglbuildError
from .fatbin import GpuCode, scan_path

PACKAGE_DIR = Path(__file__).resolve().parent
PROBE_MOUNT = "/opt/sglbuild-probe"


def scan(paths: list[str], client_factory) -> list[GpuCode]:
    codes: list[GpuCode] = []
    for p in paths:
        if p.startswith("docker://"):
            codes += scan_image(client_factory(), p[len("docker://"):], ["/"])
        else:
            codes += list(scan_path(Path(p)))
    return codes


def run_probe(client: docker.DockerClient, image: str, args: list[str], device_requests: list | None = None) -> dict | list:
    """Run ``python3 -m builder.probe ARGS`` inside IMAGE (no network); return its JSON answer."""
    if find_image(client, image) is None:
        raise InputError(f"no image {image!r} on this engine", "build or pull it first")
    code, out = run_in_image(
        client, image, ["python3", "-m", "builder.probe", *args], entrypoint=[],
        environment={"PYTHONPATH": PROBE_MOUNT, "PYTHONDONTWRITEBYTECODE": "1"},
        volumes={str(PACKAGE_DIR): {"bind": f"{PROBE_MOUNT}/builder", "mode": "ro"}},
        device_requests=device_requests,
    )
    lines = out.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if result is None or (isinstance(result, dict) and "probe_error" in result):
        why = result["probe_error"] if isinstance(result, dict) else (lines[-1] if lines else "(no output)")
        raise SglbuildError(f"the probe failed inside {image} (exit {code}): {why[:300]}")
    return result


def scan_image(client: docker.DockerClient, image: str, roots: list[str]) -> list[GpuCode]:
    answer = run_probe(client, image, ["archs", *roots])
    return [GpuCode(d["path"], set(d["sass"]), set(d["ptx"]), d["entries"], d["compressed_entries"]) for d in answer]
