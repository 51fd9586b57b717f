"""Test helpers: real wheels, a real PEP 503 index on loopback, and a CLI runner."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from packaging.utils import canonicalize_name

from testcache import CACHE, locked, made_once, tool_version  # the suite's cache: what is made once and kept between runs

ROOT = Path(__file__).resolve().parent.parent
SGLBUILD = [sys.executable, "-m", "builder.cli"]
TEST_IMAGE = "sglbuild-test/app"
UV_VERSION = "0.13.9"



# A stand-in for SGLang 0.5.9 with some of its real server flags (no --disable-flashinfer), so the
# image's own parser is what accepts or rejects flags; launch_server prints the arguments it got.
FAKE_SGLANG = {
    "sglang/__init__.py": b"__version__ = '0.5.9'\n",
    "sglang/srt/__init__.py": b"",
    "sglang/srt/server_args.py": b"""
class ServerArgs:
    @staticmethod
    def add_cli_args(p):
        p.add_argument('--model-path', required=True)
        p.add_argument('--host'); p.add_argument('--port', type=int)
        p.add_argument('--attention-backend', choices=['torch_native', 'triton', 'flashinfer', 'fa3'])
        p.add_argument('--sampling-backend', choices=['flashinfer', 'pytorch'])
        p.add_argument('--mem-fraction-static', type=float); p.add_argument('--max-total-tokens', type=int)
        p.add_argument('--log-level'); p.add_argument('--api-key')
        p.add_argument('--tp-size', '--tensor-parallel-size', dest='tp_size', type=int, default=1)
        p.add_argument('--context-length', type=int); p.add_argument('--served-model-name')
        p.add_argument('--quantization', choices=['fp8', 'awq', 'gptq']); p.add_argument('--chat-template')
        p.add_argument('--enable-metrics', action='store_true')
        for f in ('--disable-cuda-graph', '--disable-radix-cache', '--disable-custom-all-reduce', '--trust-remote-code'):
            p.add_argument(f, action='store_true')
