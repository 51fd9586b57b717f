"""The pipeline on the real engine: a small real target, built, rebuilt, changed, broken."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import ROOT, SGLBUILD, TEST_IMAGE, build_image, run_cli, small_profile, small_project, tar_bytes

pytestmark = pytest.mark.engine
HUMAN = f"{TEST_IMAGE}:smalltest"


@pytest.fixture(scope="module")
def env(tmp_path_factory, docker_client, uv_wheel, sm120_so):
    project, index = small_project(tmp_path_factory.mktemp("build"), uv_wheel, sm120_so)
    yield {"project": project, "index": index, "client": docker_client}
    index.stop()


def build(project: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run_cli("build", *args, cwd=project, **kw)


def build_json(project: Path) -> dict:
    r = build(project, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def statuses(result: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result["stages"]}


def test_build_tags_only_a_smoke_tested_image(env):
    client = env["client"]
    result = build_json(env["project"])
    assert list(statuses(result)) == ["system", "torch", "kernel", "app", "final"]
    image = client.images.get(HUMAN)
    assert image.id == result["image_id"] == client.images.get(result["immutable_tag"]).id
    assert result["smoke"] and result["smoke"][0]["exit_code"] == 0 and "1.0" in result["smoke"][0]["output"]
    labels = image.labels
    lock_text = (env["project"] / "locks" / "smalltest.lock.json").read_text()
    assert labels["io.sglbuild.lock-digest"] == "sha256:" + hashlib.sha256(lock_text.encode()).hexdigest()
    assert labels["org.opencontainers.image.created"] == "2025-09-18T00:00:00Z"
    assert labels["io.sglbuild.target"] == "smalltest" and labels["org.opencontainers.image.revision"]
    out = client.containers.run(HUMAN, ["python", "-c", "import sgltest_app, sgltest_kernel, sgltest_dep; print(sgltest_app.__version__)"],
                                remove=True, network_disabled=True)
    assert out.decode().strip() == "1.0"
    # Build tools stay out of the image.
    out = client.containers.run(HUMAN, ["sh", "-c", "ls /tmp; command -v uv || echo no-uv"], remove=True, network_disabled=True)
    assert out.decode().strip() == "no-uv"


def test_unchanged_rebuild_reuses_every_stage(env):
    before = env["client"].images.get(HUMAN).id
    t0 = time.monotonic()
    result = build_json(env["project"])
    assert set(statuses(result).values()) == {"reused"}
    assert result["image_id"] == before
    assert time.monotonic() - t0 < 30  # generous bound; the benchmark measures the real figure


def test_a_new_commit_rebuilds_nothing_and_is_not_gated_again(env):
    """The revision is a label: a new commit gives a new image ID (config) over the same layers, and the
    gate's earlier pass for the same content carries over."""
    project, client = env["project"], env["client"]
    before = build_json(project)
    same_content = set()  # every image of these layers that passed here: any one of them vouches for the next
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    for message in ("first", "second"):
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], check=True)
        result = build_json(project)
        assert set(statuses(result).values()) == {"reused"}
        assert result["layers"] == before["layers"] and result["image_id"] != before["image_id"]
        same_content.add(before["image_id"])
        assert result["gate"].removeprefix("inherited from ") in same_content and result["smoke"] == []
        same_content.add(result["image_id"])
        revision = client.images.get(HUMAN).labels["org.opencontainers.image.revision"]
        assert revision == subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    # Changing the smoke tests is a different gate: it runs again.
    subprocess.run(["rm", "-rf", str(project / ".git")], check=True)
    (project / "sglbuild.toml").write_text(small_profile(env["index"].url, smoke=["python -c 'import sgltest_dep'"]))
    result = build_json(project)
    assert result["gate"] == "passed" and result["smoke"][0]["exit_code"] == 0
    (project / "sglbuild.toml").write_text(small_profile(env["index"].url))
    assert build_json(project)["gate"].removeprefix("inherited from ") in same_content  # back to the first smoke tests


