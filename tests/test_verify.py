"""verify on real images: a good one, and broken ones each failing for its own reason."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support import TEST_IMAGE, build_image, nvcc_so, run_cli, small_project

pytestmark = pytest.mark.engine
GOOD = f"{TEST_IMAGE}:verifytest"
CPU_TORCH = sorted(Path("/opt/wheels").glob("torch-*+cpu-cp311-*.whl"))
# A server stage (the stand-in SGLang) and the field report's settings, spelled for it.
SERVER = """
[[targets.verifytest.stage]]
name = "server"
requires = ["sglang==0.5.9"]

[targets.verifytest.serve]
preset = "compat"
"""
COMPAT_FLAGS = ["--host", "0.0.0.0", "--port", "8000", "--disable-cuda-graph", "--disable-custom-all-reduce", "--disable-radix-cache",
                "--attention-backend", "torch_native", "--sampling-backend", "pytorch"]


@pytest.fixture(scope="module")
def good(tmp_path_factory, docker_client, uv_wheel, sm120_so):
    """The small target, built by sglbuild: verify must pass on it."""
    tmp = tmp_path_factory.mktemp("verify")
    project, index = small_project(tmp, uv_wheel, sm120_so, name="verifytest", extra=SERVER,
                                   steps=(("lock",), ("fetch",), ("build", "--quiet")))
    yield {"project": project, "client": docker_client, "tmp": tmp}
    index.stop()


def derive(client, tag: str, dockerfile: str, files: dict[str, bytes] | None = None) -> str:
    """A broken variant of the good image (FROM it), built by the real engine."""
    return build_image(client, dockerfile, tag=tag, files=files)


def verify(image: str, cwd: Path, *args: str) -> tuple[int, dict, str]:
    r = run_cli("verify", image, "--format", "json", *args, cwd=cwd)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else {}), r.stderr


def check(report: dict, id_: str) -> dict:
    return next(c for c in report["checks"] if c["id"] == id_)


def test_good_image_passes_static_checks_and_skips_gpu(good):
    code, report, err = verify(GOOD, good["project"])
    assert code == 0, err
    assert {c["id"]: c["status"] for c in report["checks"]} == {
        "pins": "pass", "gpu-code": "pass", "shared-libs": "pass", "driver-libs": "pass", "serve-flags": "pass",
        "environment": "pass", "gpu-device": "skip", "gpu-compute": "skip", "gpu-serve": "skip"}
    assert "2 libraries with GPU code: 2 native" in check(report, "gpu-code")["detail"]  # the kernel and torch's CUDA library
    assert check(report, "serve-flags")["detail"].endswith(" ".join(COMPAT_FLAGS))
    assert report["arch_source"] == "from the image's io.sglbuild.gpu-arch label" and report["facts"]["sglang"] == "0.5.9"
    assert "no NVIDIA runtime" in check(report, "gpu-device")["detail"]
    assert "libcuda.so.1 provided at run time" in check(report, "shared-libs")["detail"]


def test_text_and_junit_reports(good, tmp_path):
    r = run_cli("verify", GOOD, cwd=good["project"])
    assert r.returncode == 0 and "PASS  pins" in r.stdout and "PASSED: 6 passed, 0 failed, 3 skipped" in r.stdout
    out = tmp_path / "verify.xml"
    r = run_cli("verify", GOOD, "--format", "junit", "--output", str(out), cwd=good["project"])
    suite = ET.parse(out).getroot()
    assert suite.tag == "testsuite" and suite.get("failures") == "0" and suite.get("skipped") == "3"


def test_gpu_require_fails_without_a_gpu(good):
    code, report, err = verify(GOOD, good["project"], "--gpu", "require")
    assert code == 1 and check(report, "gpu-device")["status"] == "fail"
    assert "failed 3 check(s): GPU device, GPU compute, GPU serving" in err


def test_could_not_run_differs_from_failed(good):
    r = run_cli("verify", f"{TEST_IMAGE}:does-not-exist", cwd=good["project"])
    assert r.returncode == 2 and "no image" in r.stderr
    r = run_cli("verify", GOOD, cwd=good["project"], env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert r.returncode == 3


def test_missing_libnuma_fails_shared_libs(good):
    img = derive(good["client"], "no-libnuma", f"FROM {GOOD}\nRUN rm -f /usr/lib/x86_64-linux-gnu/libnuma.so.1* && ldconfig\n")
    code, report, _ = verify(img, good["project"])
    assert code == 1
    c = check(report, "shared-libs")
    assert c["status"] == "fail" and "libnuma.so.1 not found for sgltest_kernel/common_ops.so" in c["detail"]


def test_kernel_without_the_target_arch_fails_gpu_code(good):
    sm90 = nvcc_so("sm90_only", ["-gencode", "arch=compute_90a,code=sm_90a", "-gencode", "arch=compute_80,code=sm_80"])
    site = "/opt/venv/lib/python3.11/site-packages"
    img = derive(good["client"], "no-sm120", f"FROM {GOOD}\nCOPY common_ops.so {site}/sgltest_kernel/common_ops.so\n",
                 {"common_ops.so": sm90})
    code, report, _ = verify(img, good["project"])
    assert code == 1
    c = check(report, "gpu-code")
    assert c["status"] == "fail" and "sgltest_kernel/common_ops.so has no sm_120 SASS (sm_80 sm_90a)" in c["detail"]


def test_default_flag_the_images_sglang_rejects_fails_serve_flags(good):
    bad_flags = json.dumps(["--host", "0.0.0.0", "--disable-flashinfer"])
    img = derive(good["client"], "flags-bad", f"FROM {GOOD}\nLABEL io.sglbuild.serve-flags='{bad_flags}'\n")
    code, report, _ = verify(img, good["project"])
    c = check(report, "serve-flags")
    assert code == 1 and c["status"] == "fail"
    assert "rejects the flags from the io.sglbuild.serve-flags label" in c["detail"]
    assert c["detail"].endswith("error: unrecognized arguments: --disable-flashinfer")  # the parser's reason, not a warning


def test_a_torch_without_its_cuda_library_fails_gpu_code(good):
    """torch's CUDA library gone (as in a CPU build of torch), and the image requires it native: GPU code fails."""
    native = json.dumps(["torch/lib/libtorch_cuda.so", "sgltest_kernel/common_ops.so"])
    img = derive(good["client"], "no-cuda-torch", f"FROM {GOOD}\n"
                 "RUN python -c \"import os, sysconfig; os.remove(sysconfig.get_paths()['purelib'] + '/torch/lib/libtorch_cuda.so')\"\n"
                 f"LABEL io.sglbuild.require-native='{native}'\n")
    code, report, _ = verify(img, good["project"])
    assert code == 1
    c = check(report, "gpu-code")
    assert c["status"] == "fail" and "torch/lib/libtorch_cuda.so: no library with GPU code matches" in c["detail"]
    assert check(report, "pins")["status"] == "pass"  # the lock's own wheels are still as locked


