"""Checking a pushed image from its registry's signed attestations against pulling and probing it, in one run.

The image (BENCH_IMAGE, default: the default target's) is pushed with `push --sign-key` to a registry on
loopback (Debian's docker-registry). Then, side by side:

- `verify REPO@sha256:... --key PUB`: the attested verdicts, read and checked without pulling a layer;
- the naive way: pull the image on a machine that does not have it (the second engine, ci/engine.sh, whose image
  store is its own) and verify it there (the probe runs in the image).

Bytes are what each read from the registry: the attestations' manifests and envelopes, against the image's
manifest, config and layers (their sizes in the manifest: what a pull transfers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.engine import connect  # noqa: E402
from builder.oci import Registry, referrers_tag, split_ref  # noqa: E402


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                       capture_output=True, text=True)
    return r, time.monotonic() - t0


def main() -> None:
    image = os.environ.get("BENCH_IMAGE", "sglang:blackwell-final-v2")
    engine = connect()
    port = os.environ.get("BENCH_REGISTRY_PORT", "5099")
    # One registry, two addresses: this engine pushes to it on loopback (which Docker treats as insecure by default),
    # the second engine pulls from it at 10.200.26.1, this host's side of its own network namespace.
    store = tempfile.mkdtemp(prefix="sglbuild-bench-registry-")
    subprocess.run([str(ROOT / "ci" / "registry.sh"), port], env={**os.environ, "REGISTRY_HOST": "0.0.0.0", "REGISTRY_DIR": store},
                   capture_output=True, text=True, check=True)
    host, far = f"127.0.0.1:{port}", f"10.200.26.1:{port}"
    repo = f"{host}/sglbuild-bench/attested"
    keys = Path(tempfile.mkdtemp(prefix="sglbuild-bench-keys-"))
    cli("keygen", "--output", str(keys / "bench"))
    verified, _ = cli("verify", image, "--gpu", "off")  # push pushes only what passed verify here
    pushed, push_s = cli("push", image, repo, "--sign-key", str(keys / "bench.key"))
    if pushed.returncode != 0:
        raise SystemExit(pushed.stderr)
    ref = pushed.stdout.strip()
    name = split_ref(ref)[0].split("/", 1)[1]
    client = Registry(host, insecure=True)

    client.received = 0
    attested, attested_s = cli("verify", ref, "--key", str(keys / "bench.pub"), "--format", "json")
    found, _ = client.referrers(name, split_ref(ref)[1])
    attested_bytes = sum(len(client.manifest(name, d["digest"]).data) for d in found)
    attested_bytes += sum(layer["size"] for d in found for layer in json.loads(client.manifest(name, d["digest"]).data)["layers"])
    attested_bytes += len(client.manifest(name, referrers_tag(split_ref(ref)[1])).data) + len(client.manifest(name, split_ref(ref)[1]).data)

    manifest = json.loads(client.manifest(name, split_ref(ref)[1]).data)
    pull_bytes = len(json.dumps(manifest)) + manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    second = subprocess.run([str(ROOT / "ci" / "engine.sh"), "env"], capture_output=True, text=True).stdout.split()
    env = dict(kv.split("=", 1) for kv in second)
    far_ref = ref.replace(host, far, 1)
    naive, naive_s = cli("verify", far_ref, "--gpu", "off", "--format", "json", env=env)
    print(f"\n{'':34}{'attested (--key)':>20}{'pull + probe':>20}")
    print(f"{'verify ' + image:34}{attested_s:>18.1f} s{naive_s:>18.1f} s")
    print(f"{'bytes from the registry':34}{attested_bytes / 1e6:>17.2f} MB{pull_bytes / 1e6:>17.1f} MB")
    print(f"{'exit status':34}{attested.returncode:>20}{naive.returncode:>20}")
    print(f"ratio: time {naive_s / attested_s:.0f}x, bytes {pull_bytes / max(attested_bytes, 1):.0f}x; "
          f"push with attestations {push_s:.1f} s ({verified.returncode=})")
    # What the run made: the push's tag here, the pulled image on the second engine.
    tag = next(line.split()[-1] for line in pushed.stderr.splitlines() if line.startswith("pushed ") and ":" in line.split()[-1])
    engine.images.remove(tag)
    import docker

    docker.DockerClient(base_url=env["DOCKER_HOST"]).images.remove(far_ref, force=True)
    os.kill(int((Path(store) / "registry.pid").read_text()), 15)
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(keys, ignore_errors=True)

if __name__ == "__main__":
    main()
