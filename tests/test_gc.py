"""gc: what interrupted runs leave is removed, what anyone else made or a running build uses is not."""

from __future__ import annotations

import pytest

from support import build_image, run_cli

pytestmark = [pytest.mark.engine, pytest.mark.exclusive]  # gc acts on every image of sglbuild's


def _image(client, label: bool, tag: str | None = None) -> str:
    """A tiny real image built from scratch (one file), labelled as sglbuild's or not."""
    dockerfile = "FROM scratch\nCOPY f /f\n" + ('LABEL io.sglbuild.managed="true"\n' if label else "")
    # Each image its own file: with the same one, the classic builder's cache makes the unlabelled image
    # the labelled one's parent, and removing the child takes its untagged parent with it.
    built = build_image(client, dockerfile, tag=tag, files={"f": f"{tag} {label}".encode()})
    return client.images.get(built).id


def test_gc_removes_leftovers_and_keeps_the_rest(engine, docker_client, tmp_path):
    ours = _image(docker_client, True)  # an untagged sglbuild image, as a killed build leaves
    theirs = _image(docker_client, False)  # an untagged image someone else made
    kept = _image(docker_client, True, "sglbuild-test/gc-kept:1")  # tagged: in use
    cached = _image(docker_client, True, "sglbuild-test-cache/stage:gc-kept")  # the test suite's cache: listed, kept
    export = _image(docker_client, True, "sglbuild/stage:gc-0123456789abcdef.build-99999")  # a killed BuildKit build's export
    container = docker_client.containers.create(kept, ["x"], labels={"io.sglbuild.managed": "true"})
    (tmp_path / "wheels" / ".sglbuild-served-x").mkdir(parents=True)
    try:
        dry = run_cli("--wheels", str(tmp_path / "wheels"), "gc", "--dry-run", cwd=tmp_path)
        assert dry.returncode == 0 and ours[:19] in dry.stdout and engine.images.find(ours) is not None
        assert "kept: the test suite's cache" in dry.stdout and "sglbuild-test-cache/stage:gc-kept" in dry.stdout
        r = run_cli("--wheels", str(tmp_path / "wheels"), "gc", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert engine.images.find(ours) is None and engine.images.find(export) is None  # removed
        assert engine.images.find(theirs) is not None and engine.images.find(kept) is not None  # not ours / tagged
        assert engine.images.find(cached) is not None  # the suite's cache stays
        assert container.name in r.stdout and not (tmp_path / "wheels" / ".sglbuild-served-x").exists()
    finally:
        for ref in (theirs, "sglbuild-test/gc-kept:1", "sglbuild-test-cache/stage:gc-kept"):
            engine.images.remove(ref, force=True)


def test_gc_waits_for_no_one_and_refuses_while_a_build_runs(engine, tmp_path):
    from builder.state import engine_lock

    with engine_lock(engine.where):  # as a running build holds it
        r = run_cli("gc", cwd=tmp_path)
    assert r.returncode == 3 and "a build is running" in r.stderr and len(r.stderr.splitlines()) == 1


def test_gc_removes_the_compile_caches_of_images_no_longer_here(engine, docker_client, tmp_path):
    from builder.ship.serve import compile_caches

    live = _image(docker_client, False, "sglbuild-test/gc-served:live")
    gone = _image(docker_client, False, "sglbuild-test/gc-served:gone")
    mounted = _image(docker_client, False, "sglbuild-test/gc-served:mounted")
    volumes = {tag: compile_caches(engine, f"sglbuild-test/gc-served:{tag}")[0].name for tag in ("live", "gone", "mounted")}
    # Its image gone too, but a container (of another image) still mounts it: kept.
    holder = docker_client.containers.create(live, ["x"], volumes={volumes["mounted"]: {"bind": "/c", "mode": "rw"}})
    try:
        for tag in ("gone", "mounted"):
            engine.images.remove(f"sglbuild-test/gc-served:{tag}", force=True)
        r = run_cli("gc", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert f"volume     {volumes['gone']}" in r.stdout and engine.volumes.find(volumes["gone"]) is None  # orphaned
        assert engine.volumes.find(volumes["live"]) is not None  # its image is still here
        assert engine.volumes.find(volumes["mounted"]) is not None and f"kept in use: {volumes['mounted']}" in r.stdout
    finally:
        holder.remove(force=True)
        engine.images.remove(live, force=True)
        for name in volumes.values():
            engine.volumes.remove(name)