def test_no_wheel_in_any_layer(env, engine):
    """Read every layer the engine exports (whatever its save format): no wheel of the wheelhouse, by name or by bytes.

    The only .whl files allowed are Debian's own (python3-venv ships pip's wheel for ensurepip).
    """
    from builder.engine.export import layer_files

    lock = json.loads((env["project"] / "locks" / "smalltest.lock.json").read_text())
    wheel_hashes = {w["sha256"] for w in lock["wheels"]}
    wheel_names = {w["filename"] for w in lock["wheels"]}
    diff_ids = list(engine.images.get(HUMAN).layers)
    layers = layer_files(engine, HUMAN, set(diff_ids))  # raises if the export holds fewer layers than the image
    assert len(layers) == len(set(diff_ids)) >= 4
    files = [(path, e) for entries in layers.values() for path, e in entries.items()]
    for path, e in files:
        if path.endswith((".whl", ".whl.part")):
            assert path.startswith("/usr/share/python-wheels/"), path
        assert Path(path).name not in wheel_names, path
        assert e.sha256 not in wheel_hashes, path
    assert sum(e.kind == "file" for _, e in files) > 1000  # the base's files were read too


def test_changing_one_pin_rebuilds_only_the_stages_after_it(env):
    project, client = env["project"], env["client"]
    old = client.images.get(HUMAN).id
    (project / "sglbuild.toml").write_text(small_profile(env["index"].url, app_version="1.1"))
    assert build(project).returncode == 2  # the lock is now out of date: refused
    for args in (("lock",), ("fetch",)):
        assert run_cli(*args, cwd=project).returncode == 0
    plan = json.loads(run_cli("plan", "--json", cwd=project).stdout)[0]
    for stage in plan["stages"][-2:]:  # app 1.1's stages, as a run before this one may have kept them: never built here
        if client.images.list(stage["tag"]):
            client.api.remove_image(stage["tag"])
    result = build_json(project)
    assert statuses(result) == {"system": "reused", "torch": "reused", "kernel": "reused", "app": "built", "final": "built"}
    assert result["image_id"] != old
    out = client.containers.run(HUMAN, ["python", "-c", "import sgltest_app; print(sgltest_app.__version__)"], remove=True)
    assert out.decode().strip() == "1.1"


def test_wheel_whose_hash_does_not_match_stops_the_build(env):
    project, client = env["project"], env["client"]
    before = client.images.get(HUMAN).id
    lock = json.loads((project / "locks" / "smalltest.lock.json").read_text())
    app = next(w for w in lock["wheels"] if w["name"] == "sgltest-app")
    path = project / "wheels" / app["filename"]
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    try:
        r = build(project)
        assert r.returncode == 5, r.stderr
        assert f"{app['filename']} has sha256" in r.stderr and "the lock pins" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        path.write_bytes(good)
    assert client.images.get(HUMAN).id == before


@pytest.mark.exclusive  # every stage tag, before and after
def test_failing_step_tags_nothing(env):
    """A lock edited by hand to a file the wheelhouse does not serve: the step fails, nothing is tagged."""
    project, client = env["project"], env["client"]
    if not client.images.list(HUMAN):  # run on its own: the module's first test built it
        build_json(project)
    before = client.images.get(HUMAN).id
    path = project / "locks" / "smalltest.lock.json"
    good = path.read_text()
    lock = json.loads(good)
    app = next(w for w in lock["wheels"] if w["name"] == "sgltest-app")
    app["version"] = "1.0" if app["version"] != "1.0" else "1.1"  # but the file (and hash) are the other version's
    path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    tags_before = {t for i in client.images.list("sglbuild/stage") for t in i.tags}
    try:
        r = build(project)
        assert r.returncode == 6, r.stderr
        assert "stage app failed: a step exited with code" in r.stderr.splitlines()[-1]
    finally:
        path.write_text(good)
    assert {t for i in client.images.list("sglbuild/stage") for t in i.tags} == tags_before
    assert client.images.get(HUMAN).id == before


