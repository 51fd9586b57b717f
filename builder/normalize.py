"""Step 6, normalize: the final image, re-issued with a config that depends only on its inputs.

Labels are applied here and nowhere else: the target's name, the revision and the human tag
change the config, never a layer, so they rebuild nothing. How depends on the engine:

- classic builder, legacy image store: the classic builder writes creation times, the build
  container's ID and host name into the config, so two identical builds get different image
  IDs even with identical layers. This writes a new config — the same layers (by diff ID), the
  same runtime settings, the plan's labels, creation times set to SOURCE_DATE_EPOCH, one history
  entry per layer naming its stage — and loads it (a manifest without layer files, which only
  the legacy store accepts; the engine has every layer already). The image ID is the sha256 of
  that config.
- BuildKit (any image store, containerd's included): BuildKit already writes SOURCE_DATE_EPOCH's
  times and nothing of the build container; a build of ``FROM <final stage>`` with the labels
  re-issues it, reading no layer. Each layer's stage is named in a label.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .contracts import HISTORY_PREFIX, LABEL_LAYER_STAGES, LABEL_MANAGED, LABEL_STAGE_KEY, PROVENANCE_LABELS, STAGE_REPO
from .errors import EngineError, EnvironmentProblem
from .layers import StreamReader
from .render import dockerfile_value

if TYPE_CHECKING:
    from .engine import Engine
    from .plan import Plan

_RUNTIME_KEYS = ("User", "Env", "Entrypoint", "Cmd", "WorkingDir", "ExposedPorts", "Volumes", "StopSignal")


@dataclass(frozen=True)
class Normalized:
    image_id: str  # sha256 of the config
    content_id: str  # the same, with the provenance labels left out: equal for images that differ only in where they came from


def normalized_config(image_attrs: dict[str, Any], layer_stages: list[str], labels: dict[str, str], epoch: int) -> dict[str, Any]:
    created = datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    runtime = image_attrs.get("Config") or {}
    config = {k: runtime[k] for k in _RUNTIME_KEYS if runtime.get(k)}
    kept = {k: v for k, v in (runtime.get("Labels") or {}).items() if k != LABEL_STAGE_KEY}
    config["Labels"] = dict(sorted({**kept, LABEL_MANAGED: "true", **labels}.items()))
    diff_ids = image_attrs["RootFS"]["Layers"]
    if len(layer_stages) != len(diff_ids):
        raise EngineError(f"normalize: {len(diff_ids)} layers but {len(layer_stages)} stage names")
    return {
        "architecture": image_attrs.get("Architecture", "amd64"),
        "os": image_attrs.get("Os", "linux"),
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": f"{HISTORY_PREFIX}{stage}"} for stage in layer_stages],
    }


def _canonical(config: dict[str, Any]) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def content_id(attrs: dict[str, Any]) -> str:
    """An image's content, whatever engine or path made it: its layers, runtime settings and labels
    other than provenance. Two images with the same content ID passed or failed the same checks."""
    runtime = attrs.get("Config") or {}
    labels = {k: v for k, v in (runtime.get("Labels") or {}).items() if k not in PROVENANCE_LABELS and k != LABEL_LAYER_STAGES}
    blob = {"layers": attrs["RootFS"]["Layers"], "labels": labels, **{k: runtime.get(k) for k in _RUNTIME_KEYS}}
    return "sha256:" + hashlib.sha256(_canonical(blob)).hexdigest()


def normalize(engine: Engine, plan: Plan, image_id: str, layer_stages: list[str]) -> Normalized:
    """The normalized twin of IMAGE_ID (the final stage's image, with PLAN's labels); returns its IDs."""
    epoch = plan.target.base.source_date_epoch
    if plan.builder == "buildkit":
        new_id = _relabel(engine, plan, image_id, layer_stages)
    elif engine.containerd_store:
        raise EnvironmentProblem("this engine keeps images in containerd's store, where sglbuild's classic path cannot "
                                 "re-issue an image's config", "install the docker-buildx plugin: sglbuild then builds with BuildKit")
    else:
        new_id = _load(engine, image_id, layer_stages, plan.labels, epoch)
    return Normalized(new_id, content_id(engine.images.get(new_id).attrs))


def _relabel(engine: Engine, plan: Plan, image_id: str, layer_stages: list[str]) -> str:
    labels = {**plan.labels, LABEL_MANAGED: "true", LABEL_STAGE_KEY: ""}
    tag = f"{plan.repo or STAGE_REPO}:image-{plan.final.key[:16]}-{hashlib.sha256(_canonical(labels)).hexdigest()[:12]}"
    if engine.images.find(tag) is None:
        # The LABEL instruction gives the image a history entry of its own, dated SOURCE_DATE_EPOCH like the
        # stages' (with none, BuildKit would date the config now); the other labels go in by --label (any bytes).
        dockerfile = f"FROM {plan.final.tag}\nLABEL {LABEL_LAYER_STAGES}={dockerfile_value(json.dumps(layer_stages))}\n"
        engine.buildkit.build(dockerfile, "normalize", contexts={}, nocache=False, tag=tag, labels=labels,
                              buildargs={"SOURCE_DATE_EPOCH": str(plan.target.base.source_date_epoch)})
    return engine.images.get(tag).id


def reissue_base(engine: Engine, image_id: str, epoch: int, name: str) -> None:
    """Give an imported base a config made of its inputs alone (``docker import`` stamps the time of the
    import), loaded as NAME: the layer is the engine's already, so none is read back or written."""
    attrs = engine.images.get(image_id).attrs
    created = datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    runtime = attrs.get("Config") or {}
    config = {"architecture": attrs.get("Architecture", "amd64"), "os": attrs.get("Os", "linux"), "created": created,
              "config": {k: runtime[k] for k in (*_RUNTIME_KEYS, "Labels") if runtime.get(k)},
              "rootfs": {"type": "layers", "diff_ids": attrs["RootFS"]["Layers"]},
              "history": [{"created": created, "created_by": f"{HISTORY_PREFIX}base"}]}
    raw = _canonical(config)
    digest = hashlib.sha256(raw).hexdigest()
    if not engine.containerd_store:
        _load_archive(engine, {f"{digest}.json": raw}, [{"Config": f"{digest}.json", "RepoTags": [name],
                      "Layers": [f"{d.split(':', 1)[1]}/layer.tar" for d in config["rootfs"]["diff_ids"]]}], epoch)
        return
    # containerd's store takes an OCI layout whose manifest names layer blobs it already holds; the
    # imported image's own manifest says which (read from its export: a base is small).
    manifest = _oci_manifest(engine, image_id)
    manifest["config"] = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{digest}", "size": len(raw)}
    manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    mraw = _canonical(manifest)
    mdigest = hashlib.sha256(mraw).hexdigest()
    repo, _, tag = name.rpartition(":")
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": manifest["mediaType"], "digest": f"sha256:{mdigest}", "size": len(mraw),
         "annotations": {"io.containerd.image.name": _full_name(name), "org.opencontainers.image.ref.name": tag}}]}
    _load_archive(engine, {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": _canonical(index),
                           f"blobs/sha256/{mdigest}": mraw, f"blobs/sha256/{digest}": raw}, None, epoch)


