"""Reproducible images on the real engine: from-scratch rebuilds, a nondeterministic step, diff, inspect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import TEST_IMAGE, build_image, run_cli, small_project

pytestmark = pytest.mark.engine
STAMP = 'post_install = ["date +%s%N > /etc/build-stamp"]'
CLASH = '''
[[targets.reprotest.stage]]
name = "clash"
requires = ["sgltest-clash-a==1.0", "sgltest-clash-b==1.0"]
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory, docker_client, uv_wheel, sm120_so):
    project, index = small_project(tmp_path_factory.mktemp("repro"), uv_wheel, sm120_so, name="reprotest", extra=CLASH,
                                   steps=(("lock",), ("fetch",), ("build", "--quiet")))
    yield {"project": project, "index": index, "client": docker_client}
    index.stop()


def build(project: Path, *args: str) -> dict:
    r = run_cli("build", "--json", *args, cwd=project)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.full  # --check-reproducible below holds the same promise (every layer from scratch, offline), in make test
@pytest.mark.exclusive  # every dangling image of the engine, before and after
def test_offline_rebuild_from_scratch_gives_the_same_image_id(env):
    """Build; stop the package index; rebuild base and every stage with no cache: same ID, same layers."""
    project = env["project"]
    first = build(project)
    env["index"].stop()
    dangling = {"dangling": True, "label": "io.sglbuild.managed"}
    before = {i.id for i in env["client"].images.list(filters=dangling)}
    second = build(project, "--no-cache")
    # The stage images the rebuild replaced are gone, not left dangling.
    assert {i.id for i in env["client"].images.list(filters=dangling)} == before
    assert set(s["status"] for s in second["stages"]) == {"built"}
    assert second["image_id"] == first["image_id"]
    assert second["layers"] == first["layers"]
    image = env["client"].images.get(f"{TEST_IMAGE}:reprotest")
    assert image.id == first["image_id"]
    # Both clash wheels ship sgltest_clash.py; the later one in the lock wins in every build.
    out = env["client"].containers.run(image.id, ["python", "-c", "import sgltest_clash; print(sgltest_clash.WHO)"],
                                       remove=True, network_mode="none")
    assert out.decode().strip() == "b"
    assert image.attrs["Created"].startswith("2025-09-18T00:00:00")


@pytest.mark.full  # the bench's plain build, checked; make test keeps the reproducible build's own checks
def test_plain_build_differs_only_in_what_the_measures_pin(env, engine):
    """The benchmark's plain build: the same files as the reproducible image, other times, another ID."""
    from builder.assemble.stages import build_image
    from builder.check.diff import diff_images
    from builder.inputs.lockfile import check_lock
    from builder.assemble.plan import make_plan
    from builder.inputs.profile import load_profile
    from builder.check.repro import remove_tags
    from builder.ui import Reporter

    project = env["project"]
    profile = load_profile(project / "sglbuild.toml")
    target = profile.target(None)
    repo = "sglbuild-test/plain"
    try:
        plan = make_plan(target, check_lock(profile, target), "r", reproducible=False, repo=repo, builder=engine.builder)
        plain = build_image(engine, plan, project / "wheels", Reporter(quiet=True))
        engine.images.tag(plain.image_id, f"{repo}:final")
        ours = engine.images.get(f"{TEST_IMAGE}:reprotest")
        assert plain.image_id != ours.id and plain.layers != list(ours.layers)
        assert not engine.images.get(plain.image_id).created.startswith("2025-09-18")
        diffs = diff_images(engine, ours.id, plain.image_id)
        assert [d.stage for d in diffs if d.identical] == ["base"]  # the base is the same bootstrap
        assert all(d.files for d in diffs[1:])
        # Leaving aside .pyc headers, and the one file two wheels ship, which either may write without the fix-up.
        odd = [(d.stage, f["path"], f["how"]) for d in diffs[1:] for f in d.files
               if f["how"] != ["mtime"] and not f["path"].endswith((".pyc", "/sgltest_clash.py"))]
        # The classic builder's step container writes /etc (its hosts files), so each of its layers holds /etc,
        # which the reproducible build dates; BuildKit bind-mounts those files and its layers hold no /etc.
        expected = [(d.stage, "/etc", ["presence"]) for d in diffs[1:]] if engine.builder == "classic" else []
        assert odd == expected
    finally:
        remove_tags(engine, [repo])
    assert not engine.images.tags_under((repo + ":",))