def test_failing_smoke_test_keeps_only_the_immutable_tag(env):
    project, client = env["project"], env["client"]
    text = small_profile(env["index"].url, app_version="1.1", name="smoke-fails",
                         smoke=["python -c 'import sgltest_app'", "python -c 'import sgltest_missing'"])
    (project / "smoke.toml").write_text(text)
    (project / "locks" / "smoke-fails.lock.json").write_text(
        (project / "locks" / "smalltest.lock.json").read_text().replace('"target": "smalltest"', '"target": "smoke-fails"'))
    r = run_cli("--profile", "smoke.toml", "build", cwd=project)
    assert r.returncode == 7, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "smoke test failed (exit 1)" in last and "No module named 'sgltest_missing'" in last
    assert f"{TEST_IMAGE}:smoke-fails was not moved" in last
    tags = {t for i in client.images.list(TEST_IMAGE) for t in i.tags}
    assert f"{TEST_IMAGE}:smoke-fails" not in tags
    assert any(t.startswith(f"{TEST_IMAGE}:smoke-fails-") for t in tags)


def test_no_engine_is_one_line(env):
    r = build(env["project"], env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert r.returncode == 3
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0]
    assert "no Docker engine answers at unix:///nonexistent/docker.sock" in r.stderr


@pytest.fixture
def new_base(env):
    """A target whose base is not built yet (another SOURCE_DATE_EPOCH), locked and fetched."""
    project = env["project"]
    text = small_profile(env["index"].url, app_version="1.1").replace("1758153600", "1758153601")
    kept = {p: p.read_bytes() for p in [project / "sglbuild.toml", *(project / "locks").iterdir()]}
    (project / "sglbuild.toml").write_text(text)
    assert run_cli("lock", cwd=project).returncode == 0
    yield project
    for path, data in kept.items():  # the profile and its locks as they were
        path.write_bytes(data)


def test_missing_mmdebstrap_and_full_disk_are_one_line(new_base, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    r = build(new_base, env={"PATH": str(bare)})
    assert r.returncode == 3 and "mmdebstrap is not installed (apt-get install mmdebstrap)" in r.stderr
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        r = build(new_base, env={"TMPDIR": str(small)})
        assert r.returncode == 3 and "less than 2 GiB free" in r.stderr and "Traceback" not in r.stderr
    finally:
        subprocess.run(["umount", str(small)])


def default_sigint() -> None:
    """As from a terminal: a shell runs background jobs (a CI step, 'make test &') with SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler; the command under test gets Ctrl-C's default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_the_build_moves_no_tag(new_base, env):
    client = env["client"]
    envv = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*SGLBUILD, "build"], cwd=new_base, env=envv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    first = proc.stderr.readline()  # "building smalltest (...)": the command runs, the base bootstrap (about 30 s) starts
    assert first.startswith("building "), first
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = first + err
    assert proc.returncode == 130, err
    assert "interrupted" in err.strip().splitlines()[-1] and "Traceback" not in err
    base_tags = {t for i in client.images.list("sglbuild/base") for t in i.tags}
    lock = json.loads((new_base / "locks" / "smalltest.lock.json").read_text())
    from builder.assemble.plan import base_ref
    from builder.inputs.lockfile import parse_lock
    from builder.inputs.profile import load_profile
    t = load_profile(new_base / "sglbuild.toml").target(None)
    assert base_ref(t, parse_lock(json.dumps(lock), "lock")) not in base_tags


def test_the_wheel_server_answers_only_the_build_network(env, engine, tmp_path):
    """The server listens on a host address, which every local network reaches: it must refuse all but the build's."""
    from builder.assemble.wheelserver import WheelServer

    if engine.builder != "classic":
        pytest.skip("on BuildKit a step has no network and reads its wheels from a bind mount: no server to reach")
    build_json(env["project"])
    image = HUMAN  # any image with python3
    fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).status)"
    network, gateway, subnet = engine.networks.build_network()
    with WheelServer(tmp_path, [], gateway, {"probe.txt": b"x"}, allowed=subnet) as server:
        url = server.url + "probe.txt"
        ok = env["client"].containers.run(image, ["python3", "-c", fetch, url], entrypoint=[], network=network, remove=True)
        assert ok.strip() == b"200"
        # The same address from a container on the default bridge: routed by the host, refused by the server.
        refused = env["client"].containers.run(image, ["sh", "-c", f"python3 -c '{fetch}' {url} 2>&1; echo rc=$?"],
                                               entrypoint=[], network="bridge", remove=True)
        assert b"rc=1" in refused and b"200" not in refused.split(b"rc=")[0]


