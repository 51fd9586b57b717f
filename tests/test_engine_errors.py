"""Failures at the engine boundary are one line and an exit code from one table, never a traceback."""

from __future__ import annotations

import re

import docker.errors
import pytest
import requests

from builder.cli import handled
from builder.contracts import LABEL_MANAGED
from builder.engine import guard, translate
from builder.errors import DiskFull, EngineError, EngineUnavailable, ExitCode, ImageNotFound, InputError
from support import ROOT, run_cli


def test_the_readme_documents_every_exit_code():
    text = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| [^|]*\| ([A-Z_]+) \|", text, re.M))
    assert {int(k): v for k, v in table.items()} == {c.value: c.name for c in ExitCode}


def test_translate_names_the_request_and_maps_each_kind():
    refused = docker.errors.APIError("500 Server Error", explanation="Error processing tar file: invalid tar header")
    err = translate(refused, "the import of rootfs.tar")
    assert isinstance(err, EngineError) and str(err) == "the engine refused the import of rootfs.tar: Error processing tar file: invalid tar header"
    full = docker.errors.APIError("500", explanation="write /var/lib/docker/x: no space left on device")
    assert isinstance(translate(full, "the build of stage torch"), DiskFull)
    bad_ref = docker.errors.APIError("400", explanation="invalid reference format: repository name must be lowercase")
    assert isinstance(translate(bad_ref, "a lookup"), InputError)
    assert isinstance(translate(docker.errors.ImageNotFound("x"), "a lookup of image x"), ImageNotFound)
    assert isinstance(translate(requests.exceptions.ConnectionError("reset"), "a push"), EngineUnavailable)
    assert translate(ValueError("a bug"), "anything") is None  # not the engine's: a bug keeps its traceback
    with pytest.raises(EngineError, match="the engine refused the import"):
        with guard("the import of rootfs.tar"):
            raise refused


def test_an_untranslated_engine_exception_still_leaves_as_one_line(capsys):
    @handled
    def command() -> None:
        raise docker.errors.APIError("500", explanation="something the engine said\nover two lines")

    with pytest.raises(SystemExit) as exit_:
        command()
    assert exit_.value.code == ExitCode.ENVIRONMENT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "something the engine said over two lines" in err and "Traceback" not in err


def test_a_bad_image_reference_is_bad_input(docker_client, tmp_path):
    r = run_cli("verify", "Bad:Ref", cwd=tmp_path)
    assert r.returncode == ExitCode.BAD_INPUT and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "invalid reference format" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.exclusive  # every image of the engine, before and after
def test_an_import_the_engine_refuses_is_one_error_and_leaves_no_image(engine, docker_client, tmp_path):
    corrupt = tmp_path / "rootfs.tar"
    corrupt.write_bytes(b"not a tar archive " * 200)
    before = {image.id for image in docker_client.images.list(all=True)}
    with pytest.raises(EngineError) as refused:
        engine.images.import_tarball(corrupt, [f'LABEL {LABEL_MANAGED}="true"'])  # labelled as the base step does
    assert str(refused.value).startswith("the engine refused the import of rootfs.tar:") and "\n" not in str(refused.value)
    # containerd's store keeps an untagged record of the image it could not unpack; sglbuild removes it
    assert {image.id for image in docker_client.images.list(all=True)} == before