""",
    "sglang/launch_server.py": b"import json, sys\nprint(json.dumps(sys.argv[1:]))\n",
}


def make_wheel(directory: Path, name: str, version: str, files: dict[str, bytes] | None = None,
               requires: list[str] | None = None, tag: str = "py3-none-any", executable: tuple[str, ...] = ()) -> Path:
    """Write a real, installable wheel (deterministic bytes for the same inputs)."""
    dist = name.replace("-", "_")
    files = dict(files or {f"{dist}/__init__.py": f"__version__ = {version!r}\n".encode()})
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires or []]
    files[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{info}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: sglbuild-tests\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{dist}-{version}-{tag}.whl"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name_, data in files.items():
            zi = zipfile.ZipInfo(name_, date_time=(2025, 9, 18, 0, 0, 0))
            zi.external_attr = (0o755 if name_ in executable else 0o644) << 16
            zf.writestr(zi, data)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PackageIndex:
    """A PEP 503 simple index served from a directory on 127.0.0.1.

    ``delay`` slows every file response down (for interrupt tests); ``tamper`` maps a
    file name to bytes served instead of the real file (for hash-mismatch tests).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "simple").mkdir(parents=True, exist_ok=True)
        self.delay = 0.0
        self.tamper: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        index = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):  # noqa: N802
                index.requests.append((self.path, self.headers.get("Range")))
                name = Path(self.path.split("?")[0]).name
                if name in index.tamper:
                    data = index.tamper[name]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if index.delay and name.endswith(".whl"):
                    return self._slow(name)
                return super().do_GET()

            def _slow(self, name):
                path = Path(self.translate_path(self.path))
                data = path.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                try:
                    for i in range(start, len(data), 4096):
                        self.wfile.write(data[i:i + 4096])
                        time.sleep(index.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/simple"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, wheel: Path) -> Path:
        project = canonicalize_name(wheel.name.split("-")[0])
        d = self.root / "simple" / project
        d.mkdir(parents=True, exist_ok=True)
        dest = d / wheel.name
        if wheel.resolve() != dest.resolve():
            shutil.copy2(wheel, dest)
        links = "".join(f'<a href="{html.escape(p.name)}#sha256={sha256(p)}">{html.escape(p.name)}</a>\n'
                        for p in sorted(d.glob("*.whl")))
        (d / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
        return dest

    def remove(self, filename: str) -> None:
        for p in (self.root / "simple").glob(f"*/{filename}"):
            p.unlink()
            self.add_index_only(p.parent)

    def add_index_only(self, d: Path) -> None:
        links = "".join(f'<a href="{html.escape(p.name)}#sha256={sha256(p)}">{html.escape(p.name)}</a>\n'
                        for p in sorted(d.glob("*.whl")))
        (d / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `sglbuild` command (as a user would) and capture its output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run([*SGLBUILD, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def tar_bytes(files: dict[str, bytes], mtime: int = 0) -> bytes:
    """FILES as an uncompressed tar, for put_archive, a build context or a layer."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(client, dockerfile: str, *, tag: str | None = None, files: dict[str, bytes] | None = None,
                nocache: bool = False) -> str:
    """An image built by the real engine from DOCKERFILE and FILES (a variant of a good image, a hand-made one).

    TAG (a bare name goes under the suite's repository, sglbuild-test/app, which the session removes); returns
    the tag, or the image's ID when it has none.
    """
    import io

    ref = None if tag is None else tag if ":" in tag else f"{TEST_IMAGE}:{tag}"
    context = io.BytesIO(tar_bytes({"Dockerfile": dockerfile.encode(), **(files or {})}))
    image, _ = client.images.build(fileobj=context, custom_context=True, tag=ref, rm=True, nocache=nocache, network_mode="none")
    return ref or image.id


def need_nvcc() -> str:
    found = shutil.which("nvcc")
    if found is None:
        import pytest

        pytest.skip("nvcc is not installed (CUDA toolkit): no real GPU binaries to build")
    return found


def nvcc_so(name: str, gencode: list[str], link: list[str] = ()) -> bytes:
    """A real shared object with GPU code compiled by nvcc (no CUDA runtime needed to read it); made once, then kept in
    the suite's cache (nvcc's output differs from run to run: a new one would change every stage key that installs it).
    LINK: nvcc's link options; each -l:LIB gets a stand-in library, in the directory "{stubs}" names."""
    source = 'extern "C" __global__ void scale(float* x, float a) { x[threadIdx.x] *= a; }\n'

    def make(d: Path) -> Path:
        for lib in _linked_stubs(link):  # the libraries it links against, as stand-ins (the image has the real ones)
            subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{lib}", "-o", str(d / lib), "-x", "c", "-"],
                           input=b"int sglbuild_stub(void){return 0;}\n", check=True)
        (d / f"{name}.cu").write_text(source)
        args = [a if a != "{stubs}" else str(d) for a in link]
        subprocess.run(["nvcc", "-shared", "-Xcompiler", "-fPIC", "-cudart", "none", "-o", str(d / f"{name}.so"),
                        str(d / f"{name}.cu"), *gencode, *args], check=True, capture_output=True)
        return d / f"{name}.so"

    return made_once("nvcc", [tool_version(["nvcc"]), tool_version(["gcc"]), name, gencode, list(link), source], make)


def sm120_kernel() -> bytes:
    """The small target's kernel (and its torch's CUDA library): sm_120a SASS, linked against libnuma.so.1 and libcuda.so.1."""
    return nvcc_so("common_ops", ["-gencode", "arch=compute_120a,code=sm_120a"],
                   ["-Xlinker", "--no-as-needed", "-L", "{stubs}", "-l:libnuma.so.1", "-l:libcuda.so.1"])


def arm64_kernel() -> bytes:
    """The two-platform target's aarch64 kernel: sm_121a SASS (DGX Spark), linked against libnuma.so.1. Needs the aarch64
    binutils, installed here when missing (as root), as ci/registry.sh installs the registry."""
    if shutil.which("aarch64-linux-gnu-ld") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "binutils-aarch64-linux-gnu"], check=True, capture_output=True, timeout=600)
    return aarch64_so("common_ops", ["-gencode", "arch=compute_121a,code=sm_121a"])


def _linked_stubs(link: list[str] | tuple[str, ...]) -> list[str]:
    return [a.removeprefix("-l:") for a in link if a.startswith("-l:")]


DEBIAN_BASE = """suite = "bookworm"
packages = ["python3", "python3-venv", "libnuma1"]
source_date_epoch = 1758153600"""
REGISTRY_BASE = """image = "debian@sha256:""" + "0" * 64 + """"
python = "3.11.2"
glibc = "2.36"
source_date_epoch = 1758153600"""


def small_profile(index_url: str, *, name: str = "smalltest", app_version: str = "1.0", smoke: list[str] | None = None,
                  tools: bool = True, extra: str = "", native: bool = True, registry_base: bool = False,
                  platforms: dict[str, list[str]] | None = None, bytecode: bool = True) -> str:
    """A small real target; ``registry_base`` declares a registry base instead (lock then needs no mirror);
    ``platforms`` declares [platforms] (an image per platform) instead of gpu_arch = "sm_120"; ``bytecode``: its
    wheels installed with byte-code, as the real targets are."""
    smoke = smoke if smoke is not None else ["python -c 'import sgltest_app, sgltest_kernel; print(sgltest_app.__version__)'"]
    smoke_toml = "[" + ", ".join(repr(s).replace("'", '"') if "'" not in s else '"' + s.replace('"', '\\"') + '"' for s in smoke) + "]"
    tools_toml = f'tools = ["uv=={UV_VERSION}"]' if tools else ""
    return f"""
default_target = "{name}"

[targets.{name}]
description = "sglbuild's small integration target"
image = "{TEST_IMAGE}"
tag = "{name}"
{_platforms_toml(platforms)}
require_native = {'["sgltest_kernel/common_ops.so"]' if native else "[]"}
source = "https://example.invalid/sglbuild"
smoke = {smoke_toml}

[targets.{name}.base]
{REGISTRY_BASE if registry_base else DEBIAN_BASE}

[targets.{name}.python]
index = "{index_url}"
{tools_toml}
compile_bytecode = {"true" if bytecode else "false"}

[[targets.{name}.stage]]
name = "torch"
requires = ["sgltest-torch==2.9.1"]

[[targets.{name}.stage]]
name = "kernel"
requires = ["sgltest-kernel==0.3.21"]

[[targets.{name}.stage]]
name = "app"
requires = ["sgltest-app=={app_version}"]
{extra}
"""


def _platforms_toml(platforms: dict[str, list[str]] | None) -> str:
    if platforms is None:
        return 'gpu_arch = "sm_120"'
    return "platforms = { " + ", ".join(f'"{p}" = {json.dumps(archs)}' for p, archs in platforms.items()) + " }"


def aarch64_so(name: str, gencode: list[str], needed: tuple[str, ...] = ("libnuma.so.1",)) -> bytes:
    """A real aarch64 shared object holding GPU code (nvcc's fatbin for GENCODE in .nv_fatbin), linked against NEEDED,
    made with the host's nvcc and binutils-aarch64-linux-gnu (the suite's fixture installs them); made once, then kept."""
    source = 'extern "C" __global__ void scale(float* x, float a) { x[threadIdx.x] *= a; }\n'

    def make(d: Path) -> Path:
        (d / "k.cu").write_text(source)
        subprocess.run(["nvcc", "-fatbin", *gencode, "-o", str(d / "k.fatbin"), str(d / "k.cu")], check=True, capture_output=True)
        (d / "ops.S").write_text('  .section .nv_fatbin,"a"\n  .balign 8\n  .incbin "k.fatbin"\n')
        subprocess.run(["aarch64-linux-gnu-as", "-o", str(d / "ops.o"), str(d / "ops.S")], check=True, cwd=d)
        subprocess.run(["aarch64-linux-gnu-as", "-o", str(d / "empty.o")], input=b"", check=True)
        for lib in needed:
            subprocess.run(["aarch64-linux-gnu-ld", "-shared", "-soname", lib, "-o", str(d / lib), str(d / "empty.o")], check=True)
        subprocess.run(["aarch64-linux-gnu-ld", "-shared", "-soname", f"{name}.so", "-o", str(d / f"{name}.so"), str(d / "ops.o"),
                        "--no-as-needed", "-L", str(d), *(f"-l:{lib}" for lib in needed)], check=True)
        return d / f"{name}.so"

    return made_once("nvcc", [tool_version(["nvcc"]), tool_version(["aarch64-linux-gnu-ld"]), name, gencode, list(needed), source], make)


def populate_index(index: PackageIndex, tmp: Path, uv_wheel: Path, sm120_so: bytes | None) -> None:
    src = tmp / "built-wheels"
    # The small torch carries a CUDA library as torch does: the compat flags' torch_native attention runs on it.
    torch_files = {"sgltest_torch/__init__.py": b"__version__ = '2.9.1'\n"}
    if sm120_so is not None:
        torch_files["torch/lib/libtorch_cuda.so"] = sm120_so
    index.add(make_wheel(src, "sgltest-torch", "2.9.1", files=torch_files, requires=["sgltest-dep>=1"]))
    index.add(make_wheel(src, "sgltest-dep", "1.2"))
    kernel_files = {"sgltest_kernel/__init__.py": b"KIND = 'kernel'\n"}
    if sm120_so is not None:
        kernel_files["sgltest_kernel/common_ops.so"] = sm120_so
    index.add(make_wheel(src, "sgltest-kernel", "0.3.21", files=kernel_files, requires=["sgltest-torch"]))
    for v in ("1.0", "1.1"):
        index.add(make_wheel(src, "sgltest-app", v, requires=["sgltest-torch==2.9.1", "sgltest-kernel==0.3.21",
                                                               'sgltest-windows-only; sys_platform == "win32"']))
    # Two wheels that ship the same module with different contents (as flashinfer-python and
    # torch-c-dlpack-ext both ship build_backend.py): the one later in the lock must win. The .pth
    # makes every Python start import a module (as cuda-bindings and setuptools do).
    for who in ("a", "b"):
        index.add(make_wheel(src, f"sgltest-clash-{who}", "1.0", files={
            f"sgltest_clash_{who}/__init__.py": b"", "sgltest_clash.py": f"WHO = {who!r}\n".encode(),
            f"sgltest_clash_{who}.pth": f"import sgltest_clash_{who}\n".encode()}))
    index.add(make_wheel(src, "sglang", "0.5.9", files=dict(FAKE_SGLANG)))
    index.add(uv_wheel)


MULTI = {"linux/amd64": ["sm_120"], "linux/arm64": ["sm_121"]}  # the two-platform target: RTX 50 and DGX Spark


def multi_project(tmp: Path, uv_wheels: dict[str, Path], kernels: dict[str, bytes], name: str = "multitest",
                  platforms: dict[str, list[str]] | None = None, steps: tuple[tuple[str, ...], ...] = (("lock",), ("fetch",)),
                  timeout: int = 600) -> tuple[Path, PackageIndex]:
    """The small target on two platforms: its kernel wheel is a platform wheel per machine (KERNELS: machine -> .so);
    TIMEOUT bounds each of STEPS."""
    index = PackageIndex(tmp / "index")
    src = tmp / "built-wheels"
    index.add(make_wheel(src, "sgltest-torch", "2.9.1", requires=["sgltest-dep>=1"]))
    index.add(make_wheel(src, "sgltest-dep", "1.2"))
    for machine, so in kernels.items():
        index.add(make_wheel(src, "sgltest-kernel", "0.3.21", requires=["sgltest-torch"], tag=f"py3-none-manylinux2014_{machine}",
                             files={"sgltest_kernel/__init__.py": b"KIND = 'kernel'\n", "sgltest_kernel/common_ops.so": so}))
    index.add(make_wheel(src, "sgltest-app", "1.0", requires=["sgltest-torch==2.9.1", "sgltest-kernel==0.3.21"]))
    for wheel in uv_wheels.values():
        index.add(wheel)
    project = tmp / "project"
    project.mkdir()
    (project / "sglbuild.toml").write_text(small_profile(index.url, name=name, platforms=platforms or MULTI))
    run_steps(project, steps, timeout)
    return project, index


def uv_wheel_for(machine: str) -> Path:
    """The real uv wheel for MACHINE, fetched once from PyPI, then cached."""
    d = CACHE / "uv"
    with locked(f"uv-{machine}"):  # the prefetch and a test may ask at once
        found = sorted(d.glob(f"uv-{UV_VERSION}-*manylinux_2_17_{machine}*.whl"))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--isolated", "--quiet", "--no-deps",
                            "--only-binary=:all:", "--platform", f"manylinux_2_17_{machine}", "--python-version", "3.11",
                            "--index-url", "https://pypi.org/simple", "-d", str(d), f"uv=={UV_VERSION}"], check=True, timeout=600)
            found = sorted(d.glob(f"uv-{UV_VERSION}-*manylinux_2_17_{machine}*.whl"))
    return found[0]


