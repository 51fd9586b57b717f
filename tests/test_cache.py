"""A registry as the stage cache: one engine fills it, an empty one builds from it by pulling alone."""

from __future__ import annotations

import json
import re

import pytest

from support import build_image, run_cli, small_project

pytestmark = [pytest.mark.engine, pytest.mark.exclusive]  # removes shared stage tags, as a new machine lacks them


def build(project, *args):
    r = run_cli("build", "--json", *args, cwd=project)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def statuses(result: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result["stages"]}


def forget_everything_local(client, result: dict) -> None:
    """The engine is left with none of this target's images: as a fresh CI runner would be."""
    for ref in [result["immutable_tag"], result["tag"], *(s["tag"] for s in reversed(result["stages"])), result["base"]]:
        try:
            client.images.remove(ref, force=True)
        except Exception:  # noqa: BLE001
            pass


def test_an_empty_engine_builds_from_the_cache_by_pulling_alone(tmp_path_factory, docker_client, uv_wheel, sm120_so, registry):
    project, index = small_project(tmp_path_factory.mktemp("cache"), uv_wheel, sm120_so, name="cachetest")
    cache = f"{registry}/sglbuild-test/cache"
    try:
        first, err = build(project)  # built here (or reused: the suite's own stages), no registry cache
        # A warm engine seeds the empty cache with what it has (the text output says what it pushed) ...
        seeded = run_cli("build", "--cache", cache, cwd=project)
        assert seeded.returncode == 0, seeded.stderr
        pushed = sorted(ln.split()[0] for ln in seeded.stderr.splitlines() if re.match(r"^\s+\S+\s+pushed\s", ln))
        assert pushed == sorted(["base", *statuses(first)]), seeded.stderr
        assert not re.search(r"^\s+\S+\s+built\s", seeded.stderr, re.M)  # ... and builds nothing
        again = run_cli("build", "--cache", cache, cwd=project)  # and pushes nothing the cache has
        assert again.returncode == 0 and "reused" in again.stderr and not re.search(r"\spushed\s", again.stderr), again.stderr
        forget_everything_local(docker_client, first)
        (project / "wheels").rename(project / "wheels.away")  # and no wheelhouse: nothing may be built
        second, err = build(project, "--cache", cache)
        assert set(statuses(second).values()) == {"pulled"}, err
        assert not second["base_built"]
        assert second["image_id"] == first["image_id"] and second["layers"] == first["layers"]
    finally:
        if (project / "wheels.away").exists():
            (project / "wheels.away").rename(project / "wheels")
        index.stop()


def test_a_cache_entry_labelled_for_another_key_is_refused_and_built(tmp_path_factory, docker_client, uv_wheel, sm120_so, registry):
    project, index = small_project(tmp_path_factory.mktemp("cache-bad"), uv_wheel, sm120_so, name="cachebad")
    cache = f"{registry}/sglbuild-test/cache-bad"
    try:
        plan = json.loads(run_cli("plan", "--json", cwd=project).stdout)[0]
        system = plan["stages"][0]
        # Someone pushed an image under the system stage's cache tag that is not that stage.
        dockerfile = f"FROM {plan['base']['ref']}\nLABEL io.sglbuild.stage-key=not-{system['key']}\n"
        assert run_cli("build", "--quiet", cwd=project).returncode == 0  # the base, locally
        bad = build_image(docker_client, dockerfile)
        tag = f"system-{system['key'][:16]}"
        docker_client.api.tag(bad, cache, tag)
        for _ in docker_client.api.push(cache, tag=tag, stream=True, decode=True):
            pass
        docker_client.images.remove(system["tag"], force=True)
        r = run_cli("build", "--cache", cache, cwd=project)
        assert r.returncode == 0, r.stderr
        assert "labelled for another key; building it here" in r.stderr and re.search(r"^ +system +built ", r.stderr, re.M)
    finally:
        index.stop()