@pytest.mark.full  # the same verdict as above, with a real CPU build of torch installed in its place (a 200 MB wheel)
@pytest.mark.skipif(not CPU_TORCH, reason="no CPU build of torch on this machine (/opt/wheels)")
def test_cpu_only_torch_fails_gpu_code(good, tmp_path):
    wheel = CPU_TORCH[0]
    native = json.dumps(["torch/lib/libtorch_cuda.so", "sgltest_kernel/common_ops.so"])
    img = derive(good["client"], "cpu-torch",
                 f"FROM {GOOD}\nCOPY {wheel.name} /tmp/\n"  # torch's CPU build in place of the small torch's CUDA library
                 "RUN python -c \"import os, sysconfig; os.remove(sysconfig.get_paths()['purelib'] + '/torch/lib/libtorch_cuda.so')\"\n"
                 f"RUN pip install --no-deps --no-index /tmp/{wheel.name}\n"
                 f"LABEL io.sglbuild.require-native='{native}'\n", {wheel.name: wheel.read_bytes()})
    code, report, _ = verify(img, good["project"])
    assert code == 1
    c = check(report, "gpu-code")
    assert c["status"] == "fail" and "torch/lib/libtorch_cuda.so: no library with GPU code matches" in c["detail"]
    assert check(report, "pins")["status"] == "pass"  # the lock's own wheels are still as locked


