"""The GPU-code reader on real nvcc output and on the real wheelhouse, held against cuobjdump.

cuobjdump (PyPI's nvidia-cuda-cuobjdump, a test dependency) is the authority: every fixture and
every GPU file of the default wheelhouse must get cuobjdump's answer, kind by kind.
"""

from __future__ import annotations

import inspect
import io
import re
import subprocess
from pathlib import Path

import pytest

from authority import Listing, compare_wheelhouse, cuobjdump_listing, find_cuobjdump
from builder.contracts import GpuCode
from builder.errors import FatbinError
from builder.probe.fatbin import arch_key, sass_digests, scan_file, scan_stream, scan_wheel, verdict
from support import CACHE, ROOT, make_wheel, need_nvcc, run_cli
from testcache import kept_dir, tool_version

KERNELS = """
extern "C" __global__ void scale(float* x, float a) { x[threadIdx.x] *= a; }
extern "C" __global__ void add(float* x, float a) { x[threadIdx.x] += a; }
"""
DEVICE_FN = 'extern "C" __device__ float twice(float x) { return 2 * x; }\n'
CALLER = 'extern "C" __device__ float twice(float x);\nextern "C" __global__ void k(float* x) { x[threadIdx.x] = twice(x[threadIdx.x]); }\n'
RDC = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=[sm_90,compute_90]"]

# name: (nvcc flags for a shared object, SASS, PTX) — names as cuobjdump gives them ('f' SASS is listed plain).
VARIANTS = {
    "sass": (["-gencode", "arch=compute_120,code=sm_120"], {"sm_120"}, set()),
    "arch_specific": (["-gencode", "arch=compute_120a,code=sm_120a"], {"sm_120a"}, set()),
    "family": (["-gencode", "arch=compute_120f,code=sm_120f"], {"sm_120"}, set()),
    "family_other": (["-gencode", "arch=compute_100f,code=sm_103f"], {"sm_103"}, set()),
    "ptx_only": (["-gencode", "arch=compute_120,code=compute_120"], set(), {"compute_120"}),
    "ptx_arch_specific": (["-gencode", "arch=compute_120a,code=compute_120a"], set(), {"compute_120a"}),
    "ptx_family": (["-gencode", "arch=compute_120f,code=compute_120f"], set(), {"compute_120f"}),
    "several": (["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90a,code=sm_90a",
                 "-gencode", "arch=compute_120,code=[sm_120,compute_120]"], {"sm_80", "sm_90a", "sm_120"}, {"compute_120"}),
    "compressed": (["-gencode", "arch=compute_120,code=sm_120", "-Xfatbin", "-compress-all"], {"sm_120"}, set()),
}
# LTO IR: name -> (nvcc flags, what it is); with the SASS and LTO IR each holds.
LTO = {
    "lto.o": (["-gencode", "arch=compute_120,code=lto_120"], "object"),
    "lto_sass.o": (["-gencode", "arch=compute_100,code=sm_100", "-gencode", "arch=compute_120,code=lto_120"], "object"),
    "lto_library.so": (["-gencode", "arch=compute_120,code=[sm_120,lto_120]"], "library"),
}
LTO_READ = {"lto.o": ([], ["lto_120"], "relocatable"), "lto_sass.o": (["sm_100"], ["lto_120"], "relocatable"),
            "lto_library.so": (["sm_120"], ["lto_120"], "library")}
CUBINS = {"sm_120": "sm_120", "sm_120a": "sm_120a", "sm_120f": "sm_120", "sm_90a": "sm_90a", "sm_100a": "sm_100a", "sm_80": "sm_80"}