@pytest.mark.exclusive  # a shared stage's tag names a forged image for a while
def test_a_file_changed_in_a_stage_image_is_noticed_and_built_again(env):
    """Stage images are reused by tag: a different image under a stage's tag must not be taken for it."""
    first = build_json(env["project"])
    stage = next(s for s in first["stages"] if s["name"] == "app")
    client = env["client"]
    container = client.containers.create(stage["tag"], ["true"], entrypoint=[])
    try:
        container.put_archive("/opt", tar_bytes({"tampered.txt": b"not what the lock installs\n"}))
        forged = container.commit()
        client.api.tag(forged.id, *stage["tag"].rsplit(":", 1))
    finally:
        container.remove(force=True)
    r = build(env["project"])  # the text output, where the warning is
    assert r.returncode == 0, r.stderr
    assert f"{stage['tag']} is {forged.id[:19]}, not the {stage['image_id'][:19]} built for its key; building it again" in r.stderr
    assert re.search(r"^\s+app\s+built", r.stderr, re.M)
    again = build_json(env["project"])
    assert statuses(again)["app"] == "reused" and again["image_id"] == first["image_id"]
    assert engine_has_no(client, forged.id)  # the forged image went with the tag it had taken
    # Another ID of the same content (a label more: how another build of the stage differs, its wheel server's address
    # in its history) is the stage; a variable more is not.
    for extra, status in (("LABEL rebuilt=elsewhere", "reused"), ("ENV PYTHONPATH=/opt/evil", "built")):
        twin = build_image(client, f"FROM {stage['tag']}\n{extra}\n")
        client.api.tag(twin, *stage["tag"].rsplit(":", 1))
        assert statuses(build_json(env["project"]))["app"] == status, extra


def engine_has_no(client, image_id: str) -> bool:
    import docker

    try:
        client.images.get(image_id)
    except docker.errors.ImageNotFound:
        return True
    return False


BYTECODE = """
import importlib.util, json, pathlib, sys
site = pathlib.Path(sys.prefix, 'lib', f'python{sys.version_info[0]}.{sys.version_info[1]}', 'site-packages')
missing, flags = [], {}
for py in site.rglob('*.py'):
    pyc = pathlib.Path(importlib.util.cache_from_source(str(py)))
    if not pyc.exists():
        missing.append(str(py))
        continue
    kind = int.from_bytes(pyc.read_bytes()[4:8], 'little')  # PEP 552: 0 timestamp, 1 unchecked hash, 3 checked hash
    flags[kind] = flags.get(kind, 0) + 1
print(json.dumps({'missing': missing[:5], 'flags': flags}))
"""


def test_every_module_carries_hash_checked_byte_code_and_a_fresh_container_writes_none(env):
    """compile_bytecode: a .pyc beside every module the wheels installed, hash-checked (PEP 552: valid whatever time
    the files carry, and the same bytes every build); importing in a new container compiles nothing."""
    client = env["client"]
    found = json.loads(client.containers.run(HUMAN, ["python", "-c", BYTECODE], entrypoint=[], remove=True, network_disabled=True))
    assert found["missing"] == [] and set(found["flags"]) == {"3"} and found["flags"]["3"] > 100, found
    c = client.containers.create(HUMAN, ["python", "-c", "import sgltest_app, sgltest_kernel, pip"], entrypoint=[], network_disabled=True)
    try:
        c.start()
        assert c.wait(timeout=120)["StatusCode"] == 0
        written = [d["Path"] for d in client.api.diff(c.id) or [] if d["Path"].endswith(".pyc")]
        assert written == []  # no byte-code compiled at import
    finally:
        c.remove(force=True)