def prepare_family(tmp: Path, uv: Callable[[str], Path], client=None) -> tuple[Path, PackageIndex]:
    """The two-platform target locked in TMP, and both its bases bootstrapped into sglbuild's base cache, touching no
    engine (CLIENT, if given, says which bases an engine has already): the emulated arm64 one first, the long pole, then
    amd64, every small target's base, unless a build made it meanwhile."""
    from builder.assemble.base import bootstrap_to_cache
    from builder.assemble.plan import base_ref
    from builder.inputs.lockfile import read_lock
    from builder.inputs.profile import load_profile

    project, index = multi_project(tmp, {"x86_64": uv("x86_64"), "aarch64": uv("aarch64")},
                                   {"x86_64": sm120_kernel(), "aarch64": arm64_kernel()}, steps=(("lock",),))
    profile = load_profile(project / "sglbuild.toml")
    target = profile.target(None)
    for platform in sorted(target.platform_names, key=lambda p: p == "linux/amd64"):
        lock = read_lock(profile, target, platform)
        if client is None or not any(base_ref(target, lock) in image.tags for image in client.images.list("sglbuild/base")):
            bootstrap_to_cache(target, lock)
    return project, index


def small_project(tmp: Path, uv_wheel: Path, sm120_so: bytes | None, name: str = "smalltest",
                  steps: tuple[tuple[str, ...], ...] = (("lock",), ("fetch",)), extra: str = "") -> tuple[Path, PackageIndex]:
    """A project directory for the small target, its index on loopback, and STEPS run on it."""
    index = PackageIndex(tmp / "index")
    populate_index(index, tmp, uv_wheel, sm120_so)
    project = tmp / "project"
    project.mkdir()
    (project / "sglbuild.toml").write_text(small_profile(index.url, name=name, extra=extra))
    run_steps(project, steps)
    return project, index


