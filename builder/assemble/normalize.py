"""Step 6, normalize: the final image, re-issued with a config that depends only on its inputs.

Labels are applied here and nowhere else: the target's name, the revision and the human tag
change the config, never a layer, so they rebuild nothing. How depends on the engine:

- classic builder, legacy image store: the classic builder writes creation times, the build
  container's ID and host name into the config, so two identical builds get different image
  IDs even with identical layers. :func:`image_config` writes a new config — the same layers
  (by diff ID), the same runtime settings, the plan's labels, creation times set to
  SOURCE_DATE_EPOCH, one history entry per layer naming its stage — and the engine loads it
  (:meth:`builder.engine.images.Images.load_config`: no layer is read or written). The image ID
  is the sha256 of that config. The imported base is re-issued with the same function
  (:func:`builder.assemble.base.reissue`).
- BuildKit (any image store, containerd's included): BuildKit already writes SOURCE_DATE_EPOCH's
  times and nothing of the build container; a build of ``FROM <final stage>`` with the labels
  re-issues it, reading no layer. Each layer's stage is named in a label.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..contracts import HISTORY_PREFIX, LABEL_LAYER_STAGES, LABEL_MANAGED, LABEL_STAGE_KEY, PROVENANCE_LABELS, STAGE_REPO
from ..engine.archives import canonical
from ..engine.records import ImageRecord
from ..errors import EngineError, EnvironmentProblem
from .render import dockerfile_value

if TYPE_CHECKING:
    from ..engine import Engine
    from .plan import Plan


@dataclass(frozen=True)
class Normalized:
    image_id: str  # sha256 of the config
    content_id: str  # the same, with the provenance labels left out: equal for images that differ only in where they came from


def image_config(image: ImageRecord, layer_stages: list[str], labels: dict[str, str], epoch: int) -> dict[str, Any]:
    """IMAGE's config made of its inputs alone: its layers and runtime settings, LABELS, SOURCE_DATE_EPOCH's times,
    and a history entry per layer naming the stage that made it (LAYER_STAGES)."""
    created = datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    runtime = image.config.spec()
    kept = {k: v for k, v in image.labels.items() if k != LABEL_STAGE_KEY}
    runtime["Labels"] = dict(sorted({**kept, LABEL_MANAGED: "true", **labels}.items()))
    if len(layer_stages) != len(image.layers):
        raise EngineError(f"normalize: {len(image.layers)} layers but {len(layer_stages)} stage names")
    return {
        "architecture": image.architecture,
        "os": image.os,
        **({"variant": image.variant} if image.variant else {}),
        "created": created,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": list(image.layers)},
        "history": [{"created": created, "created_by": f"{HISTORY_PREFIX}{stage}"} for stage in layer_stages],
    }


def content_id(image: ImageRecord) -> str:
    """An image's content, whatever engine or path made it: its layers, runtime settings and labels
    other than provenance. Two images with the same content ID passed or failed the same checks."""
    labels = {k: v for k, v in image.labels.items() if k not in PROVENANCE_LABELS and k != LABEL_LAYER_STAGES}
    blob = {"layers": list(image.layers), "labels": labels, **image.config.spec()}
    return "sha256:" + hashlib.sha256(canonical(blob)).hexdigest()


def normalize(engine: Engine, plan: Plan, image_id: str, layer_stages: list[str]) -> Normalized:
    """The normalized twin of IMAGE_ID (the final stage's image, with PLAN's labels); returns its IDs."""
    epoch = plan.target.base.source_date_epoch
    if plan.builder == "buildkit":
        new_id = _relabel(engine, plan, layer_stages)
    elif engine.containerd_store:
        raise EnvironmentProblem("this engine keeps images in containerd's store, where sglbuild's classic path cannot "
                                 "re-issue an image's config", "install the docker-buildx plugin: sglbuild then builds with BuildKit")
    else:
        config = image_config(engine.images.get(image_id), layer_stages, plan.labels, epoch)
        new_id = engine.images.load_config(config, source=image_id, name=None, mtime=epoch)
    return Normalized(new_id, content_id(engine.images.get(new_id)))


def _relabel(engine: Engine, plan: Plan, layer_stages: list[str]) -> str:
    labels = {**plan.labels, LABEL_MANAGED: "true", LABEL_STAGE_KEY: ""}
    tag = f"{plan.repo or STAGE_REPO}:image-{plan.final.key[:16]}-{hashlib.sha256(canonical(labels)).hexdigest()[:12]}"
    if engine.images.find(tag) is None:
        # The LABEL instruction gives the image a history entry of its own, dated SOURCE_DATE_EPOCH like the
        # stages' (with none, BuildKit would date the config now); the other labels go in by --label (any bytes).
        dockerfile = f"FROM {plan.final.tag}\nLABEL {LABEL_LAYER_STAGES}={dockerfile_value(json.dumps(layer_stages))}\n"
        engine.buildkit.build(dockerfile, "normalize", contexts={}, nocache=False, tag=tag, labels=labels,
                              buildargs={"SOURCE_DATE_EPOCH": str(plan.target.base.source_date_epoch)})
    return engine.images.get(tag).id
