"""Shipping images: push by digest (only verified images), and move a registry tag to a digest.

Which images passed verify is recorded per image ID in the state directory
(``$SGLBUILD_STATE``, default ``~/.local/state/sglbuild``); an image pulled by digest has
the same ID as the one pushed, so a record made before the push still names it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import docker
import docker.errors

from .engine import find_image
from .errors import CheckFailed, InputError, NetworkError


def state_dir() -> Path:
    return Path(os.environ.get("SGLBUILD_STATE", Path.home() / ".local" / "state" / "sglbuild"))


def _load(name: str) -> dict:
    try:
        return json.loads((state_dir() / name).read_text())
    except (OSError, ValueError):
        return {}


def _save(name: str, data: dict) -> None:
    d = state_dir()
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, d / name)


def record_verified(image_id: str, gpu_checked: bool) -> None:
    records = _load("verified.json")
    records[image_id] = {"time": int(time.time()), "gpu": gpu_checked or records.get(image_id, {}).get("gpu", False)}
    _save("verified.json", records)


def verified(image_id: str) -> dict | None:
    return _load("verified.json").get(image_id)


def push(client: docker.DockerClient, image_ref: str, repo: str, force: bool = False) -> dict:
    image = find_image(client, image_ref)
    if image is None:
        raise InputError(f"no image {image_ref!r} on this engine", "build it first")
    if not force and verified(image.id) is None:
        raise CheckFailed(f"{image_ref} ({image.id[:19]}) has not passed 'sglbuild verify' on this machine",
                          "verify it first, or push --force")
    tag = (image.labels or {}).get("org.opencontainers.image.version") or image.id.split(":")[1][:12]
    client.api.tag(image.id, repo, tag)
    digest = _push(client, repo, tag)
    ref = f"{repo}@{digest}"
    pushes = _load("pushes.json")
    pushes.setdefault(image.id, []).append({"ref": ref, "tag": f"{repo}:{tag}", "time": int(time.time())})
    _save("pushes.json", pushes)
    return {"image_id": image.id, "tag": f"{repo}:{tag}", "digest": digest, "ref": ref}


def _push(client: docker.DockerClient, repo: str, tag: str) -> str:
    digest = ""
    try:
        for chunk in client.api.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise NetworkError(f"push of {repo}:{tag} failed: {chunk['error']}", "check the registry and your login")
            digest = (chunk.get("aux") or {}).get("Digest", digest)
    except docker.errors.APIError as exc:
        raise NetworkError(f"push of {repo}:{tag} failed: {exc.explanation}") from None
    if not digest:
        raise NetworkError(f"push of {repo}:{tag} reported no digest")
    return digest


def pull(client: docker.DockerClient, ref: str) -> str:
    """Pull REPO@sha256:... (if not already here); returns the image ID."""
    image = find_image(client, ref)
    if image is not None:
        return image.id
    repo, _, digest = ref.partition("@")
    if not digest.startswith("sha256:"):
        raise InputError(f"{ref!r} is not pinned by digest (REPO@sha256:...)")
    try:
        return client.images.pull(repo, tag=digest).id
    except docker.errors.APIError as exc:
        raise NetworkError(f"cannot pull {ref}: {exc.explanation}") from None


def promote(client: docker.DockerClient, ref: str, tag: str, require_gpu: bool = False) -> dict:
    """Point REPO:TAG in the registry at the image REF (by digest) — only once it passed verify."""
    image_id = pull(client, ref)
    record = verified(image_id)
    if record is None or (require_gpu and not record["gpu"]):
        what = "verify with --gpu require" if require_gpu else "verify"
        raise CheckFailed(f"{ref} has not passed '{what}' on this machine; the tag was not moved", f"run sglbuild {what} {ref}")
    repo = ref.partition("@")[0]
    client.api.tag(image_id, repo, tag)
    digest = _push(client, repo, tag)
    if f"{repo}@{digest}" != ref:
        raise CheckFailed(f"{repo}:{tag} now names {digest}, not {ref}")
    return {"ref": ref, "tag": f"{repo}:{tag}"}