def run_steps(project: Path, steps: tuple[tuple[str, ...], ...], timeout: int = 600) -> None:
    """Run each of STEPS (sglbuild's arguments) in PROJECT; a fetch takes the Debian packages the suite fetched before from
    its cache (fetch checks each one's sha256 as it checks a download)."""
    for args in steps:
        if args[:1] == ("fetch",):
            share_debs(project, into_project=True)
        r = run_cli(*args, cwd=project, timeout=timeout)
        assert r.returncode == 0, r.stderr
        if args[:1] == ("fetch",):
            share_debs(project, into_project=False)


def share_debs(project: Path, *, into_project: bool) -> None:
    """Copy .deb files between PROJECT's wheelhouse and the suite's cache (CACHE/debs): into the project before a fetch
    (which checks each file's sha256), back into the cache after it (a file fetch replaced is replaced there too)."""
    import filecmp

    cache, wheels = CACHE / "debs", project / "wheels"
    src, dst = (cache, wheels) if into_project else (wheels, cache)
    if not src.is_dir():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for deb in src.glob("*.deb"):
        if not (dst / deb.name).exists() or not filecmp.cmp(deb, dst / deb.name, shallow=False):
            tmp = dst / f".{deb.name}.{os.getpid()}.tmp"
            shutil.copyfile(deb, tmp)
            os.replace(tmp, dst / deb.name)