def test_serve_dry_run_prints_every_flag_the_server_gets(good):
    client, project = good["client"], good["project"]
    img = GOOD
    r = run_cli("serve", img, "--preset", "tinyllama", "--dry-run", cwd=project)
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.strip()
    assert cmd.startswith("docker run --runtime nvidia --gpus all -p 127.0.0.1:30001:8000 -v ")  # loopback only
    assert "/.cache/huggingface:/root/.cache/huggingface -e PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True -e FLASHINFER" in cmd
    assert "-e CUTE_DSL_CACHE_DIR=/root/.cache/cute-dsl --shm-size 8g" in cmd
    # The image's default flags are spelled out, not hidden in its entrypoint.
    assert cmd.endswith(f"--name sglang-tinyllama-1-1b-chat-v1-0 --entrypoint python {img} -m sglang.launch_server "
                        f"{' '.join(COMPAT_FLAGS)} --model-path TinyLlama/TinyLlama-1.1B-Chat-v1.0 "
                        "--mem-fraction-static 0.15 --max-total-tokens 2048 --trust-remote-code --log-level info")
    r = run_cli("serve", img, "--preset", "tinyllama", "--public", "--api-key", "s3cret", "--dry-run", cwd=project)
    assert "-p 0.0.0.0:30001:8000" in r.stdout and r.stdout.strip().endswith("--api-key s3cret")  # public means a key
    r = run_cli("serve", img, "--preset", "qwen2.5-3b", "--port", "31000", "--dry-run", cwd=project)
    assert "-p 127.0.0.1:31000:8000" in r.stdout and "--shm-size 16g" in r.stdout and "--mem-fraction-static 0.25 --max-total-tokens 4096" in r.stdout
    # Errors, one line each: no GPU here (doctor), a port in use, a missing model path, a missing image, rejected flags.
    r = run_cli("serve", img, "--preset", "tinyllama", "--port", "31001", cwd=project)
    # serve runs doctor first: with no driver here it refuses, naming the first failed check and what to do.
    assert r.returncode == 1 and "cannot serve here: NVIDIA driver: nvidia-smi is not installed" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run_cli("serve", img, "--preset", "tinyllama", "--port", str(s.getsockname()[1]), cwd=project)
    assert r.returncode == 2 and "is in use" in r.stderr
    r = run_cli("serve", img, "--model", "./no-such-model", "--dry-run", cwd=project)
    assert r.returncode == 2 and "model path ./no-such-model does not exist" in r.stderr
    r = run_cli("serve", f"{TEST_IMAGE}:nope", "--preset", "tinyllama", "--dry-run", cwd=project)
    assert r.returncode == 2 and "no image" in r.stderr
    bad = json.dumps(["--disable-flashinfer"])
    img = derive(client, "serve-bad", f"FROM {GOOD}\nLABEL io.sglbuild.serve-flags='{bad}'\n")
    r = run_cli("serve", img, "--preset", "tinyllama", "--dry-run", cwd=project)
    assert r.returncode == 1 and "rejects the server flags the image itself gives" in r.stderr and "--disable-flashinfer" in r.stderr


# -- serve with the user's own SGLang flags, checked before any container starts; its compile caches -----

EXTRA = ["--context-length", "4096", "--enable-metrics", "--served-model-name", "tiny", "--tp-size", "2"]


