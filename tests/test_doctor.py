"""doctor: the host's checks from what nvidia-smi says, and the driver each image's CUDA needs."""

from __future__ import annotations

import json
import stat

import pytest

from builder.check.doctor import check_host, driver_for, driver_floor
from builder.check.report import Report
from builder.check.host import gpus
from support import run_cli

# What nvidia-smi printed for the query sglbuild makes, on the machine with an H100 (driver 580.159.04).
H100 = "NVIDIA H100 80GB HBM3, 9.0, 580.159.04, 81559\n"
RTX5090 = "NVIDIA GeForce RTX 5090, 12.0, 570.124.06, 32607\n"


def fake_smi(tmp_path, reply: str):
    tool = tmp_path / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\ncat <<'EOF'\n{reply}EOF\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return str(tool)


@pytest.mark.parametrize("cuda, driver, status", [
    ("12.8", "570.124.06", "pass"),   # the 5090's driver, the default image
    ("12.8", "570.26", "pass"),       # exactly CUDA 12.8's floor
    ("12.8", "560.35.03", "warn"),    # CUDA 12's line, below 12.8: minor-version compatibility only
    ("12.8", "520.61.05", "fail"),    # below CUDA 12 altogether
    ("13.0", "570.124.06", "fail"),   # the current image on the 5090's driver: CUDA 13 needs 580
    ("13.0", "580.159.04", "pass"),
    ("13.0", None, "fail"),           # no driver here
    ("", "580.159.04", "skip"),       # an image with no CUDA torch
    ("14.0", "600.1", "warn"),        # a CUDA the table does not know: said, not guessed
])
def test_the_driver_an_images_cuda_needs(cuda, driver, status):
    assert driver_for(cuda, driver).status == status


def test_driver_floors_are_the_toolkits():
    assert driver_floor("12.8") == ("570.26", "525.60.13")
    assert driver_floor("13.0.2") == ("580.65.06", "580.65.06")


def test_host_checks_read_nvidia_smi(tmp_path):
    found = gpus(fake_smi(tmp_path, RTX5090 + H100))
    assert [g.arch for g in found] == ["sm_120", "sm_90"]
    doc = Report("doctor", None)
    check_host(doc, found, None, "no Docker engine answers at unix:///x")
    by = {f.id: f for f in doc.checks}
    assert by["driver"].status == "pass" and "570.124.06" in by["driver"].detail
    assert "RTX 5090, compute 12.0 (sm_120)" in by["gpus"].detail and "sm_90" in by["gpus"].detail
    assert by["runtime"].status == "fail" and not doc.passed  # no engine: must fail, with what to do
    assert by["runtime"].hint


def test_no_driver_fails_with_what_to_do(tmp_path):
    doc = Report("doctor", None)
    check_host(doc, gpus(fake_smi(tmp_path, "")), None, None)
    assert doc.checks[0].status == "fail" and "install the NVIDIA driver" in doc.checks[0].hint


def test_doctor_command_exits_1_and_says_why_in_one_line(tmp_path):
    r = run_cli("doctor", "--json", "--nvidia-smi", fake_smi(tmp_path, ""), cwd=tmp_path, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("sglbuild: error: ") and "Traceback" not in r.stderr
    data = json.loads(r.stdout)
    assert {f["id"]: f["status"] for f in data["checks"]} == {"driver": "fail", "runtime": "fail"}


@pytest.mark.parametrize("capability, arch", [("12.0", "sm_120"), ("12.1", "sm_121"), ("10.0", "sm_100"), ("10.3", "sm_103"),
                                              ("11.0", "sm_110"), ("9.0", "sm_90")])
def test_compute_capability_names_the_architecture(tmp_path, capability, arch):
    """RTX 50 / RTX PRO 6000, DGX Spark (GB10), B200/GB200, B300/GB300, Jetson Thor, H100: as nvidia-smi reports them."""
    found = gpus(fake_smi(tmp_path, f"NVIDIA GPU, {capability}, 580.95.05, 65536\n"))
    assert found[0].arch == arch


def test_a_multi_platform_targets_image_for_this_machine(monkeypatch):
    from builder.check import host
    from builder.inputs.profile import Target

    monkeypatch.setattr(host.platform, "machine", lambda: "aarch64")
    assert host.host_platform() == "linux/arm64"
    t = Target("b", "", "sglang", "blackwell", (("linux/amd64", ("sm_120",)), ("linux/arm64", ("sm_121",))), "", None, "", (), False, (),
               None, declares_platforms=True)
    assert t.platform_tag(host.host_platform()) == "sglang:blackwell-arm64"
