"""The contracts between sglbuild, the images it builds and the probe it runs inside them.

Label keys, in-image paths, the history prefix, stage kinds and names, the files the
build fetches from the wheel server, and the typed shape of the probe's replies. Each is
written here once; everything else refers to these names.

Standard library only, and Python 3.8 syntax at run time: the probe imports this module
inside arbitrary images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

# -- labels on the images sglbuild makes -------------------------------------------------------
LABEL_MANAGED = "io.sglbuild.managed"  # every image, container and network sglbuild makes
LABEL_TARGET = "io.sglbuild.target"
LABEL_VERSION = "io.sglbuild.version"
LABEL_LOCK_DIGEST = "io.sglbuild.lock-digest"
LABEL_GPU_ARCH = "io.sglbuild.gpu-arch"
LABEL_SGLANG_VERSION = "io.sglbuild.sglang-version"
LABEL_SERVE_FLAGS = "io.sglbuild.serve-flags"
LABEL_REQUIRE_NATIVE = "io.sglbuild.require-native"
LABEL_UNLOADABLE = "io.sglbuild.unloadable"  # JSON: library glob -> why the target ships it unloadable (only when declared)
LABEL_STAGE_KEY = "io.sglbuild.stage-key"  # on stage images: the key their tag names
LABEL_LAYER_STAGES = "io.sglbuild.layer-stages"  # JSON: the stage each layer came from (images BuildKit re-issued)
# JSON: the target's [flashinfer_aot] declaration (FlashInferAot.to_json), on images built with FlashInfer's modules ahead
# of time (only there): what verify asks the image's FlashInfer to resolve with its JIT off.
LABEL_FLASHINFER_AOT = "io.sglbuild.flashinfer-aot"
LABEL_CACHE_CONTENT = "io.sglbuild.cache-content"  # on a compile-cache volume: the content key of the image it serves
OCI_TITLE = "org.opencontainers.image.title"
OCI_DESCRIPTION = "org.opencontainers.image.description"
OCI_VERSION = "org.opencontainers.image.version"
OCI_REVISION = "org.opencontainers.image.revision"
OCI_CREATED = "org.opencontainers.image.created"
OCI_SOURCE = "org.opencontainers.image.source"
# Where an image came from, not what it is: two images that differ only in these carry the
# same content, so a verdict on one holds for the other.
PROVENANCE_LABELS = (OCI_TITLE, OCI_DESCRIPTION, OCI_VERSION, OCI_REVISION, OCI_SOURCE, LABEL_TARGET, LABEL_VERSION)

# -- paths inside images ------------------------------------------------------------------------
IN_IMAGE_DIR = "/usr/share/sglbuild"
LOCK_IN_IMAGE = IN_IMAGE_DIR + "/lock.json"
SBOM_IN_IMAGE = IN_IMAGE_DIR + "/sbom.cdx.json"
ENTRYPOINT_IN_IMAGE = "/usr/local/bin/sglbuild-entrypoint"
VENV = "/opt/venv"
PROBE_MOUNT = "/opt/sglbuild-probe"  # where the host's builder package is mounted, read-only
# The probe's children share one byte-code cache, in the container's own scratch space (never the image's tree, and
# gone with the container): torch's modules are compiled once, not once per child (minutes under emulation).
PROBE_PYCACHE = "/tmp/sglbuild-pycache"

# -- a served model's compile caches, kept across restarts in one named volume per image content -----
CACHE_VOLUME_PREFIX = "sglbuild-cache-"
IN_CONTAINER_CACHE = "/root/.cache"  # the volume's mount: SGLang, DeepGEMM, outlines and FlashInfer write under ~/.cache
# What compiles at first use and where each tool reads where to keep it; pointed into the volume by serve (found by
# running the image's server imports and flag parsing in a container and reading `docker diff`). Those whose default
# is under /tmp or ~/.triton would otherwise be lost with the container; FlashInfer's is named so it stays in the
# volume whatever HOME the image sets. What else writes under ~/.cache on its own (outlines, SGLang's GPU peer-access
# cache) lands in the volume without a variable.
CACHE_VARIABLES = {
    "FLASHINFER_WORKSPACE_BASE": "/root",  # FlashInfer's JIT modules: $BASE/.cache/flashinfer/<version>/<archs>/cached_ops
    "TRITON_CACHE_DIR": IN_CONTAINER_CACHE + "/triton",  # Triton's kernels (default ~/.triton/cache)
    "TORCHINDUCTOR_CACHE_DIR": IN_CONTAINER_CACHE + "/torchinductor",  # torch.compile's (default /tmp/torchinductor_USER)
    "SGLANG_DG_CACHE_DIR": IN_CONTAINER_CACHE + "/deep_gemm",  # DeepGEMM's JIT kernels, as SGLang sets them
    "CUDA_CACHE_PATH": IN_CONTAINER_CACHE + "/nv-compute",  # the driver's PTX JIT cache (default ~/.nv/ComputeCache)
    "CUTE_DSL_CACHE_DIR": IN_CONTAINER_CACHE + "/cute-dsl",  # CUTLASS's Python DSL kernels (default /tmp/$USER/cutlass_python_cache)
}

# -- files the build fetches from the wheel server, beside the wheels ----------------------------
SERVED_LOCK = "sglbuild/lock.json"
SERVED_SBOM = "sglbuild/sbom.cdx.json"
SERVED_ENTRYPOINT = "sglbuild/entrypoint"
SERVED_AOT_SCRIPT = "sglbuild/flashinfer_aot.py"  # builder/probe/flashinfer_aot.py, for the flashinfer-aot stage
# On BuildKit a step has no network: sglbuild's helper serves the bind-mounted wheelhouse on the step's own
# loopback, on this port (a network namespace of its own, so nothing else can hold it).
BUILDKIT_WHEELHOUSE_PORT = 9999

# -- scratch directories, by what makes them (``sglbuild gc`` removes what a killed run left) -----
SCRATCH_PREFIXES = {
    "served": ".sglbuild-served-",  # beside the wheelhouse: a BuildKit stage's files, hard-linked
    "bench": "sglbuild-bench-",  # beside the wheelhouse: the benchmark's naive context
    "buildx": "sglbuild-buildx-",  # in the temporary directory: a BuildKit build's Dockerfile
    "resolve": "sglbuild-resolve-",  # pip's report and the prebuilt wheels' links while locking
    "base": "sglbuild-base-",  # the base's root filesystem tarball
    "flashinfer": "sglbuild-flashinfer-",  # the JIT probe's scratch cache (also on a GPU machine, outside images)
}
BESIDE_WHEELHOUSE = ("served", "bench")

# -- stages -----------------------------------------------------------------------------------------
HISTORY_PREFIX = "sglbuild: "  # each layer's history entry in a normalized image: "sglbuild: STAGE"
STAGE_SYSTEM, STAGE_WHEELS, STAGE_FINAL = "system", "wheels", "final"  # stage kinds
STAGE_AOT = "flashinfer-aot"  # a stage kind and its name: FlashInfer's modules compiled ahead of time ([flashinfer_aot])
AOT_WORKSPACE = "/tmp/sglbuild-aot"  # where that stage compiles (removed with the step's /tmp/sglbuild-*)
# Every platform's modules compile on this one, with its own nvcc: natively for itself, and for each other platform in a
# stage of its own (STAGE_AOT_CROSS) whose host code Debian's cross compiler for that platform compiles (GNU_TRIPLETS).
# That platform's flashinfer-aot stage then only unpacks them: no compiler runs under emulation.
AOT_BUILD_PLATFORM = "linux/amd64"
STAGE_AOT_CROSS = "flashinfer-aot-cross"
AOT_CROSS_OUT = "/opt/sglbuild-aot"  # where STAGE_AOT_CROSS leaves the modules (NAME/NAME.so)
AOT_CROSS_SYSROOT = "/tmp/sglbuild-cross"  # the other platform's CUDA runtime, unpacked to link against (removed by the step)
AOT_CROSS_RUNTIME = "nvidia-cuda-runtime"  # the wheel of the target platform that holds libcudart.so (the modules link it)
SERVED_AOT_CROSS = "sglbuild/flashinfer-aot-{key}.tar"  # the cross-compiled modules, served to the target platform's stage
TOOLS = "tools"  # the lock's name for build tools (uv), which no image keeps
RESERVED_STAGE_NAMES = frozenset({"base", STAGE_SYSTEM, STAGE_FINAL, STAGE_AOT, STAGE_AOT_CROSS, TOOLS})
BASE_REPO = "sglbuild/base"
STAGE_REPO = "sglbuild/stage"
# The test suite's cache: each base and stage image it keeps between runs has a second tag here (gc lists them and keeps
# them; 'make clean-test-cache' removes them).
TEST_CACHE_REPO = "sglbuild-test-cache"

# -- platforms an image is built for ------------------------------------------------------------
# Docker's name -> (Python's platform.machine(), Debian's architecture, Docker's architecture)
PLATFORMS = {
    "linux/amd64": ("x86_64", "amd64", "amd64"),
    "linux/arm64": ("aarch64", "arm64", "arm64"),
}
DEFAULT_PLATFORM = "linux/amd64"
# Docker's name -> the GNU triplet of its Debian cross compilers (g++-aarch64-linux-gnu) and binutils
GNU_TRIPLETS = {"linux/amd64": "x86_64-linux-gnu", "linux/arm64": "aarch64-linux-gnu"}


def platform_of_machine(machine: str) -> str:
    """linux/amd64 for x86_64 (or amd64), linux/arm64 for aarch64 (or arm64)."""
    for name, names in PLATFORMS.items():
        if machine in names:
            return name
    return f"linux/{machine}"


# -- the probe's replies ------------------------------------------------------------------------
# Attestations attached to a pushed image (OCI referrers of its manifest): in-toto Statements in DSSE envelopes.
IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"
PREDICATE_SBOM = "https://cyclonedx.org/bom"
PREDICATE_PROVENANCE = "https://slsa.dev/provenance/v1"
PREDICATE_VERIFY = "https://github.com/sglbuild/sglbuild/verify-report/v1"
BUILD_TYPE = "https://github.com/sglbuild/sglbuild/build/v1"
IN_TOTO = "application/vnd.in-toto+json"  # an in-toto statement: the DSSE payload's type
ATTESTATION_ARTIFACT = IN_TOTO  # the referrer's artifactType
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"  # its one layer
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
SIGNER_ANNOTATION = "io.sglbuild.signed-by"  # the key ID, a hint; the signature decides
PROBE_VERSION = 8  # bumped when a reply's shape changes


@dataclass
class Outcome:
    """Something run inside the image: its value when it worked, else its last error line."""

    ok: bool
    value: Any = None
    error: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> Optional["Outcome"]:
        return None if d is None else cls(bool(d["ok"]), d.get("value"), d.get("error"))


GPU_FILE_KINDS = ("library", "cubin", "fatbin", "relocatable")


@dataclass
class GpuCode:
    """The GPU code one file carries, named as cuobjdump names it (sm_90a SASS, compute_120 PTX).

    ``kind``: "library" (a shared object's or executable's .nv_fatbin), "cubin" or "fatbin"
    (standalone, loaded with cuModuleLoad), "relocatable" (device-link input: __nv_relfatbin,
    objects, archives), which the driver never loads, or "unreadable" (``error`` says why).
    ``lto``: LTO IR entries (lto_120), link-time input that is neither SASS nor PTX.
    """

    path: str
    sass: List[str] = field(default_factory=list)
    ptx: List[str] = field(default_factory=list)
    entries: int = 0
    compressed: int = 0
    kind: str = "library"
    lto: List[str] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def has_gpu_code(self) -> bool:
        return bool(self.sass or self.ptx)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "GpuCode":
        return cls(d["path"], list(d["sass"]), list(d["ptx"]), int(d["entries"]), int(d["compressed"]), d.get("kind", "library"),
                   list(d.get("lto") or []), d.get("error"))


@dataclass
class Runtime:
    """What the image offers the code that compiles at run time."""

    cc: Optional[str]  # a C compiler (Triton builds its launcher at first use)
    python_h: bool  # Python.h, for the same launcher
    libnuma: bool  # libnuma.so.1, which sgl_kernel links
    ldd: Optional[str]


def _known(cls: Any, d: Dict[str, Any]) -> Dict[str, Any]:
    """D's entries that are CLS's fields (an answer of a later probe may say more)."""
    return {k: v for k, v in d.items() if k in cls.__dataclass_fields__}


@dataclass
class TritonJit:
    """Triton's compile of a small bf16 tile for a target, with the image's Triton (and its run on a GPU, when asked)."""

    ok: Optional[bool]
    triton: str = ""
    kernel: str = ""
    cubin: List[str] = field(default_factory=list)
    ptx_target: str = ""
    error: Optional[str] = None
    run: Optional[Dict[str, Any]] = None  # jit --run on a GPU: the kernel against torch


@dataclass
class FlashinferJit:
    """FlashInfer's JIT compile of its decode module for the targets (one build for all), read back per target."""

    ok: Optional[bool]
    installed: bool = False
    toolchain: Optional[Dict[str, Any]] = None  # nvcc, CUDA headers, ninja, the C++ compiler: where each was found
    module: str = ""
    compile_s: float = 0.0
    sass: List[str] = field(default_factory=list)
    arch_list: str = ""
    error: Optional[str] = None


