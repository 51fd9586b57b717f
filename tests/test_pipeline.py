"""The image pipeline end to end against a real registry on loopback (Debian's docker-registry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from support import ROOT, TEST_IMAGE, engine_tags, run_cli, small_project

pytestmark = pytest.mark.engine


def manifest_digest(addr: str, repo: str, tag: str) -> str:
    req = urllib.request.Request(f"http://{addr}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"},
                                 method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Docker-Content-Digest"]


def run_pipeline(project, repo: str, state, **env: str) -> subprocess.CompletedProcess:
    """ci/pipeline.sh, as make pipeline runs it (every platform's job on this engine here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SGLBUILD_STATE": str(state), "SGLBUILD": f"{sys.executable} -m builder.cli", **env}
    return subprocess.run([str(ROOT / "ci" / "pipeline.sh"), repo], cwd=project, env=env, capture_output=True, text=True, timeout=900)


def test_pipeline_build_push_join_verify_promote(tmp_path_factory, docker_client, uv_wheel, sm120_so, registry):
    """A one-platform target through the whole pipeline, its image verified after the join by the index's digest, here."""
    project, index = small_project(tmp_path_factory.mktemp("pipeline"), uv_wheel, sm120_so, name="pipelinetest")
    state, out = project / "state", project / "out" / "pipeline"
    repo = f"{registry}/sglbuild-test/pipeline"
    try:
        r = run_pipeline(project, repo, state, GPU="auto")
        assert r.returncode == 0, r.stderr
        ref = r.stdout.strip().splitlines()[-1]
        joined = json.loads((out / "join.json").read_text())
        assert joined["index"] == ref and ref.startswith(repo + "@sha256:")
        assert joined["platforms"] == {"linux/amd64": (out / "digest-amd64.txt").read_text().strip().split("@")[1]}
        # The registry's human tag now names the joined index; the verdict is of the very image the job pushed.
        assert manifest_digest(registry, "sglbuild-test/pipeline", "pipelinetest") == ref.split("@")[1]
        verdict = json.loads((out / "verdict-amd64.json").read_text())
        assert verdict["passed"] and verdict["image_id"] == docker_client.images.get(f"{TEST_IMAGE}:pipelinetest").id
        # A registry that does not answer: one line, exit 4, and no local tag left naming it.
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            dead = f"127.0.0.1:{sock.getsockname()[1]}/sglbuild-test/dead"
        r = run_cli("push", f"{TEST_IMAGE}:pipelinetest", dead, cwd=project, env={"SGLBUILD_STATE": str(state)})
        assert r.returncode == 4 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not [t for t in engine_tags(docker_client) if t.startswith(dead)]
        # push refuses an image nobody verified; promote refuses without a passing verdict, and without a GPU's.
        fresh = {"SGLBUILD_STATE": str(project / "empty-state")}
        r = run_cli("push", f"{TEST_IMAGE}:pipelinetest", repo, cwd=project, env=fresh)
        assert r.returncode == 1 and "has not passed 'sglbuild verify'" in r.stderr
        r = run_cli("promote", ref, "latest", cwd=project, env=fresh)
        assert r.returncode == 1 and "has not passed 'verify' on this machine; the tag was not moved" in r.stderr
        r = run_cli("promote", "--require-gpu", "--verdicts", str(out / "verdict-amd64.json"), ref, "latest", cwd=project)
        assert r.returncode == 1 and "has not passed 'verify with --gpu require' in the verdicts given" in r.stderr
    finally:
        index.stop()
        for tag in engine_tags(docker_client):
            if tag.startswith(repo):
                docker_client.images.remove(tag, force=True)