def _full_name(ref: str) -> str:
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    return ref if ("." in first or ":" in first or first == "localhost") else f"docker.io/{ref}"


def _oci_manifest(engine: Engine, image_id: str) -> dict[str, Any]:
    """The image manifest of IMAGE_ID, from its export (small JSON blobs kept, layers streamed past)."""
    blobs: dict[str, bytes] = {}
    outer = tarfile.open(fileobj=StreamReader(iter(engine.images.export(image_id))), mode="r|")  # type: ignore[call-overload]
    for member in outer:
        if member.isfile() and member.size < (1 << 20):
            blobs[member.name] = outer.extractfile(member).read()
    index = json.loads(blobs["index.json"])
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads(blobs[f"blobs/sha256/{digest}"])
    if "layers" not in manifest:  # an index of platform manifests: take the one for this machine
        digest = manifest["manifests"][0]["digest"].split(":", 1)[1]
        manifest = json.loads(blobs[f"blobs/sha256/{digest}"])
    return manifest


def _load_archive(engine: Engine, files: dict[str, bytes], manifest: list | None, epoch: int) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = dict(files)
        if manifest is not None:
            entries["manifest.json"] = json.dumps(manifest).encode()
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), epoch, 0o644
            tar.addfile(info, io.BytesIO(data))
    engine.images.load(buf.getvalue(), "a re-issued image config")


def _load(engine: Engine, image_id: str, layer_stages: list[str], labels: dict[str, str], epoch: int) -> str:
    """Load the normalized twin of IMAGE_ID (same layers, labels LABELS); returns its ID."""
    attrs = engine.images.get(image_id).attrs
    config = normalized_config(attrs, layer_stages, labels, epoch)
    raw = _canonical(config)
    digest = hashlib.sha256(raw).hexdigest()
    if engine.images.find(f"sha256:{digest}") is not None:
        return f"sha256:{digest}"
    _load_archive(engine, {f"{digest}.json": raw}, [{"Config": f"{digest}.json", "RepoTags": None,
                  "Layers": [f"{d.split(':', 1)[1]}/layer.tar" for d in attrs["RootFS"]["Layers"]]}], epoch)
    return f"sha256:{digest}"