# -- what the suite leaves on the engine ---------------------------------------------------------------

OURS = ("sglbuild/", "sglbuild-test/", "sglbuild-repro/", "sglbuild-bench/")  # repositories the suite and sglbuild write
MANAGED = "io.sglbuild.managed"


def _ours(tag: str) -> bool:
    """A tag in one of sglbuild's repositories, or a registry's copy of one (HOST:PORT/sglbuild-test/...)."""
    return tag.startswith(OURS) or any(f"/{r}" in tag for r in OURS)


def engine_snapshot(client) -> dict[str, set[str]]:
    """What of sglbuild's is on the engine: tags, images with its label, containers with its label, its networks (by name
    and ID: a network removed and made again under the same name is a new one)."""
    images = client.api.images()
    # Untagged images count as left only when dangling, as gc counts them: an untagged image under a tagged one (a
    # classic build's step under a stage a test rebuilt in place) is that image's history, not garbage.
    dangling = client.api.images(filters={"dangling": True, "label": MANAGED})
    return {
        "tags": {t for image in images for t in image.get("RepoTags") or () if _ours(t)},
        "images": {image["Id"] for image in dangling},
        "containers": {c.name for c in client.containers.list(all=True, filters={"label": MANAGED})},
        "networks": {f"{n.name}@{n.id[:12]}" for n in client.networks.list(filters={"label": MANAGED})},
    }


