"""The unit layer: pure logic on recorded streams, canned probe replies and small fixtures (no engine, no network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json

import pytest

from builder.check.command import ServerCommand
from builder.contracts import PROBE_VERSION, GpuCode, Outcome, Runtime, StaticReply
from builder.check.features import Feature
from builder.engine.builds import read_build_stream
from builder.errors import BuildFailed, DiskFull, EngineError, ResolutionError
from builder.check.diff import compare_entries
from builder.engine.export import read_layer
from builder.engine.records import LayerEntry as Entry
from builder.inputs.lockfile import Platform, Wheel
from builder.inputs.profile import load_profile
from builder.inputs.resolve import _assign_stages
from builder.check.report import Report
from builder.check.gpucode import ImageGpuCode, coverage
from builder.check.verify import _check_environment, check_flags, _check_pins
from support import small_profile, tar_bytes

# -- the classic builder's progress stream ---------------------------------------------------

OK_STREAM = [{"stream": "Step 1/3 : FROM sglbuild/base:x AS system\n"}, {"stream": " ---> 1234\n"},
             {"aux": {"ID": "sha256:" + "ab" * 32}}, {"stream": "Successfully built abababababab\n"}]
FAILED_STREAM = [{"stream": "Step 5/7 : RUN set -eu; ...\n"}, {"stream": "\x1b[91mERROR: No matching distribution found for x==1\n\x1b[0m"},
                 {"errorDetail": {"code": 1, "message": "The command '/bin/sh -c set -eu; ...' returned a non-zero code: 1"},
                  "error": "The command '/bin/sh -c set -eu; ...' returned a non-zero code: 1"}]


def test_build_stream_gives_the_image_id():
    seen = []
    assert read_build_stream(OK_STREAM, "system", on_line=seen.append) == "sha256:" + "ab" * 32
    assert seen[0].startswith("Step 1/3")


def test_build_stream_failure_names_the_step_and_its_error_line():
    tails = []
    with pytest.raises(BuildFailed) as failed:
        read_build_stream(FAILED_STREAM, "torch", on_failure=tails.append)
    assert str(failed.value).startswith("stage torch failed: a step exited with code 1: ERROR: No matching distribution found for x==1")
    assert "\x1b" not in str(failed.value) and tails and tails[0][-1].startswith("ERROR")


def test_build_stream_disk_full_and_no_id():
    with pytest.raises(DiskFull):
        read_build_stream([{"error": "write /x: no space left on device"}], "torch")
    with pytest.raises(EngineError, match="ended without an image ID"):
        read_build_stream([{"stream": "Step 1/1\n"}], "torch")


# -- verify's checks on canned probe replies -------------------------------------------------

def reply(**over) -> StaticReply:
    base = dict(probe_version=PROBE_VERSION, python="3.11.2", executable="/opt/venv/bin/python", site_packages=["/sp"],
                dists={"torch": "2.9.1", "sglang": "0.5.9", "triton": "3.5.1", "sgl-kernel": "0.3.21"},
                pip_check=Outcome(True, "No broken requirements found."), imports={
                    "torch": Outcome(True, {"version": "2.9.1+cu128", "cuda": "12.8"}), "sglang": Outcome(True, {"version": "0.5.9"})},
                flags=None, server_options=None, jit=None, libraries=[], ldd_missing={},
                runtime=Runtime("/usr/bin/cc", True, True, "/usr/bin/ldd"), lock=None)
    return StaticReply(**{**base, **over})


def test_reply_round_trips_through_json_and_refuses_another_version():
    r = reply(libraries=[GpuCode("/sp/torch/lib/libtorch_cuda.so", ["sm_120"], [], 2, 0)])
    assert StaticReply.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    with pytest.raises(ValueError, match="probe reply version"):
        StaticReply.from_dict({**r.to_dict(), "probe_version": PROBE_VERSION + 1})


def test_required_library_without_target_sass_fails_gpu_code():
    libs = ImageGpuCode({"torch/lib/libtorch_cuda.so": GpuCode("x", ["sm_80", "sm_90"], ["compute_90"])})
    check = coverage(libs, ["torch/lib/libtorch_cuda.so"], "sm_120")
    assert check.status == "fail" and "has no sm_120 SASS (sm_80 sm_90)" in check.detail
    assert coverage(ImageGpuCode({"torch/lib/libtorch_cuda.so": GpuCode("x", ["sm_120"])}), ["torch/lib/libtorch_cuda.so"], "sm_120").status == "pass"


def test_rejected_flags_fail_with_the_parsers_reason():
    report = Report("verify", "img", "sha256:x", ["sm_120"])
    check_flags(report, reply(flags=Outcome(False, None, "error: unrecognized arguments: --disable-flashinfer")),
                 ServerCommand(["--disable-flashinfer"], "its ENTRYPOINT/CMD"), {"sm_120": []})
    assert report.checks[0].status == "fail" and report.checks[0].detail.endswith("unrecognized arguments: --disable-flashinfer")


def test_a_flag_that_selects_a_backend_without_code_fails():
    report = Report("verify", "img", "sha256:x", ["sm_120"])
    rows = [Feature("attention fa3", False, "sgl_kernel/flash_ops.abi3.so: sm_80 sm_86 sm_90a, no sm_120 SASS")]
    parsed = Outcome(True, {"attention_backend": "fa3", "disable_custom_all_reduce": True, "disable_cuda_graph": True})
    check_flags(report, reply(flags=parsed), ServerCommand(["--attention-backend", "fa3"], "its CMD"), {"sm_120": rows})
    assert report.checks[0].status == "fail" and "attention fa3: sgl_kernel/flash_ops.abi3.so" in report.checks[0].detail


def test_a_lock_whose_digest_the_labels_do_not_name_fails_pins():
    report = Report("verify", "img", "sha256:x", ["sm_120"])
    _check_pins(report, reply(lock='{"version": 1}'), {"io.sglbuild.lock-digest": "sha256:other"}, None, None)
    assert report.checks[0].status == "fail" and "is not the one the labels name" in report.checks[0].detail


def test_missing_compiler_fails_environment():
    report = Report("verify", "img", "sha256:x", ["sm_120"])
    _check_environment(report, reply(runtime=Runtime(None, True, True, "/usr/bin/ldd")))
    assert report.checks[0].status == "fail" and "no C compiler" in report.checks[0].detail


# -- layers ------------------------------------------------------------------------------------

def layer_tar(files: dict[str, bytes]) -> bytes:
    return tar_bytes(files, mtime=1758153600)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_layer_is_known_by_the_sha256_of_its_uncompressed_bytes(compressed):
    raw = layer_tar({"etc/motd": b"hello\n"})
    blob = gzip.compress(raw, mtime=0) if compressed else raw
    diff_id, entries = read_layer(io.BytesIO(blob))
    assert diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert entries["/etc/motd"].sha256 == hashlib.sha256(b"hello\n").hexdigest()
    assert read_layer(io.BytesIO(b'{"schemaVersion": 2}' + b" " * 2000)) is None  # a manifest is no layer


def test_compare_entries_names_how_each_file_differs():
    a = {"/x": Entry("file", "1", 0o644, "0:0", 1, ""), "/y": Entry("file", "2", 0o644, "0:0", 1, "")}
    b = {"/x": Entry("file", "1", 0o755, "0:0", 2, ""), "/z": Entry("file", "3", 0o644, "0:0", 1, "")}
    got = {d["path"]: d["how"] for d in compare_entries(a, b, semantic=False)}
    assert got == {"/x": ["mode", "mtime"], "/y": ["presence"], "/z": ["presence"]}
    assert {d["path"]: d["how"] for d in compare_entries(a, b, semantic=True)}["/x"] == ["mode"]


# -- stage assignment ------------------------------------------------------------------------

def test_each_wheel_goes_to_the_first_stage_that_needs_it(tmp_path):
    (tmp_path / "sglbuild.toml").write_text(small_profile("http://x/simple"))
    t = load_profile(tmp_path / "sglbuild.toml").target(None)

    def w(name, requires=()):
        return Wheel(name, "1", f"{name}-1-py3-none-any.whl", "0" * 64, "http://x", "", requires=tuple(requires))

    wheels = {"sgltest-torch": w("sgltest-torch", ["sgltest-dep"]), "sgltest-dep": w("sgltest-dep"),
              "sgltest-kernel": w("sgltest-kernel", ["sgltest-torch"]), "sgltest-app": w("sgltest-app", ["sgltest-kernel", "sgltest-dep"])}
    stages = {x.name: x.stage for x in _assign_stages(t, wheels, Platform("3.11.2", "2.36"))}
    assert stages == {"sgltest-torch": "torch", "sgltest-dep": "torch", "sgltest-kernel": "kernel", "sgltest-app": "app"}
    with pytest.raises(ResolutionError, match="which nothing needs"):
        _assign_stages(t, {**wheels, "stray": w("stray")}, Platform("3.11.2", "2.36"))


def test_semantic_layers_leave_out_entries_that_change_nothing():
    from builder.check.diff import effective

    base = {"/etc": Entry("dir", "", 0o40755, "0:0", 1, ""), "/etc/a": Entry("file", "1", 0o100644, "0:0", 1, "")}
    classic = {"/etc": Entry("dir", "", 0o40755, "0:0", 5, ""), "/etc/b": Entry("file", "2", 0o100644, "0:0", 5, "")}
    buildkit = {"/etc/b": Entry("file", "2", 0o644, "0:0", 5, "")}  # no copy-up of /etc; mode without type bits
    a, b = effective([base, classic]), effective([base, buildkit])
    assert compare_entries(a[1], b[1], semantic=True) == []
    changed = {"/etc": Entry("dir", "", 0o40700, "0:0", 5, "")}  # a real change is kept
    assert list(effective([base, changed])[1]) == ["/etc"]
    gone = {"/etc/.wh.a": Entry("file", "", 0o644, "0:0", 5, "")}
    assert list(effective([base, gone, {"/etc/a": base["/etc/a"]}])[2]) == ["/etc/a"]  # deleted, then back: a change


# What pip 25 printed for `sglang==0.5.21` on 2026-11-24, when the index no longer served cuda-tile 1.6.0rc5.
PIP_CUDA_TILE = ("ERROR: Could not find a version that satisfies the requirement cuda-tile==1.6.0rc5 (from sglang) "
                 "(from versions: 1.6.0rc7, 1.6.0rc8, 1.6.0rc9, 1.6.0rc10, 1.6.0, 1.7.0)")


def test_a_release_passed_over_says_why_in_one_line():
    from builder.inputs.resolve import _why

    assert _why(PIP_CUDA_TILE) == "requires cuda-tile==1.6.0rc5, which the index does not serve"
    assert _why("ERROR: No matching distribution found for foo>=2") == "requires foo>=2, which the index does not serve"
    assert "\n" not in _why("ResolutionImpossible: a\nb")


def test_passed_over_lines_round_trip_and_an_empty_list_keeps_old_locks_bytes():
    from builder.inputs.lockfile import Lock, parse_lock

    lock = Lock("t", "i", Platform("3.11.2", "2.36"), {}, [])
    assert "passed_over" not in lock.to_json()  # locks written before keep their bytes, so their digests
    lock.passed_over = ("sglang 0.5.21: passed over: requires cuda-tile==1.6.0rc5, which the index does not serve",)
    assert parse_lock(lock.to_json(), "x").passed_over == lock.passed_over


def test_extras_asked_by_a_dependent_reach_the_graph():
    """torch asks for cuda-toolkit[cudart]; pip's report records extras only for what was asked directly."""
    from builder.inputs.resolve import _edges

    env = {"sys_platform": "linux", "platform_system": "Linux", "python_version": "3.11", "platform_machine": "x86_64"}
    from packaging.requirements import Requirement

    specs = [Requirement(s) for s in ('nvidia-cuda-runtime==13.0.96; extra == "cudart"', 'nvidia-nvjitlink; extra == "nvjitlink"')]
    assert [r.name for r in _edges(specs, env, set())] == []
    assert [r.name for r in _edges(specs, env, {"cudart"})] == ["nvidia-cuda-runtime"]


