"""CycloneDX SBOM of an image, from its lock: every Debian package and Python distribution.

Made with cyclonedx-python-lib. The output is deterministic (fixed timestamp from
SOURCE_DATE_EPOCH, serial number and bom-refs derived from the content), so it can go
into the image without breaking bit-identical rebuilds.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot5
from packageurl import PackageURL

from .. import __version__
from ..contracts import PLATFORMS, TOOLS
from .lockfile import Lock
from .profile import Target


def sbom_json(target: Target, lock: Lock) -> str:
    """The SBOM text; the plan makes it once per build."""
    # One image per platform: a multi-platform target's SBOMs are told apart by the platform (others keep their serial).
    which = f"{target.name}:{lock.digest}" + (f":{lock.platform_name}" if target.declares_platforms else "")
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"sglbuild:{which}"))
    bom.metadata.timestamp = datetime.fromtimestamp(target.base.source_date_epoch, tz=timezone.utc)
    bom.metadata.component = Component(
        name=target.image, version=f"{target.tag}-{lock.digest[:12]}", type=ComponentType.CONTAINER,
        bom_ref=f"image:{target.platform_tag(lock.platform_name)}",
        properties=[Property(name="sglbuild:lock-digest", value=f"sha256:{lock.digest}"),
                    Property(name="sglbuild:version", value=__version__)],
    )
    components: list[Component] = []
    for name, version in sorted(lock.debian.items()):
        purl = PackageURL("deb", "debian", name, version, {"arch": PLATFORMS[lock.platform_name][1], "distro": target.base.suite})
        components.append(Component(name=name, version=version, type=ComponentType.LIBRARY, purl=purl, bom_ref=purl.to_string()))
    wheels = {w.name: w for w in lock.wheels if w.stage != TOOLS}  # tools run during the build only
    by_name: dict[str, Component] = {}
    for w in sorted(wheels.values(), key=lambda w: w.name):
        purl = PackageURL("pypi", None, w.name, w.version, {"file_name": w.filename})
        by_name[w.name] = Component(
            name=w.name, version=w.version, type=ComponentType.LIBRARY, purl=purl, bom_ref=purl.to_string(),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=w.sha256)],
            properties=[Property(name="sglbuild:stage", value=w.stage)],
        )
    components += by_name.values()
    for c in components:
        bom.components.add(c)
    bom.register_dependency(bom.metadata.component, components)
    for name, c in by_name.items():
        bom.register_dependency(c, [by_name[d] for d in wheels[name].requires if d in by_name])
    return JsonV1Dot5(bom).output_as_string(indent=2) + "\n"
