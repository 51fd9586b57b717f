"""The image pipeline end to end against a real registry on loopback (Debian's docker-registry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from support import ROOT, run_cli, small_project

pytestmark = pytest.mark.engine


def manifest_digest(addr: str, repo: str, tag: str) -> str:
    req = urllib.request.Request(f"http://{addr}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}, method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Docker-Content-Digest"]


def test_pipeline_build_verify_push_pull_verify_tag(tmp_path_factory, docker_client, uv_wheel, sm120_so, registry):
    project, index = small_project(tmp_path_factory.mktemp("pipeline"), uv_wheel, sm120_so, name="pipelinetest")
    state = project / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SGLBUILD_STATE": str(state),
           "SGLBUILD": f"{sys.executable} -m builder.cli", "GPU": "auto"}
    repo = f"{registry}/sglbuild-test/pipeline"
    try:
        r = subprocess.run([str(ROOT / "ci" / "pipeline.sh"), repo], cwd=project, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr
        ref = r.stdout.strip().splitlines()[-1]
        assert ref.startswith(repo + "@sha256:") and (project / "out" / "pipeline" / "digest.txt").read_text().strip() == ref
        build = json.loads((project / "out" / "pipeline" / "build.json").read_text())
        # The registry's human tag now names the verified digest, and the pulled image is the built one.
        assert manifest_digest(registry, "sglbuild-test/pipeline", "pipelinetest") == ref.split("@")[1]
        assert docker_client.images.get(ref).id == build["image_id"]
        for report in ("verify-static.xml", "verify-pulled.xml"):
            suite = ET.parse(project / "out" / "pipeline" / report).getroot()
            assert suite.get("failures") == "0" and int(suite.get("tests")) == 9
        # verify works on the image pulled by digest; push refuses an image nobody verified.
        assert run_cli("verify", ref, cwd=project, env={"SGLBUILD_STATE": str(state)}).returncode == 0
        fresh = {"SGLBUILD_STATE": str(project / "empty-state")}
        r = run_cli("push", ref, repo, cwd=project, env=fresh)
        assert r.returncode == 1 and "has not passed 'sglbuild verify'" in r.stderr
        r = run_cli("promote", ref, "latest", cwd=project, env=fresh)
        assert r.returncode == 1 and "the tag was not moved" in r.stderr
        r = run_cli("promote", "--require-gpu", ref, "latest", cwd=project, env={"SGLBUILD_STATE": str(state)})
        assert r.returncode == 1 and "--gpu require" in r.stderr  # no GPU here: the GPU gate holds
    finally:
        index.stop()
        for image in docker_client.images.list():
            for tag in image.tags:
                if tag.startswith(repo):
                    docker_client.images.remove(tag, force=True)