def test_inspect_gives_back_the_lock_and_the_sbom(env, tmp_path):
    project = env["project"]
    r = run_cli("inspect", f"{TEST_IMAGE}:reprotest", "--write-lock", str(tmp_path / "lock.json"),
                "--write-sbom", str(tmp_path / "sbom.json"), cwd=project)
    assert r.returncode == 0, r.stderr
    assert "target    reprotest" in r.stdout and "lock      sha256:" in r.stdout
    assert (tmp_path / "lock.json").read_text() == (project / "locks" / "reprotest.lock.json").read_text()
    sbom = json.loads((tmp_path / "sbom.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    purls = {c["purl"]: c for c in sbom["components"]}
    assert any(p.startswith("pkg:deb/debian/libc6@") for p in purls)
    app = next(c for p, c in purls.items() if p.startswith("pkg:pypi/sgltest-app@"))
    lock = json.loads((tmp_path / "lock.json").read_text())
    assert app["hashes"][0]["content"] == next(w["sha256"] for w in lock["wheels"] if w["name"] == "sgltest-app")
    assert (project / "out" / "reprotest.cdx.json").read_text() == (tmp_path / "sbom.json").read_text()


def test_the_later_of_two_wheels_that_ship_one_file_wins_and_the_image_is_dated_by_the_epoch(env):
    """Both clash wheels ship sgltest_clash.py; the later one in the lock wins in every build (the rebuilds below and the
    full tier's offline rebuild hold it to the same bytes)."""
    image = env["client"].images.get(f"{TEST_IMAGE}:reprotest")
    out = env["client"].containers.run(image.id, ["python", "-c", "import sgltest_clash; print(sgltest_clash.WHO)"],
                                       remove=True, network_mode="none")
    assert out.decode().strip() == "b"
    assert image.attrs["Created"].startswith("2025-09-18T00:00:00")


def test_nondeterministic_step_is_caught_and_named(env):
    """Two from-scratch builds, offline (the package index stopped): every layer identical but the final one, where the
    report names the file."""
    project = env["project"]
    profile = project / "sglbuild.toml"
    good = profile.read_text()
    profile.write_text(good.replace('gpu_arch = "sm_120"', f'gpu_arch = "sm_120"\n{STAMP}', 1))
    env["index"].stop()
    try:
        r = run_cli("build", "--check-reproducible", "--json", cwd=project)
        assert r.returncode == 1, r.stderr
        report = json.loads(r.stdout)
        assert "not reproducible" in r.stderr.strip().splitlines()[-1]
        assert report["identical"] is False
        layers = report["layers"]
        assert [layer["stage"] for layer in layers if not layer["identical"]] == ["final"]
        assert [layer["stage"] for layer in layers if layer["identical"]] == ["base", "system", "torch", "kernel", "app", "clash"]
        final = next(layer for layer in layers if not layer["identical"])
        assert [(f["path"], f["how"]) for f in final["files"]] == [("/etc/build-stamp", ["content"])]
    finally:
        profile.write_text(good)
    leftovers = [t for i in env["client"].images.list() for t in i.tags if t.startswith("sglbuild-repro/")]
    assert leftovers == []


def derive(client, tag: str, dockerfile: str) -> str:
    return build_image(client, dockerfile, tag=tag, nocache=True)


def test_diff_names_the_one_file_that_differs(env):
    client, project = env["client"], env["project"]
    base = f"{TEST_IMAGE}:reprotest"
    a = derive(client, "diff-a", f"FROM {base}\nRUN echo one > /etc/motd.d && echo same > /etc/same\n")
    b = derive(client, "diff-b", f"FROM {base}\nRUN echo two > /etc/motd.d && echo same > /etc/same\n")
    r = run_cli("diff", a, b, "--json", cwd=project)
    assert r.returncode == 1
    layers = json.loads(r.stdout)
    changed = [layer for layer in layers if not layer["identical"]]
    assert len(changed) == 1 and len(layers) == len(client.images.get(base).attrs["RootFS"]["Layers"]) + 1
    files = {f["path"]: f["how"] for f in changed[0]["files"]}
    assert files["/etc/motd.d"][0] == "content"
    assert files.get("/etc/same", ["mtime"]) == ["mtime"]  # same content, written at another time
    # Same content written at another time: only timestamps differ; --semantic calls them the same.
    c = derive(client, "diff-c", f"FROM {base}\nRUN sleep 1.1; echo one > /etc/motd.d && echo same > /etc/same\n")
    r = run_cli("diff", a, c, cwd=project)
    assert r.returncode == 1 and "/etc/motd.d: mtime" in r.stdout
    r = run_cli("diff", a, c, "--semantic", cwd=project)
    assert r.returncode == 0, r.stdout
    assert "same files, other timestamps" in r.stdout