def left_behind(before: dict[str, set[str]], after: dict[str, set[str]], ignore: set[str] = frozenset()) -> list[str]:
    """What AFTER has of sglbuild's that BEFORE had not (IGNORE: the suite's cache): one line each."""
    return [f"{kind[:-1]} {name}" for kind in ("tags", "images", "containers", "networks")
            for name in sorted(after[kind] - before[kind]) if name not in ignore]


def remove_left_behind(client, before: dict[str, set[str]], keep: set[str] = frozenset()) -> None:
    """Remove what the suite made since BEFORE but KEEP (the suite's cache): containers, then tags, then untagged images,
    then networks."""
    import docker.errors

    after = engine_snapshot(client)
    for name in after["containers"] - before["containers"]:
        try:
            client.containers.get(name).remove(force=True)
        except docker.errors.APIError:
            pass
    for tag in sorted(after["tags"] - before["tags"] - set(keep), reverse=True):  # children before parents
        try:
            client.images.remove(tag, force=True)
        except docker.errors.APIError:
            pass
    # Untagged images may be each other's parents (a replaced stage and the classic builder's steps under it), and an
    # untagged child of one may lack the label: each goes after its untagged children.
    children: dict[str, list[str]] = {}
    for summary in client.api.images(all=True):
        if summary.get("ParentId") and not [t for t in summary.get("RepoTags") or () if t != "<none>:<none>"]:
            children.setdefault(summary["ParentId"], []).append(summary["Id"])

    def remove_with_children(image_id: str, depth: int = 0) -> None:
        for child in children.get(image_id, []) if depth < 32 else []:
            remove_with_children(child, depth + 1)
        try:
            client.images.remove(image_id, force=True)
        except docker.errors.APIError:
            pass

    for image_id in engine_snapshot(client)["images"] - before["images"]:
        remove_with_children(image_id)
    for name in after["networks"] - before["networks"]:
        try:
            client.networks.get(name.split("@")[1]).remove()
        except docker.errors.APIError:
            pass


def fixture_lock(target, app_version: str = "1.0"):
    """A lock for the small target with made-up hashes (for the plan's pure logic: keys, labels, text)."""
    from builder.inputs.lockfile import Lock, Platform, Wheel

    def w(name, version, stage, requires=()):
        return Wheel(name, version, f"{name.replace('-', '_')}-{version}-py3-none-any.whl",
                     (name + version).encode().hex()[:64].ljust(64, "0"), f"http://x/{name}", stage, requires=requires)
    return Lock(
        target=target.name, inputs=target.inputs_digest(), platform=Platform("3.11.2", "2.36"),
        debian={"python3": "3.11.2-1+b1", "libc6": "2.36-9+deb12u14"},
        wheels=[w("sgltest-torch", "2.9.1", "torch", ("sgltest-dep",)), w("sgltest-dep", "1.2", "torch"),
                w("sgltest-kernel", "0.3.21", "kernel"), w("sgltest-app", app_version, "app"), w("uv", "0.13.9", "tools")],
    )


class RefusingRegistry:
    """A proxy in front of a real registry that refuses what a locked-down registry refuses: artifact manifests (those
    with a subject: attestations), with the registry's own error shape. Everything else passes through unchanged."""

    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        import http.server
        import threading

        import requests

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # A TLS handshake is answered with an HTTP status line, as a Go registry answers it, so that an engine that
            # tries HTTPS first (containerd's resolver) sees "HTTP response to HTTPS client" and falls back to HTTP.
            default_request_version = "HTTP/1.0"

            def log_message(self, *args):  # noqa: D102 - quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while (size := int(self.rfile.readline().strip() or b"0", 16)):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return out
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                if self.command == "PUT" and "/manifests/" in self.path and b'"subject"' in body:
                    proxy.refused += 1
                    data = b'{"errors":[{"code":"DENIED","message":"artifacts are not accepted here"}]}'
                    self.send_response(403)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "transfer-encoding", "content-length")}
                r = requests.request(self.command, f"http://{upstream}{self.path}", headers=headers, data=body, allow_redirects=False)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection", "content-encoding"):
                        self.send_header(k, v.replace(upstream, proxy.address))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(r.content)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward  # noqa: N815

        self.refused = 0
        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.address = f"{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def engine_tags(client) -> list[str]:
    """Every tag on the engine, from its own list (docker-py's images.list() inspects each image, and fails when another
    worker removes one meanwhile)."""
    return [t for summary in client.api.images() for t in summary.get("RepoTags") or () if t != "<none>:<none>"]