@pytest.mark.parametrize("repo", ["https://ci:s3cret@registry.example/sglang", "ci:s3cret@registry.example/sglang",
                                  "http://registry.example/sglang"])
def test_a_repository_given_as_a_url_is_refused_without_repeating_its_credentials(repo):
    from builder.errors import InputError
    from builder.oci import check_repo

    with pytest.raises(InputError) as info:
        check_repo(repo)
    assert "s3cret" not in str(info.value) and "registry.example" in str(info.value) and "docker login" in str(info.value)
    assert check_repo("127.0.0.1:5000/sglbuild/cache") == "127.0.0.1:5000/sglbuild/cache"


def test_credentials_never_reach_the_output_of_build_or_push(tmp_path):
    from support import run_cli

    for args in (["build", "--cache", "https://ci:s3cret@registry.example/c"], ["push", "img", "ci:s3cret@registry.example/c"]):
        r = run_cli(*args, cwd=tmp_path, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
        assert r.returncode == 2 and "s3cret" not in r.stdout + r.stderr, r.stderr


def test_an_engine_gone_mid_buildkit_build_is_the_machine_not_the_step():
    """buildx's own words when the engine stops under it (seen: Docker 26.1.5 stopped during a stage)."""
    from builder.engine.buildkit import _failure
    from builder.errors import EngineUnavailable

    lines = ["#5 [torch 2/3] RUN set -eu; ...",
             "ERROR: Cannot connect to the Docker daemon at unix:///run/dsock/docker.sock. Is the docker daemon running?"]
    err = _failure("torch", lines)
    assert isinstance(err, EngineUnavailable) and err.exit_code == 3 and "stopped answering during stage torch" in str(err)
    assert isinstance(_failure("torch", ["ERROR: failed to solve: process did not complete successfully: exit code: 1"]), BuildFailed)


def test_doctor_fails_gpu_code_a_required_library_lacks_for_this_gpu():
    from builder.check.doctor import code_check

    data = reply(libraries=[GpuCode("/sp/torch/lib/libtorch_cuda.so", ["sm_80", "sm_90"], [], 2, 0),
                            GpuCode("/sp/sgl_kernel/sm90/common_ops.abi3.so", ["sm_90a", "sm_120a"], [], 2, 0)])
    required = ["torch/lib/libtorch_cuda.so", "sgl_kernel/*/common_ops*.so"]
    failed = code_check(ImageGpuCode.of(data), required, "sm_120", True)
    assert failed.status == "fail" and "torch/lib/libtorch_cuda.so has no sm_120 SASS" in failed.detail
    passed = code_check(ImageGpuCode.of(data), required, "sm_90", True)
    assert passed.status == "pass" and "2 native" in passed.detail


@pytest.mark.parametrize("labels, status", [
    ({"io.sglbuild.require-native": json.dumps(["sgl_kernel/*/common_ops*.so"])}, "fail"),  # a glob that matches nothing
    ({"io.sglbuild.require-native": json.dumps(["torch/lib/libtorch_cuda.so"])}, "pass"),
    ({}, "pass"),  # no label: torch's CUDA library, where torch is installed, and it is native here
])
def test_verify_and_doctor_judge_the_same_image_the_same_way(labels, status):
    """Once they disagreed: a required glob that matched nothing failed verify and passed doctor (which added a default)."""
    from builder.check.doctor import code_check
    from builder.check.gpucode import required_globs

    data = reply(libraries=[GpuCode("/sp/torch/lib/libtorch_cuda.so", ["sm_120"], [], 1, 0)])
    required = required_globs(labels, data)
    by_verify = coverage(ImageGpuCode.of(data), required, "sm_120")
    by_doctor = code_check(ImageGpuCode.of(data), required, "sm_120", on_gpu=False)
    assert by_verify.status == by_doctor.status == status
    assert required_globs({}, reply(dists={"sglang": "0.5.9"})) == []  # no torch, nothing to require