def _containers_of(client, image: str) -> set[str]:
    return {c.id for c in client.containers.list(all=True, filters={"ancestor": image})}


def test_serve_gives_the_server_any_flag_after_the_double_dash_exactly(good, engine):
    import shlex
    import subprocess

    from builder.check.server import cache_volume
    from builder.contracts import CACHE_VARIABLES

    client, project = good["client"], good["project"]
    r = run_cli("serve", GOOD, "--preset", "tinyllama", "--dry-run", "--", *EXTRA, cwd=project)
    assert r.returncode == 0, r.stderr
    argv = shlex.split(r.stdout)
    volume = cache_volume(engine.images.get(GOOD))
    assert argv[-len(EXTRA):] == EXTRA and f"{volume}:/root/.cache" in argv  # after the image's and the preset's flags
    assert run_cli("serve", GOOD, "--preset", "tinyllama", "--dry-run", "--no-cache-volume", cwd=project).stdout.count("-v ") == 1
    # The very command printed, created by the engine's own CLI (no NVIDIA runtime here: created, not started), and read
    # back from the container's config: the flags, the caches' variables and mount reach the container as printed.
    create = ["docker", "create", *[a for a in argv[2:] if a not in ("--runtime", "nvidia", "--gpus", "all")]]
    create[create.index("--name") + 1] = "sglbuild-test-serve-flags"
    made = subprocess.run(create, capture_output=True, text=True)
    try:
        assert made.returncode == 0, made.stderr
        config = client.api.inspect_container(made.stdout.strip())
        image_at = argv.index(GOOD)
        assert config["Config"]["Entrypoint"] == ["python"] and config["Config"]["Cmd"] == argv[image_at + 1:]
        assert {f"{k}={v}" for k, v in CACHE_VARIABLES.items()} <= set(config["Config"]["Env"])
        mounts = {m["Destination"]: m for m in config["Mounts"]}
        assert mounts["/root/.cache"]["Type"] == "volume" and mounts["/root/.cache"]["Name"] == volume
        assert mounts["/root/.cache/huggingface"]["Type"] == "bind"
    finally:
        subprocess.run(["docker", "rm", "-f", "sglbuild-test-serve-flags"], capture_output=True)
        subprocess.run(["docker", "volume", "rm", volume], capture_output=True)  # docker create made it, unlabelled


def test_serve_refuses_a_flag_before_any_container_starts(good, engine):
    client, project = good["client"], good["project"]
    before, volumes = _containers_of(client, GOOD), {v.name for v in client.volumes.list()}
    # A flag the image's SGLang rejects: one line, exit 2, even without --dry-run (nothing started, no volume made).
    r = run_cli("serve", GOOD, "--preset", "tinyllama", "--", "--context-length", "4096", "--no-such-flag", cwd=project)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "rejects the flags after --" in r.stderr and "unrecognized arguments: --no-such-flag" in r.stderr
    r = run_cli("serve", GOOD, "--preset", "tinyllama", "--", "--quantization", "int3", cwd=project)
    assert r.returncode == 2 and "invalid choice: 'int3'" in r.stderr
    # What serve sets itself is not passed after --.
    r = run_cli("serve", GOOD, "--preset", "tinyllama", "--dry-run", "--", "--port=9000", cwd=project)
    assert r.returncode == 2 and "--port is serve's to set" in r.stderr and "use serve's --port" in r.stderr
    # A backend the image's evidence says cannot run on its GPU: one line with the evidence, unless --force.
    r = run_cli("serve", GOOD, "--preset", "tinyllama", "--", "--attention-backend", "flashinfer", cwd=project)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "select what cannot run on sm_120: attention flashinfer" in r.stderr and "--force" in r.stderr
    r = run_cli("serve", GOOD, "--preset", "tinyllama", "--dry-run", "--force", "--", "--attention-backend", "flashinfer", cwd=project)
    assert r.returncode == 0 and r.stdout.strip().endswith("--attention-backend flashinfer")
    assert _containers_of(client, GOOD) == before and {v.name for v in client.volumes.list()} == volumes


