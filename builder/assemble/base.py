"""Step 5a, base: a Debian root filesystem from Debian packages, imported as an image.

No registry is needed: mmdebstrap installs exactly the locked package versions with a
fixed SOURCE_DATE_EPOCH, ``docker import`` turns the tarball into an image, and the
image is tagged only after its installed packages are checked against the lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..contracts import DEFAULT_PLATFORM, LABEL_MANAGED, PLATFORMS
from ..errors import DiskFull, EngineError, IntegrityError, Interrupted, NetworkError, ToolMissing
from ..inputs.lockfile import Lock
from ..inputs.profile import Target
from ..inputs.hashing import sha256_file
from ..state import atomic_copy, atomic_write, base_cache_dir, scratch
from .normalize import image_config
from .plan import base_key

if TYPE_CHECKING:
    from ..engine import Engine
    from .cache import StageCache

_MIN_FREE = 2 << 30


def ensure_base(engine: Engine, target: Target, lock: Lock, ref: str, *, fresh: bool = False,
                cache: StageCache | None = None) -> bool:
    """Make sure REF names the target's base image, bootstrapping it if needed; True if it was made now.

    ``fresh`` bootstraps anew even when the base exists (a from-scratch build). With a CACHE, a missing
    base is pulled from it if there (and used only if its packages are the lock's), else pushed once made.
    """
    if engine.images.find(ref) is not None and not (fresh and target.base.bootstrapped):
        if cache is not None and target.base.bootstrapped:
            cache.offer("base", base_key(target, lock), engine.images.get(ref).id)
        return False
    key = base_key(target, lock)
    if cache is not None and not fresh and target.base.bootstrapped:
        image_id = cache.fetch("base", key, ref, check_label=False)
        if image_id is not None:
            try:
                _check_packages(engine, image_id, lock)
                return False
            except IntegrityError as exc:
                engine.images.remove(ref)
                cache.reporter.step("base", "refused", f"the cached base: {exc.message}")
    if not target.base.bootstrapped:
        repo, _, digest = ref.partition("@")
        engine.images.pull(repo, digest)
        return True
    with scratch("base") as tmp:
        tarball = _rootfs(target, lock, key, Path(tmp), fresh=fresh)
        image_id = engine.images.import_tarball(tarball, [f'LABEL {LABEL_MANAGED}="true"'])
    try:
        _check_packages(engine, image_id, lock)
        previous = engine.images.find(ref)
        reissue(engine, image_id, target.base.source_date_epoch, ref, lock.platform_name)  # a config free of the import's time
    except BaseException:
        engine.images.remove(image_id, force=True)
        raise
    reissued = engine.images.get(ref).id
    engine.images.tag(reissued, ref, drop_replaced=True, previous=previous)
    engine.images.untag_or_remove(image_id)
    if cache is not None:
        cache.store("base", key, reissued)
    return True


def bootstrap_to_cache(target: Target, lock: Lock) -> Path | None:
    """Bootstrap the base into $SGLBUILD_BASE_CACHE, touching no engine, unless it is there already: the slow, engine-free
    part of a base (minutes for another architecture, under emulation) done ahead of a build. None without a cache."""
    if base_cache_dir() is None or not target.base.bootstrapped:
        return None
    with scratch("base") as tmp:
        return _rootfs(target, lock, base_key(target, lock), Path(tmp))


def _rootfs(target: Target, lock: Lock, key: str, tmp: Path, *, fresh: bool = False) -> Path:
    """The base's root filesystem tarball: the one kept in $SGLBUILD_BASE_CACHE for KEY (unless FRESH), else bootstrapped
    into TMP (and kept there). Under the key's lock: two builds at once bootstrap a base once."""
    with _key_lock(key):
        kept = None if fresh else _kept_tarball(key)
        if kept is not None:
            return kept
        if shutil.disk_usage(tmp).free < _MIN_FREE:
            raise DiskFull(f"less than 2 GiB free in {tmp} for the base tarball", "free space or set TMPDIR")
        _bootstrap(target, lock, tmp / "rootfs.tar")
        return _keep_tarball(key, tmp / "rootfs.tar")


@contextmanager
def _key_lock(key: str) -> Iterator[None]:
    where = base_cache_dir()
    if where is None:
        yield
        return
    where.mkdir(parents=True, exist_ok=True)
    with open(where / f"{key}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released by the kernel if this process dies
        yield


def _kept_tarball(key: str) -> Path | None:
    """The root filesystem bootstrapped earlier for KEY, kept in $SGLBUILD_BASE_CACHE (whole: its sha256 is checked), or None.
    The image made from it is held to the lock's packages as a new bootstrap is."""
    where = base_cache_dir()
    if where is None:
        return None
    tarball, digest = where / f"{key}.tar", where / f"{key}.tar.sha256"
    try:
        if sha256_file(tarball) == digest.read_text().strip():
            return tarball
    except OSError:
        return None
    tarball.unlink(missing_ok=True)  # not what was kept: bootstrap again
    return None


def _keep_tarball(key: str, tarball: Path) -> Path:
    """TARBALL, kept for KEY in $SGLBUILD_BASE_CACHE when there is one (else TARBALL itself)."""
    where = base_cache_dir()
    if where is None:
        return tarball
    kept = where / f"{key}.tar"
    atomic_copy(tarball, kept)
    atomic_write(where / f"{key}.tar.sha256", sha256_file(kept) + "\n")
    return kept


def reissue(engine: Engine, image_id: str, epoch: int, name: str, platform: str = DEFAULT_PLATFORM) -> None:
    """Give an imported base a config made of its inputs alone (``docker import`` stamps the time of the
    import and the engine's own architecture), loaded as NAME: the layer is the engine's already, so none
    is read back or written."""
    config = image_config(engine.images.get(image_id), ["base"], {}, epoch)
    config["architecture"] = PLATFORMS[platform][2]
    engine.images.load_config(config, source=image_id, name=name, mtime=epoch)


def _bootstrap(target: Target, lock: Lock, tarball: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise ToolMissing("mmdebstrap is not installed", "apt-get install mmdebstrap")
    base = target.base
    # Pin what the profile asks for to the locked versions; the essential set follows
    # the mirror and is checked against the lock after import.
    include = [f"{p}={lock.debian[p]}" if p in lock.debian else p for p in base.packages]
    cmd = ["mmdebstrap", "--quiet", "--variant=minbase", "--format=tar",
           "--customize-hook=rm -f \"$1\"/var/log/dpkg.log \"$1\"/var/log/apt/*.log \"$1\"/var/cache/ldconfig/aux-cache"]
    if lock.platform_name != DEFAULT_PLATFORM:  # another architecture: its maintainer scripts run under emulation
        cmd.append(f"--architectures={PLATFORMS[lock.platform_name][1]}")
    if include:
        cmd.append("--include=" + ",".join(include))
    cmd += [base.suite, str(tarball), base.mirror]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(base.source_date_epoch)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _, stderr = proc.communicate()
    except KeyboardInterrupt:
        # Let mmdebstrap unmount and remove its chroot before we go.
        proc.terminate()
        proc.wait(timeout=120)
        raise Interrupted("base bootstrap interrupted; nothing was tagged", "run the build again") from None
    if proc.returncode != 0:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        tail = (lines or ["(no output)"])[-1][:300]
        if "No space left" in stderr:
            raise DiskFull(f"disk full while bootstrapping the base: {tail}", "free space and build again")
        if any(s in stderr for s in ("Failed to fetch", "Could not resolve", "Temporary failure")):
            raise NetworkError(f"Debian mirror {base.mirror} did not answer: {tail}", "check the mirror and the network")
        if "=" in stderr and ("not found" in stderr or "Version" in stderr):
            raise IntegrityError(f"the mirror no longer has a locked package version: {tail}", "run 'sglbuild lock' to move the pins")
        raise EngineError(f"mmdebstrap failed: {tail}")


def _check_packages(engine: Engine, image_id: str, lock: Lock) -> None:
    code, out = engine.containers.run(image_id, ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"])
    if code != 0:
        raise EngineError(f"cannot list the base's packages: {out.strip()[:200]}")
    installed = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    drift = [f"{p} {installed.get(p, 'absent')} (lock: {v})" for p, v in sorted(lock.debian.items()) if installed.get(p) != v]
    drift += [f"{p} {v} (not in lock)" for p, v in sorted(installed.items()) if p not in lock.debian]
    if drift:
        more = f" and {len(drift) - 3} more" if len(drift) > 3 else ""
        raise IntegrityError(f"the bootstrapped base differs from the lock: {'; '.join(drift[:3])}{more}",
                             "the mirror moved: run 'sglbuild lock' and review the change")
