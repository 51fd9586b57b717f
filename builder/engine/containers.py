"""``docker run ...``: throwaway containers, the probe inside an image, and a served model."""

from __future__ import annotations

import functools
import io
import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker.errors
from docker.models.containers import Container
from docker.types import DeviceRequest

from ..contracts import LABEL_MANAGED, PROBE_MOUNT
from ..errors import ProbeFailed
from . import guard

if TYPE_CHECKING:
    from . import Engine

BUILDER_DIR = Path(__file__).resolve().parent.parent
# What the probe is made of: standard library only (tests/test_probe_isolation.py holds that line).
PROBE_FILES = ("__init__.py", "contracts.py", "errors.py", "probe/*.py")
ALL_GPUS = [DeviceRequest(count=-1, capabilities=[["gpu", "compute", "utility"]])]


@functools.lru_cache(maxsize=1)
def probe_archive() -> bytes:
    """builder/'s probe files as a tar to unpack at the container's root (into PROBE_MOUNT/builder)."""
    root = f"{PROBE_MOUNT.strip('/')}/builder"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        parts = root.split("/")
        for directory in ["/".join(parts[:i]) for i in range(1, len(parts) + 1)] + [f"{root}/probe"]:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for pattern in PROBE_FILES:
            for path in sorted(BUILDER_DIR.glob(pattern)):
                data = path.read_bytes()
                info = tarfile.TarInfo(f"{root}/{path.relative_to(BUILDER_DIR)}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Containers:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._containers = engine.client.containers

    def create(self, image: str, command: list[str] | str, *, entrypoint: Any = None, network: bool = False,
               environment: dict[str, str] | None = None, volumes: dict | None = None,
               gpus: bool = False) -> Container:
        with guard(f"creating a container of {image}"):
            return self._containers.create(image, command, entrypoint=[] if entrypoint is None else entrypoint,
                                           network_disabled=not network, environment=environment or {},
                                           labels={LABEL_MANAGED: "true"}, volumes=volumes or {},
                                           device_requests=ALL_GPUS if gpus else None)

    def remove(self, container: Container) -> None:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            pass  # the engine removes it with the rest of sglbuild's leftovers (sglbuild gc)

    def run(self, image: str, command: list[str] | str, *, files: dict[str, bytes] | None = None, **kw: Any) -> tuple[int, str]:
        """Run COMMAND in a throwaway container (no network unless asked); its exit code and output.

        FILES: {directory: tar archive} unpacked into the container before it starts.
        """
        container = self.create(image, command, **kw)
        try:
            with guard(f"running {command if isinstance(command, str) else ' '.join(command)[:80]!r} in {image}"):
                for path, archive in (files or {}).items():
                    container.put_archive(path, archive)
                container.start()
                code = container.wait()["StatusCode"]
                return code, container.logs(stdout=True, stderr=True).decode(errors="replace")
        finally:
            self.remove(container)

    def probe(self, image: str, args: list[str], *, gpus: bool = False) -> Any:
        """``python3 -m builder.probe ARGS`` inside IMAGE with the image's own Python; its JSON answer.

        The probe's files (standard library only) are copied into the container before it starts,
        so it works with any engine, local or not; the container has no network.
        """
        self.engine.images.get(image)
        code, out = self.run(image, ["python3", "-m", "builder.probe", *args], gpus=gpus,
                             environment={"PYTHONPATH": PROBE_MOUNT, "PYTHONDONTWRITEBYTECODE": "1"},
                             files={"/": probe_archive()})
        lines = out.strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else None
        except ValueError:
            answer = None
        if answer is None or (isinstance(answer, dict) and "probe_error" in answer):
            why = answer["probe_error"] if isinstance(answer, dict) else (lines[-1] if lines else "(no output)")
            raise ProbeFailed(f"the probe could not run inside {image} (exit {code}): {why[:300]}",
                              "the image needs python3 (3.8 or later) on its PATH")
        return answer

    def serve(self, image: str, command: list[str], *, entrypoint: list[str], name: str | None, shm: str, ports: dict,
              volumes: dict, environment: dict[str, str]) -> Container:
        """A detached server container with every GPU."""
        with guard(f"starting a server from {image}"):
            return self._containers.run(image, command, entrypoint=entrypoint, detach=True, name=name, device_requests=ALL_GPUS,
                                        shm_size=shm, ports=ports, volumes=volumes, environment=environment,
                                        labels={LABEL_MANAGED: "true"})

    def list_managed(self) -> list[Container]:
        with guard("a list of containers"):
            return self._containers.list(all=True, filters={"label": LABEL_MANAGED})