def test_compile_caches_are_one_volume_per_image_content(good, engine):
    from builder.ship.serve import compile_caches

    client = good["client"]
    relabelled = derive(client, "caches-relabelled", f"FROM {GOOD}\nLABEL org.example.note=same-files\n")
    changed = derive(client, "caches-changed", f"FROM {GOOD}\nRUN echo other > /etc/other-content\n")
    made = []
    try:
        first, new = compile_caches(engine, GOOD)
        made.append(first.name)
        assert new and first.labels["io.sglbuild.cache-content"] == engine.images.get(GOOD).content_key
        again, new = compile_caches(engine, GOOD)
        assert (again.name, new) == (first.name, False)  # a restart reads what the first server compiled
        same, new = compile_caches(engine, relabelled)
        assert (same.name, new) == (first.name, False)  # the same files under another label: the same caches
        other, new = compile_caches(engine, changed)
        made.append(other.name)
        assert new and other.name != first.name  # another image's content never reads these
        r = run_cli("doctor", GOOD, "--json", cwd=good["project"])
        assert r.stdout.startswith("{"), r.stderr
        line = next(c for c in json.loads(r.stdout)["checks"] if c["id"] == "cache-volume")
        assert f"serve would use volume {first.name} (" in line["detail"] and " MB of kept compiles" in line["detail"]
    finally:
        for name in made:
            engine.volumes.remove(name)


# -- what an image must not carry: its own copy of the driver where the loader looks first -------------

@pytest.fixture(scope="module")
def stub(tmp_path_factory) -> bytes:
    """A link-time stub like CUDA's lib64/stubs/libcuda.so: SONAME libcuda.so.1, functions that return an error."""
    import subprocess

    d = tmp_path_factory.mktemp("stub")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(d / "libcuda.so"), "-x", "c", "-"],
                   input=b"int cuInit(unsigned f){return 34;} int cuDriverGetVersion(int* v){*v=0; return 34;}\n", check=True)
    return (d / "libcuda.so").read_bytes()


def loader_says(client, image: str) -> str:
    """The image's own loader: where ldd resolves the kernel library's libcuda.so.1 now (after the image's ldconfig)."""
    out = client.containers.run(image, ["sh", "-c", f"ldconfig; ldd {SITE}/sgltest_kernel/common_ops.so | grep libcuda"],
                                remove=True, network_disabled=True, entrypoint=[])
    return out.decode().strip()


SITE = "/opt/venv/lib/python3.11/site-packages"


def test_a_clean_image_takes_the_drivers_libraries_from_the_runtime(good):
    code, report, _ = verify(GOOD, good["project"])
    c = check(report, "driver-libs")
    assert c["status"] == "pass" and "come from the NVIDIA container runtime (mounted in /usr/lib/x86_64-linux-gnu)" in c["detail"]


def test_a_stub_on_ld_library_path_shadows_the_driver(good, stub):
    img = derive(good["client"], "stub-env", f"FROM {GOOD}\nCOPY libcuda.so /opt/stub/libcuda.so.1\nENV LD_LIBRARY_PATH=/opt/stub\n",
                 {"libcuda.so": stub})
    assert "=> /opt/stub/libcuda.so.1" in loader_says(good["client"], img)  # the loader agrees
    code, report, _ = verify(img, good["project"])
    c = check(report, "driver-libs")
    assert code == 1 and c["status"] == "fail"
    assert c["detail"].startswith("/opt/stub/libcuda.so.1 would be loaded as libcuda.so.1 instead of the host driver's: "
                                  "LD_LIBRARY_PATH=/opt/stub (the image's ENV) puts it before")
    assert "ldd resolves libcuda.so.1 to /opt/stub/libcuda.so.1" in c["detail"]


