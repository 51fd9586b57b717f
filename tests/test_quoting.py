"""Values with quotes, dollars, backslashes, newlines and non-ASCII land in the image byte for byte, or are refused.

Env values go through the Dockerfile (one quoting filter); labels go into the config by
normalize; server flags are written into the entrypoint by shell quoting. Each is read back
from a real image built by the real engine.
"""

from __future__ import annotations

import json

import pytest

from builder.errors import InputError
from builder.assemble.render import dockerfile_value
from support import TEST_IMAGE, run_cli, small_project

NASTY = "it's \"quoted\" $HOME ${PATH} \\back\\slash né 日本"
DESCRIPTION = "line one\n" + NASTY
SERVE = f'''
[[targets.quotetest.stage]]
name = "server"
requires = ["sglang==0.5.9"]

[targets.quotetest.serve]
host = {json.dumps(NASTY)}
port = 8000
attention_backend = "torch_native"

[targets.quotetest.env]
SGLTEST_NASTY = {json.dumps(NASTY)}
'''


def test_dockerfile_value_escapes_what_the_parser_reads_and_refuses_newlines():
    assert dockerfile_value('a"b') == '"a\\"b"'
    assert dockerfile_value("$X \\") == '"\\$X \\\\"'
    assert dockerfile_value("it's") == '"it\'s"'
    with pytest.raises(InputError, match="cannot hold a newline"):
        dockerfile_value("two\nlines")


@pytest.fixture(scope="module")
def image(tmp_path_factory, docker_client, uv_wheel, sm120_so):
    tmp = tmp_path_factory.mktemp("quoting")
    project, index = small_project(tmp, uv_wheel, sm120_so, name="quotetest", extra=SERVE, steps=())
    profile = project / "sglbuild.toml"
    # A description with a newline and quotes: a label, so it goes to the config, not the Dockerfile.
    profile.write_text(profile.read_text().replace('description = "sglbuild\'s small integration target"',
                                                   f"description = {json.dumps(DESCRIPTION)}"))
    for args in (("lock",), ("fetch",), ("build", "--quiet")):
        r = run_cli(*args, cwd=project)
        assert r.returncode == 0, r.stderr
    yield {"project": project, "client": docker_client, "ref": f"{TEST_IMAGE}:quotetest"}
    index.stop()


def test_env_label_and_flags_land_byte_for_byte(image):
    client, ref = image["client"], image["ref"]
    config = client.images.get(ref).attrs["Config"]
    assert f"SGLTEST_NASTY={NASTY}" in config["Env"]
    assert config["Labels"]["org.opencontainers.image.description"] == DESCRIPTION
    flags = json.loads(config["Labels"]["io.sglbuild.serve-flags"])
    assert flags[:2] == ["--host", NASTY]
    # The entrypoint hands the server exactly the default flags, then the user's arguments.
    out = client.containers.run(ref, ["--model-path", "m", "--port", "1"], remove=True, network_disabled=True)
    assert json.loads(out.decode()) == [*flags, "--model-path", "m", "--port", "1"]
    out = client.containers.run(ref, ["sh", "-c", 'printf "%s\\n" "$SGLTEST_NASTY"'], remove=True, network_disabled=True)
    assert out.decode() == NASTY + "\n"  # a whole line: the engine's log driver may hold back a partial one


def test_a_newline_in_an_env_value_is_refused_in_one_line(image, tmp_path):
    profile = image["project"] / "sglbuild.toml"
    broken = tmp_path / "broken.toml"
    broken.write_text(profile.read_text().replace(f"SGLTEST_NASTY = {json.dumps(NASTY)}", 'SGLTEST_NASTY = "two\\nlines"'))
    r = run_cli("--profile", str(broken), "render", cwd=image["project"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "env: SGLTEST_NASTY: the value must be a string on one line" in r.stderr