def nvcc(*args: str) -> None:
    subprocess.run([need_nvcc(), *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    """Real GPU binaries of every kind, made by nvcc (once: kept in the suite's cache, keyed by the tools and this recipe)."""
    need_nvcc()
    return binaries(binaries_dir())


def binaries_dir() -> Path:
    recipe = [inspect.getsource(make_binaries), KERNELS, DEVICE_FN, CALLER, RDC, VARIANTS, CUBINS, LTO]
    return kept_dir("fatbins", [tool_version(["nvcc"]), tool_version(["g++"]), *recipe], make_binaries)


def make_binaries(d: Path) -> None:
    (d / "k.cu").write_text(KERNELS)
    for name, (flags, _, _) in VARIANTS.items():
        nvcc("-shared", "-Xcompiler", "-fPIC", "-o", str(d / f"{name}.so"), str(d / "k.cu"), *flags)
    for arch in CUBINS:  # standalone cubins, as FlashInfer ships them
        nvcc("-cubin", f"-arch={arch}", "-o", str(d / f"k.{arch}.cubin"), str(d / "k.cu"))
    nvcc("-fatbin", "-gencode", "arch=compute_120,code=sm_120", "-gencode", "arch=compute_90,code=compute_90", "-o", str(d / "k.fatbin"), str(d / "k.cu"))
    # Relocatable device code (-rdc): objects, an archive of them, and two shared objects: one
    # device-linked (.nv_fatbin beside the objects' __nv_relfatbin, like libnvshmem_host), one
    # never device-linked (__nv_relfatbin only: nothing the driver can load).
    (d / "dev.cu").write_text(DEVICE_FN)
    (d / "kern.cu").write_text(CALLER)
    for name in ("dev", "kern"):
        nvcc("-rdc=true", "-c", "-Xcompiler", "-fPIC", *RDC, "-o", str(d / f"{name}.o"), str(d / f"{name}.cu"))
    subprocess.run(["ar", "rcs", str(d / "libdev.a"), str(d / "dev.o"), str(d / "kern.o")], check=True)
    nvcc("-dlink", "-Xcompiler", "-fPIC", *RDC, "-o", str(d / "dlink.o"), str(d / "dev.o"), str(d / "kern.o"))
    subprocess.run(["g++", "-shared", "-o", str(d / "linked.so"), str(d / "dev.o"), str(d / "kern.o"), str(d / "dlink.o")], check=True)
    subprocess.run(["g++", "-shared", "-o", str(d / "unlinked.so"), str(d / "dev.o"), str(d / "kern.o")], check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(d / "host.so"), "-x", "c", "-"], input=b"int f(void){return 1;}\n", check=True)
    # LTO IR (fatbin entry kind 8), as nvcc 13 writes it: alone in an object, beside SASS in one, in a shared library.
    for name, (flags, link) in LTO.items():
        nvcc(*(["-shared", "-Xcompiler", "-fPIC"] if link == "library" else ["-rdc=true", "-c"]), *flags, "-o", str(d / name), str(d / "k.cu"))


def binaries(d: Path) -> dict[str, Path]:
    """What make_binaries wrote in D, by name."""
    out = {name: d / f"{name}.so" for name in VARIANTS}
    out.update({f"cubin_{arch}": d / f"k.{arch}.cubin" for arch in CUBINS})
    out.update({"fatbin": d / "k.fatbin", "object": d / "dev.o", "archive": d / "libdev.a", "linked": d / "linked.so",
                "unlinked": d / "unlinked.so", "host": d / "host.so"})
    out.update({name: d / name for name in LTO})
    return out


@pytest.fixture(scope="module")
def cuobjdump() -> str:
    tool = find_cuobjdump()
    if tool is None:
        pytest.fail("cuobjdump is not installed: pip install -e '.[test]' (nvidia-cuda-cuobjdump)", pytrace=False)
    return tool


@pytest.mark.parametrize("name", list(VARIANTS))
def test_architectures_of_real_nvcc_output(built, cuobjdump, name):
    code = scan_file(built[name])
    _, sass, ptx = VARIANTS[name]
    assert set(code.sass) == sass and set(code.ptx) == ptx and code.kind == "library"
    assert Listing.of(code) == cuobjdump_listing(cuobjdump, built[name])
    if name == "compressed":
        assert code.compressed == code.entries > 0
    if name == "several":
        assert code.entries == 7  # nvcc 13 writes two ELF images per SASS target, plus the PTX


def test_sass_digests_are_the_cubins_cuobjdump_extracts(built, cuobjdump, tmp_path):
    """Each SASS entry's digest is the sha256 of the cubin `cuobjdump -xelf` writes (entries stored uncompressed); a
    compressed entry's is of its stored bytes, so the same code stored another way is another digest."""
    import hashlib

    several = built["several"]  # its SASS entries stored as they are (nvcc compressed its PTX only)
    ours = sass_digests(several)
    subprocess.run([cuobjdump, "-xelf", "all", str(several)], cwd=tmp_path, check=True, capture_output=True)
    theirs = sorted((f"sm_{p.name.rsplit('.sm_', 1)[1].removesuffix('.cubin')}", hashlib.sha256(p.read_bytes()).hexdigest())
                    for p in tmp_path.glob("*.cubin"))
    assert ours == theirs and {a for a, _ in ours} == {"sm_80", "sm_90a", "sm_120"}
    plain, packed = sass_digests(built["sass"]), sass_digests(built["compressed"])
    assert [a for a, _ in plain] == [a for a, _ in packed] == ["sm_120"] * len(plain) and plain != packed
    assert sass_digests(built["host"]) == [] and sass_digests(built["cubin_sm_120"]) == []  # no fatbin: nothing to compare


@pytest.mark.parametrize("arch", list(CUBINS))
def test_standalone_cubins(built, cuobjdump, arch):
    code = scan_file(built[f"cubin_{arch}"])
    assert code.sass == [CUBINS[arch]] and code.kind == "cubin" and code.entries == 1
    assert Listing.of(code) == cuobjdump_listing(cuobjdump, built[f"cubin_{arch}"])


def test_standalone_fatbin(built, cuobjdump):
    code = scan_file(built["fatbin"])
    assert (code.sass, code.ptx, code.kind) == (["sm_120"], ["compute_90"], "fatbin")
    assert Listing.of(code) == cuobjdump_listing(cuobjdump, built["fatbin"])


@pytest.mark.parametrize("name", ["object", "archive", "linked", "unlinked"])
def test_relocatable_code_is_listed_as_cuobjdump_lists_it_and_never_loadable(built, cuobjdump, name):
    code = scan_file(built[name])
    assert Listing.of(code) == cuobjdump_listing(cuobjdump, built[name])
    if name == "linked":  # the device-linked image only: the objects' __nv_relfatbin is not listed
        assert code.kind == "library" and verdict(code, "sm_90") == "native"
    else:
        assert code.kind == "relocatable" and code.sass == ["sm_80", "sm_90"] and code.ptx == ["compute_90"]
        assert verdict(code, "sm_90") == verdict(code, "sm_120") == "link-only"


@pytest.mark.corpus
@pytest.mark.parametrize("name", list(LTO))
def test_lto_ir_is_its_own_kind_never_sass_or_ptx_as_cuobjdump_lists_it(built, cuobjdump, name):
    """nvcc 13's LTO IR (entry kind 8): cuobjdump lists the file's SASS and no LTO entry as SASS or PTX; so does the reader,
    which names the LTO IR on its own (link-time input the driver never loads)."""
    code = scan_file(built[name])
    sass, lto, kind = LTO_READ[name]
    assert (code.sass, code.ptx, code.lto, code.kind) == (sass, [], lto, kind)
    assert Listing.of(code) == cuobjdump_listing(cuobjdump, built[name])
    assert verdict(code, "sm_120") == ("native" if name == "lto_library.so" else "link-only")


def test_an_unreadable_file_is_named_and_the_rest_of_the_image_still_read(built, tmp_path):
    """One file with an entry of a kind the reader does not know: the scan of the tree goes on; the file is unreadable,
    with why; a required library that cannot be read fails GPU code for that reason, the rest of the verdict stands."""
    from builder.check.gpucode import ImageGpuCode
    from builder.contracts import StaticReply
    from builder.probe.fatbin import scan_tree

    site = tmp_path / "site"
    (site / "good").mkdir(parents=True)
    (site / "odd").mkdir()
    (site / "good" / "ops.so").write_bytes(built["several"].read_bytes())
    data = bytearray(built["sass"].read_bytes())
    first = data.find(b"\x50\xed\x55\xba") + 16
    data[first:first + 2] = (9).to_bytes(2, "little")  # an entry kind nobody has written yet
    (site / "odd" / "ops.so").write_bytes(bytes(data))
    codes = {Path(c.path).parent.name: c for c in scan_tree(site)}
    assert codes["good"].sass == ["sm_80", "sm_90a", "sm_120"]
    assert codes["odd"].kind == "unreadable" and "kind 9" in codes["odd"].error
    image = ImageGpuCode.of(StaticReply(**{**{f: None for f in StaticReply.__dataclass_fields__}, "site_packages": [str(site)],
                                           "libraries": list(codes.values())}))
    assert image.missing_native(["good/ops.so"], "sm_120") == []
    assert image.missing_native(["odd/ops.so"], "sm_120") == [f"odd/ops.so cannot be read: {codes['odd'].error}"]
    assert "1 unreadable" in image.summary("sm_120")


@pytest.mark.corpus
def test_every_gpu_file_of_the_wheelhouse_gets_cuobjdumps_answer(cuobjdump, prefetch):
    """The default target's wheelhouse, file by file: libraries, FlashInfer's cubins, static archives. Both readers run
    in the background from the session's start (the suite's prefetch), cuobjdump's answers kept by file between runs."""
    from builder.inputs.lockfile import read_lock
    from builder.inputs.profile import load_profile

    profile = load_profile(ROOT / "sglbuild.toml")
    lock = read_lock(profile, profile.target(None))
    wheels = ROOT / "wheels"
    missing = [w.filename for w in lock.wheels if not (wheels / w.filename).is_file()]
    if missing:
        pytest.skip(f"wheels/ is not filled ({len(missing)} of {len(lock.wheels)} wheels missing): run 'sglbuild fetch'")
    compared = prefetch.result("wheelhouse") or compare_wheelhouse(wheels, cuobjdump, cache=CACHE / "cuobjdump-answers.json")
    rows, _ = compared
    gpu = [r for r in rows if r.theirs.entries or r.ours.entries]
    differ = [f"{r.file}: ours {r.ours}, cuobjdump {r.theirs}" for r in gpu if not r.agree]
    assert not differ, f"{len(differ)} of {len(gpu)} GPU files differ: " + "; ".join(differ[:5])
    kinds = {scan_kind for scan_kind in ("cubin", "archive") if any(r.file.endswith(".cubin" if scan_kind == "cubin" else ".a") for r in gpu)}
    assert len(gpu) > 5000 and kinds == {"cubin", "archive"}


def test_no_gpu_code_is_not_an_error(built):
    code = scan_file(built["host"])
    assert not code.has_gpu_code and code.entries == 0
    assert scan_stream(io.BytesIO(b"#!/bin/sh\n"), "script").has_gpu_code is False


def test_truncated_and_corrupt_fatbins_name_file_and_offset(built, tmp_path):
    data = built["several"].read_bytes()
    magic = data.find(b"\x50\xed\x55\xba")
    bad = tmp_path / "corrupt.so"
    bad.write_bytes(data[:magic + 16] + b"\x07\x00" + data[magic + 18:])  # first entry's kind := 7
    with pytest.raises(FatbinError, match=rf"corrupt.so: corrupt fatbin entry at offset {magic + 16:#x}"):
        scan_file(bad)
    short = tmp_path / "short.so"
    short.write_bytes(data[: magic + 200])
    with pytest.raises(FatbinError, match=r"short.so: truncated"):
        scan_file(short)


def test_wheel_is_read_in_place(built, tmp_path):
    wheel = make_wheel(tmp_path, "gpukit", "1.0", files={"gpukit/ops.so": built["several"].read_bytes(),
                                                        "gpukit/host.so": built["host"].read_bytes()})
    codes = {c.path.split("!")[1]: c for c in scan_wheel(wheel)}
    assert codes["gpukit/ops.so"].sass == ["sm_80", "sm_90a", "sm_120"]
    assert not codes["gpukit/host.so"].has_gpu_code
    assert not any(p.suffix == ".so" for p in tmp_path.rglob("*"))  # nothing unpacked


def test_a_large_wheel_member_is_read_as_a_small_one(built, tmp_path, monkeypatch):
    """Members over the in-memory limit are spooled to a temporary file (FlashAttention's 1.1 GB flash_ops.abi3.so
    in sglang-kernel 0.4.10): that path once read from the spool's end and said "no GPU code"."""
    from builder.probe import fatbin

    wheel = make_wheel(tmp_path, "gpukit", "1.0", files={"gpukit/ops.so": built["several"].read_bytes()})
    small = next(iter(scan_wheel(wheel)))
    monkeypatch.setattr(fatbin, "_IN_MEMORY", 16)  # every member takes the spool path
    large = next(iter(scan_wheel(wheel)))
    assert large.sass == small.sass == ["sm_80", "sm_90a", "sm_120"] and large.entries == small.entries > 0


def test_verdicts():
    g = GpuCode("x", sass=["sm_80", "sm_90a", "sm_100a", "sm_120a"])
    assert verdict(g, "sm_120") == "native" and verdict(g, "sm_90") == "native" and verdict(g, "sm_121") == "none"
    assert verdict(GpuCode("y", sass=["sm_80", "sm_90"], ptx=["compute_90"]), "sm_120") == "ptx-jit"
    assert verdict(GpuCode("z", sass=["sm_80", "sm_86", "sm_90a"]), "sm_120") == "none"
    assert verdict(GpuCode("w", sass=["sm_120"]), "sm_121") == "native"
    assert sorted(["sm_120", "sm_90a", "sm_80"], key=arch_key) == ["sm_80", "sm_90a", "sm_120"]


def test_archs_command_table_and_json(built, tmp_path):
    r = run_cli("archs", str(built["several"]), str(built["host"]), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"several.so\s+sm_80 sm_90a sm_120\s+compute_120", r.stdout)
    assert re.search(r"host.so\s+no GPU code", r.stdout)
    import json
    r = run_cli("archs", "--json", str(built["ptx_only"]), cwd=tmp_path)
    assert json.loads(r.stdout)[0]["ptx"] == ["compute_120"]
    r = run_cli("archs", str(tmp_path / "missing.so"), cwd=tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr  # a missing file is bad input, not a hash mismatch


def test_an_archive_whose_member_names_say_ptx_but_hold_none(built, cuobjdump, tmp_path):
    """The layout of CUDA's libnvrtc-builtins_static.a: members named nvrtc-builtins.compute_75.o ... compute_121.o
    that hold no fatbin at all (their .rodata is nvrtc's own data), beside members with device code. cuobjdump
    lists the member names and no PTX for them (on the real archives, 13.0 says 'does not contain device code');
    the reader agrees, and still reads the member that has code."""
    members = []
    for arch in ("75", "90", "120", "121"):
        obj = tmp_path / f"nvrtc-builtins.compute_{arch}.o"
        subprocess.run(["gcc", "-c", "-x", "c", "-o", str(obj), "-"], input=f"const char data_{arch}[] = \".version 9.0 .target sm_{arch}\";\n".encode(),
                       check=True)
        members.append(str(obj))
    plain = tmp_path / "libplain_static.a"
    subprocess.run(["ar", "rcs", str(plain), *members], check=True)
    code = scan_file(plain)
    assert Listing.of(code) == cuobjdump_listing(cuobjdump, plain) == Listing((), (), 0)
    mixed = tmp_path / "libmixed_static.a"
    subprocess.run(["ar", "rcs", str(mixed), *members, str(built["object"])], check=True)
    assert Listing.of(scan_file(mixed)) == cuobjdump_listing(cuobjdump, mixed) == Listing(("sm_80", "sm_90"), ("sm_90",), 3)


def cuda_install_files() -> list[Path]:
    """Every file of this machine's CUDA toolkit that may hold GPU code (lib64, targets/*/lib); $SGLBUILD_CUDA_ROOTS adds trees."""
    import os

    roots = [Path(p) for p in os.environ.get("SGLBUILD_CUDA_ROOTS", "").split(":") if p]
    roots += [Path("/usr/local/cuda/lib64"), *Path("/usr/local/cuda").glob("targets/*/lib")]
    seen, files = set(), []
    for root in roots:
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            real = path.resolve()
            if path.is_file() and not path.is_symlink() and real not in seen and path.stat().st_size > 64:
                with open(path, "rb") as f:
                    if f.read(4) in (b"\x7fELF", b"!<ar", b"\x50\xed\x55\xba"):
                        seen.add(real)
                        files.append(path)
    return files


def test_every_gpu_file_of_the_cuda_install_gets_cuobjdumps_answer(cuobjdump):
    """The toolkit itself (CUDA 13.0 here: libcudadevrt.a, libcudart_static.a, the shared libraries; on the GPU
    machine also the nvrtc builtins archives): file by file, the reader's listing is cuobjdump's."""
    files = cuda_install_files()
    if not files:
        pytest.skip("no CUDA toolkit under /usr/local/cuda")
    differ = [f"{p}: ours {Listing.of(scan_file(p))}, cuobjdump {cuobjdump_listing(cuobjdump, p)}" for p in files
              if Listing.of(scan_file(p)) != cuobjdump_listing(cuobjdump, p)]
    assert not differ, f"{len(differ)} of {len(files)} files differ: " + "; ".join(differ[:4])
    print(f"{len(files)} files of the CUDA install agree with {cuobjdump}")