def test_a_stub_under_ld_so_conf_d_shadows_the_driver(good, stub):
    """CUDA's stub copied under its own name: ldconfig registers it under its SONAME, libcuda.so.1, and the
    conf file sorts before the runtime's directory's."""
    img = derive(good["client"], "stub-conf", f"FROM {GOOD}\nCOPY libcuda.so /opt/cuda-stubs/libcuda.so\n"
                 "RUN echo /opt/cuda-stubs > /etc/ld.so.conf.d/000-cuda-stubs.conf && ldconfig\n", {"libcuda.so": stub})
    assert "=> /opt/cuda-stubs/libcuda.so.1" in loader_says(good["client"], img)
    code, report, _ = verify(img, good["project"])
    c = check(report, "driver-libs")
    assert code == 1 and c["status"] == "fail" and c["detail"].startswith("/opt/cuda-stubs/libcuda.so would be loaded as libcuda.so.1")
    assert "listed by /etc/ld.so.conf.d/000-cuda-stubs.conf, which ldconfig reads before the runtime's" in c["detail"]


def test_a_gpu_librarys_runpath_to_a_stub_shadows_the_driver(good, stub, tmp_path):
    import subprocess

    (tmp_path / "libcuda.so.1").write_bytes(stub)
    lib = nvcc_so("rpath_ops", ["-gencode", "arch=compute_120a,code=sm_120a"],
                  ["-Xlinker", "--no-as-needed", "-Xlinker", "-rpath=/opt/vendored", "-L", "{stubs}", "-l:libcuda.so.1"])
    assert b"/opt/vendored" in lib
    img = derive(good["client"], "stub-rpath", f"FROM {GOOD}\nCOPY libcuda.so /opt/vendored/libcuda.so.1\n"
                 f"COPY rpath_ops.so {SITE}/sgltest_kernel/rpath_ops.so\n", {"libcuda.so": stub, "rpath_ops.so": lib})
    out = good["client"].containers.run(img, ["ldd", f"{SITE}/sgltest_kernel/rpath_ops.so"], remove=True, entrypoint=[])
    assert "libcuda.so.1 => /opt/vendored/libcuda.so.1" in out.decode()
    code, report, _ = verify(img, good["project"])
    c = check(report, "driver-libs")
    assert code == 1 and c["status"] == "fail"
    assert f"the DT_RUNPATH of {SITE}/sgltest_kernel/rpath_ops.so (/opt/vendored)" in c["detail"]
    assert subprocess.run(["true"]).returncode == 0


def test_cuda_compat_is_said_and_refused_on_rtx_cards(good, stub):
    img = derive(good["client"], "stub-compat", f"FROM {GOOD}\nCOPY libcuda.so /usr/local/cuda-12.8/compat/libcuda.so.1\n"
                 "ENV LD_LIBRARY_PATH=/usr/local/cuda-12.8/compat\n", {"libcuda.so": stub})
    code, report, _ = verify(img, good["project"], "--arch", "sm_120,sm_100")
    by_arch = {c["arch"]: c for c in report["checks"] if c["id"] == "driver-libs"}
    assert code == 1 and by_arch["sm_120"]["status"] == "fail" and "do not support forward compatibility" in by_arch["sm_120"]["detail"]
    assert by_arch["sm_100"]["status"] == "warn" and "legitimate on data-center GPUs (sm_100) only" in by_arch["sm_100"]["detail"]


def test_a_stub_off_every_search_path_is_carried_harmlessly(good, stub):
    """FlashInfer's JIT links with CUDA's stub (lib64/stubs): kept where the loader never looks, it is only reported."""
    img = derive(good["client"], "stub-harmless", f"FROM {GOOD}\nCOPY libcuda.so /opt/cuda/lib64/stubs/libcuda.so\n", {"libcuda.so": stub})
    code, report, _ = verify(img, good["project"])
    c = check(report, "driver-libs")
    assert code == 0 and c["status"] == "pass" and "also carries /opt/cuda/lib64/stubs/libcuda.so" in c["detail"]
