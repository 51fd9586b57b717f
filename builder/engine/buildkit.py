"""``docker buildx build``: a stage built by the engine's own BuildKit, where the engine has a recent one.

docker-py drives only the classic builder; BuildKit is driven through the ``docker buildx`` CLI
(the plugin Docker 26 to 29 ship), pointed at the same engine. On this path a stage's steps run
with no network at all: the wheels and the build's own files are a named build context,
bind-mounted read-only where the step reads them, so they never land in a layer, and BuildKit
commits a step's changes without the classic builder's copy of the whole layer.

Used where the engine's API is 1.45 or later (Docker 26: BuildKit 0.13) and ``docker buildx``
answers; ``SGLBUILD_BUILDER=classic|buildkit`` chooses by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import BuildFailed, DiskFull, EngineUnavailable, Interrupted, ToolMissing
from ..state import scratch

if TYPE_CHECKING:
    from . import Engine

MIN_API = (1, 45)  # Docker 26.0, the first with BuildKit 0.13


def docker_cli() -> str | None:
    """A docker client with the buildx plugin, if this machine has one."""
    for candidate in (os.environ.get("SGLBUILD_DOCKER_CLI"), shutil.which("docker"), "/usr/local/bin/docker", "/usr/bin/docker"):
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "buildx", "version"], capture_output=True, text=True)
            if probe.returncode == 0:
                return candidate
    return None


class BuildKit:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def supported(self) -> bool:
        api = tuple(int(x) for x in self.engine.client.api.api_version.split("."))
        return api >= MIN_API and docker_cli() is not None

    def build(self, dockerfile: str, stage: str, *, contexts: dict[str, Path], buildargs: dict[str, str],
              labels: dict[str, str], tag: str, nocache: bool, on_line: Callable[[str], None] | None = None,
              on_failure: Callable[[list[str]], None] | None = None, platform: str | None = None) -> str:
        """Build DOCKERFILE into the engine's image store as TAG; returns the image ID.

        BuildKit exports under a name of this build's own, then TAG is moved to the image: containerd's store refuses an
        export under a name another build (of the same stage, at the same time) has just given an image."""
        cli = docker_cli()
        building = f"{tag}.build-{os.getpid()}"
        if cli is None:
            raise ToolMissing("docker buildx is not installed", "install the docker-buildx plugin, or SGLBUILD_BUILDER=classic")
        with scratch("buildx") as tmp:
            Path(tmp, "Dockerfile").write_text(dockerfile)
            (empty := Path(tmp, "context")).mkdir()
            cmd = [cli, "buildx", "build", "--progress", "plain", "--network", "none", "--file", str(Path(tmp, "Dockerfile")),
                   "--output", f"type=image,name={building},compression=uncompressed"]
            cmd += [f"--build-context={name}={path}" for name, path in sorted(contexts.items())]
            cmd += [f"--build-arg={k}={v}" for k, v in sorted(buildargs.items())]
            cmd += [f"--label={k}={v}" for k, v in sorted(labels.items())]
            if nocache:
                cmd.append("--no-cache")
            if platform:
                cmd += ["--platform", platform]
            env = {**os.environ, "DOCKER_HOST": self.engine.where, "BUILDX_NO_DEFAULT_ATTESTATIONS": "1"}
            proc = subprocess.Popen([*cmd, str(empty)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    start_new_session=True)
            lines: list[str] = []
            try:
                for line in proc.stdout:  # type: ignore[union-attr]
                    lines.append(line.rstrip("\n"))
                    del lines[:-40]
                    if on_line:
                        on_line(lines[-1])
                code = proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait(timeout=60)
                raise Interrupted(f"build interrupted during stage {stage}; no tag was moved", "run the build again") from None
            if code != 0:
                if on_failure:
                    on_failure(lines[-25:])
                raise _failure(stage, lines)
        # The engine's own ID for the image (the manifest's digest on containerd's store, the config's on the legacy one).
        image_id = self.engine.images.get(building).id
        self.engine.images.tag(image_id, tag)
        self.engine.images.untag_or_remove(building)
        return image_id


def _failure(stage: str, lines: list[str]) -> Exception:
    text = "\n".join(lines)
    gone = re.search(r"Cannot connect to the Docker daemon at (\S+?)\.? |connection reset by peer|error reading from server: EOF", text)
    if gone:  # the engine went away in the middle of the build: this machine's problem, not the step's
        return EngineUnavailable(f"the engine stopped answering during stage {stage}",
                                 "start it again and build again: finished stages are reused")
    if "no space left on device" in text.lower():
        return DiskFull(f"stage {stage}: disk full during the build", "free space (sglbuild gc) and build again")
    code = re.search(r"did not complete successfully: exit code: (\d+)", text)
    errors = [ln.split("] ", 1)[-1].strip() for ln in lines if re.search(r"\berror\b", ln, re.I) and not ln.startswith("ERROR: failed to solve")]
    last = [ln for ln in lines if ln.startswith("ERROR")]
    why = (errors or last or lines[-1:] or ["(no output)"])[-1][:300]
    step = f"a step exited with code {code.group(1)}: " if code else ""
    return BuildFailed(f"stage {stage} failed: {step}{why}", "the step's last lines are above; nothing was tagged")