@dataclass
class JitAnswer:
    """The JIT probe's answer for one target architecture."""

    target: str
    triton: TritonJit
    flashinfer: FlashinferJit
    compiled_in: Optional[str] = None  # the image it compiled in, when not the one judged (a derived build's evidence stage)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "JitAnswer":
        return cls(d.get("target", ""), TritonJit(**_known(TritonJit, d.get("triton") or {"ok": None})),
                   FlashinferJit(**_known(FlashinferJit, d.get("flashinfer") or {"ok": None})), d.get("compiled_in"))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class AotModule:
    """One declared FlashInfer module, as the image's FlashInfer resolves it with its JIT turned off."""

    kind: str  # decode | prefill | page | sampling
    name: str  # FlashInfer's own name for it (its URI)
    path: Optional[str]  # the prebuilt file FlashInfer loads; None: it would compile at first use
    sass: List[str] = field(default_factory=list)  # that file's SASS, read by the fatbin reader


@dataclass
class StaticReply:
    """Everything verify's static checks read, from one run of the probe inside the image."""

    probe_version: int
    python: str
    executable: str
    site_packages: List[str]
    dists: Dict[str, str]  # canonical name -> version
    pip_check: Outcome
    imports: Dict[str, Outcome]  # module -> {version, ...}
    flags: Optional[Outcome]  # the server flags parsed by the image's own SGLang (None: no flags given)
    server_options: Optional[Dict[str, Any]]  # what that parser offers: attention/sampling backend choices, switches
    jit: Optional[Dict[str, JitAnswer]]  # per target architecture: the JIT probe's answer (builder.probe.jit); None when not asked
    libraries: List[GpuCode]  # every file under site-packages with GPU code
    ldd_missing: Optional[Dict[str, List[str]]]  # library -> sonames ldd cannot find (None: no ldd)
    runtime: Runtime
    lock: Optional[str]  # the text of LOCK_IN_IMAGE, if the image has one
    driver: Optional[Dict[str, Any]] = None  # where the loader would find the driver's libraries (builder.probe.loader)
    # Per target architecture: the attention and sampling backends the image's SGLang picks itself for what the flags
    # leave unset ({"attention_backend", "sampling_backend", "via"} or {"error"}); None without SGLang or targets.
    defaults: Optional[Dict[str, Dict[str, Any]]] = None
    # The declared FlashInfer modules (LABEL_FLASHINFER_AOT), each resolved by the image's FlashInfer with its JIT off;
    # None: none declared. An Outcome's error where FlashInfer could not answer.
    flashinfer_aot: Optional[Outcome] = None

    @property
    def aot_modules(self) -> Optional[List[AotModule]]:
        """flashinfer_aot's modules, typed (None: none declared, or FlashInfer could not say)."""
        if self.flashinfer_aot is None or not self.flashinfer_aot.ok:
            return None
        return [AotModule(m["kind"], m["name"], m.get("path"), list(m.get("sass") or [])) for m in self.flashinfer_aot.value]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "StaticReply":
        if d.get("probe_version") != PROBE_VERSION:
            raise ValueError(f"probe reply version {d.get('probe_version')!r}, expected {PROBE_VERSION}")
        return cls(
            probe_version=d["probe_version"],
            python=d["python"],
            executable=d["executable"],
            site_packages=list(d["site_packages"]),
            dists=dict(d["dists"]),
            pip_check=Outcome.from_dict(d["pip_check"]),
            imports={k: Outcome.from_dict(v) for k, v in d["imports"].items()},
            flags=Outcome.from_dict(d["flags"]),
            server_options=d["server_options"],
            jit={arch: JitAnswer.from_dict(a) for arch, a in d["jit"].items()} if d["jit"] is not None else None,
            libraries=[GpuCode.from_dict(x) for x in d["libraries"]],
            ldd_missing=d["ldd_missing"],
            runtime=Runtime(**d["runtime"]),
            lock=d["lock"],
            driver=d.get("driver"),
            defaults=d.get("defaults"),
            flashinfer_aot=Outcome.from_dict(d.get("flashinfer_aot")),
        )


@dataclass
class GpuReply:
    """The GPU probe's answer: the device, what of the image's code runs on it, and two computations."""

    torch: str
    cuda_runtime: Optional[str]
    driver: Optional[str]
    available: bool
    device: Optional[str] = None
    capability: Optional[str] = None
    arch: Optional[str] = None
    memory_gb: Optional[float] = None
    coverage: List[Dict[str, Any]] = field(default_factory=list)  # {library, verdict, sass, ptx}
    matmul: Optional[Dict[str, Any]] = None  # {ok, rel_error, ms}
    rmsnorm: Optional[Dict[str, Any]] = None  # {ok, rel_error} | {ok: None, skipped} | {ok: False, error}

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "GpuReply":
        return cls(**d)
