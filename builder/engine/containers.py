"""``docker run ...``: throwaway containers, the probe inside an image, and a served model."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import docker.errors
from docker.types import DeviceRequest

from ..contracts import LABEL_MANAGED, PROBE_MOUNT, PROBE_PYCACHE
from ..errors import ProbeFailed
from ..probe.pack import probe_archive
from .guard import guard
from .records import ContainerRecord

if TYPE_CHECKING:
    from . import Engine

ALL_GPUS = [DeviceRequest(count=-1, capabilities=[["gpu", "compute", "utility"]])]


def _record(container: Any) -> ContainerRecord:
    return ContainerRecord(container.id, container.name, container.status)


class Containers:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._containers = engine.client.containers

    def create(self, image: str, command: list[str] | str, *, entrypoint: Any = None, network: bool = False,
               environment: dict[str, str] | None = None, volumes: dict | None = None, gpus: bool = False) -> ContainerRecord:
        """A container of IMAGE, run with its own platform (emulated where it is not the engine's)."""
        found = self.engine.images.find(image)
        platform = found.platform if found is not None and found.platform != self.engine.platform else None
        with guard(f"creating a container of {image}"):
            return _record(self._containers.create(
                image, command, entrypoint=[] if entrypoint is None else entrypoint, network_disabled=not network,
                environment=environment or {}, labels={LABEL_MANAGED: "true"}, volumes=volumes or {},
                device_requests=ALL_GPUS if gpus else None, **({"platform": platform} if platform else {})))

    def remove(self, container_id: str) -> None:
        try:
            self._containers.get(container_id).remove(force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, OSError):
            pass  # the engine removes it with the rest of sglbuild's leftovers (sglbuild gc)

    def get_archive(self, container_id: str, path: str) -> bytes | None:
        """The tar of PATH in a container (``docker cp``), or None when there is no such path."""
        with guard(f"copying {path} out of a container"):
            try:
                bits, _ = self._containers.get(container_id).get_archive(path)
                return b"".join(bits)
            except docker.errors.NotFound:
                return None

    def status(self, container_id: str) -> str:
        with guard("a look at a container"):
            return self._containers.get(container_id).status

    def logs(self, container_id: str, tail: int | str = "all") -> str:
        with guard("reading a container's output"):
            return self._containers.get(container_id).logs(tail=tail).decode(errors="replace")

    def exec(self, container_id: str, command: list[str]) -> tuple[int, str]:
        """COMMAND in a running container: its exit code and output."""
        with guard(f"running {' '.join(command)[:60]!r} in a container"):
            result = self._containers.get(container_id).exec_run(command)
            return result.exit_code, result.output.decode(errors="replace")

    def run(self, image: str, command: list[str] | str, *, files: dict[str, bytes] | None = None, **kw: Any) -> tuple[int, str]:
        """Run COMMAND in a throwaway container (no network unless asked); its exit code and output.

        FILES: {directory: tar archive} unpacked into the container before it starts.
        """
        container = self.create(image, command, **kw)
        try:
            with guard(f"running {command if isinstance(command, str) else ' '.join(command)[:80]!r} in {image}"):
                handle = self._containers.get(container.id)
                for path, archive in (files or {}).items():
                    handle.put_archive(path, archive)
                handle.start()
                code = handle.wait()["StatusCode"]
                return code, handle.logs(stdout=True, stderr=True).decode(errors="replace")
        finally:
            self.remove(container.id)

    def probe(self, image: str, args: list[str], *, gpus: bool = False, environment: dict[str, str] | None = None) -> Any:
        """``python3 -m builder.probe ARGS`` inside IMAGE with the image's own Python (and ENVIRONMENT over its own
        variables); its JSON answer.

        The probe's files (standard library only) are copied into the container before it starts,
        so it works with any engine, local or not; the container has no network.
        """
        self.engine.images.get(image)
        code, out = self.run(image, ["python3", "-m", "builder.probe", *args], gpus=gpus,
                             environment={**(environment or {}), "PYTHONPATH": PROBE_MOUNT, "PYTHONPYCACHEPREFIX": PROBE_PYCACHE},
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

    def start(self, image: str, command: list[str], *, gpus: bool = False, **kwargs: Any) -> ContainerRecord:
        """A detached container (a served model): KWARGS are docker-py's run arguments, as
        :meth:`builder.check.server.ServerContainer.run_kwargs` gives them; GPUS: every GPU."""
        with guard(f"starting a container of {image}"):
            return _record(self._containers.run(image, command, detach=True, labels={LABEL_MANAGED: "true"},
                                                device_requests=ALL_GPUS if gpus else None, **kwargs))

    def list_managed(self) -> list[ContainerRecord]:
        with guard("a list of containers"):
            return [_record(c) for c in self._containers.list(all=True, filters={"label": LABEL_MANAGED})]
