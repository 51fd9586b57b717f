"""The rules sglbuild trusts or refuses by, each with a case where it must refuse: DSSE signatures, in-toto statements,
the attested verdicts, the driver-library verdict and the loader's search order behind it. Pure logic on small
fixtures: no engine, no registry, no network (the registry and engine paths are the integration tests')."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from builder.check import attested
from builder.check.driver import driver_check
from builder.check.report import Report
from builder.contracts import IN_TOTO, PREDICATE_SBOM, PREDICATE_VERIFY, StaticReply
from builder.errors import InputError, IntegrityError
from builder.probe import loader
from builder.sign import envelope, key_id, keygen, load_private, load_public, open_envelope
from builder.ship.attest import statement

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    keygen(d / "release")
    keygen(d / "other")
    return d


def _changed(env: bytes, **fields) -> bytes:
    data = json.loads(env)
    data.update(fields)
    return json.dumps(data).encode()


# -- DSSE envelopes ------------------------------------------------------------------------------------

def test_an_envelope_opens_with_its_key_and_an_independent_implementation_agrees(keys):
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    body = statement("r/x", DIGEST, PREDICATE_VERIFY, {"passed": True})
    env = envelope(body, load_private(keys / "release.key"))
    public = load_public(keys / "release.pub")
    opened = open_envelope(env, public, "here")
    assert (opened.payload, opened.payload_type, opened.signed_by, opened.signatures) == (body, IN_TOTO, key_id(public), 1)
    theirs = Envelope.from_dict(json.loads(env))
    key = SSlibKey.from_crypto(serialization.load_pem_public_key((keys / "release.pub").read_bytes()),
                               keyid=key_id(public), scheme="ed25519")
    assert key_id(public) in theirs.verify([key], 1)


def _tampered(env: bytes, case: str, keys: Path) -> bytes:
    data = json.loads(env)
    if case == "payload changed":
        payload = bytearray(base64.b64decode(data["payload"]))
        payload[payload.index(b"true")] = ord("T")
        data["payload"] = base64.b64encode(bytes(payload)).decode()
    elif case == "payload type changed":  # PAE signs the type too: a signature cannot move to another type
        data["payloadType"] = "application/json"
    elif case == "signature changed":
        sig = bytearray(base64.b64decode(data["signatures"][0]["sig"]))
        sig[0] ^= 1
        data["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    elif case == "no signature":
        data["signatures"] = []
    elif case == "another key":
        return envelope(base64.b64decode(data["payload"]), load_private(keys / "other.key"))
    elif case == "another key, our key ID":  # the key ID is a hint: a claim of ours over another key's signature
        other = json.loads(envelope(base64.b64decode(data["payload"]), load_private(keys / "other.key")))
        other["signatures"][0]["keyid"] = data["signatures"][0]["keyid"]
        return json.dumps(other).encode()
    return json.dumps(data).encode()


@pytest.mark.parametrize("case", ["payload changed", "payload type changed", "signature changed", "no signature", "another key",
                                  "another key, our key ID"])
def test_a_signature_that_does_not_verify_is_refused(keys, case):
    env = envelope(statement("r/x", DIGEST, PREDICATE_VERIFY, {"passed": True}), load_private(keys / "release.key"))
    with pytest.raises(IntegrityError, match=r"here: no signature by key [0-9a-f]{16} verifies"):
        open_envelope(_tampered(env, case, keys), load_public(keys / "release.pub"), "here")


def test_the_key_id_is_a_hint_and_the_signature_decides(keys):
    env = envelope(b"{}", load_private(keys / "release.key"))
    data = json.loads(env)
    data["signatures"][0]["keyid"] = "not-the-key"
    assert open_envelope(json.dumps(data).encode(), load_public(keys / "release.pub"), "here").signed_by


@pytest.mark.parametrize("data", [b"not json", b'{"payloadType": "x"}', b'{"payloadType": "x", "payload": "%%%", "signatures": []}',
                                  b'{"payloadType": "x", "payload": "", "signatures": [{"sig": "***"}]}', b"[]"])
def test_what_is_not_an_envelope_is_an_integrity_failure(data):
    with pytest.raises(IntegrityError, match="here: not a DSSE envelope"):
        open_envelope(data, None, "here")


def test_keys_are_private_to_their_owner_never_overwritten_and_an_encrypted_one_needs_its_password(tmp_path, monkeypatch):
    private, public = keygen(tmp_path / "k")
    assert oct(os.stat(private).st_mode & 0o777) == "0o600" and load_public(public)
    with pytest.raises(InputError, match="exists: sglbuild does not overwrite a key"):
        keygen(tmp_path / "k")
    monkeypatch.setenv("SGLBUILD_KEY_PASSWORD", "s3cret")
    locked, _ = keygen(tmp_path / "locked")
    assert load_private(locked)
    monkeypatch.delenv("SGLBUILD_KEY_PASSWORD")
    with pytest.raises(InputError, match="it is encrypted: set SGLBUILD_KEY_PASSWORD"):
        load_private(locked)
    with pytest.raises(InputError, match="not a PEM public key"):
        load_public(private)


# -- in-toto statements and the verdicts they carry ----------------------------------------------------------

def _opened(body: bytes, payload_type: str = IN_TOTO):
    return attested._statement(body, payload_type, DIGEST, "sha256:ref", "key", 1, "here")


def test_a_statement_about_this_manifest_is_read():
    found = _opened(statement("r/x", DIGEST, PREDICATE_SBOM, {"specVersion": "1.6", "components": [1, 2]}))
    assert found.predicate_type == PREDICATE_SBOM and "CycloneDX 1.6, 2 components" in found.summary()


@pytest.mark.parametrize("case, message", [
    ("another subject", "not about sha256:abababababab"),
    ("another statement type", "is not https://in-toto.io/Statement/v1"),
    ("another payload type", "not an in-toto statement"),
    ("no subject", "not an in-toto statement (KeyError)"),
])
def test_a_statement_that_is_not_about_this_image_is_refused(case, message):
    body = statement("r/x", OTHER if case == "another subject" else DIGEST, PREDICATE_VERIFY, {"passed": True})
    data = json.loads(body)
    if case == "another statement type":
        data["_type"] = "https://in-toto.io/Statement/v0.1"
    if case == "no subject":
        del data["subject"]
    with pytest.raises(IntegrityError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _opened(json.dumps(data).encode(), "application/json" if case == "another payload type" else IN_TOTO)


def _verify_attestation(checks: list[dict], signed_by: str | None = "key") -> attested.Attestation:
    return attested.Attestation(PREDICATE_VERIFY, {"passed": all(c["status"] != "fail" for c in checks), "archs": ["sm_120", "sm_121"],
                                                   "image_id": DIGEST, "checks": checks}, "sha256:ref", signed_by, 1)


def _checks(report: Report) -> dict[tuple[str, str | None], str]:
    return {(c.id, c.arch): c.status for c in report.checks}


def test_attested_verdicts_fail_where_a_check_failed_for_that_architecture():
    report = Report("verify", "r/x@" + DIGEST)
    failing = [{"id": "gpu-code", "name": "GPU code", "status": "fail", "detail": "no sm_121 SASS", "arch": "sm_121"},
               {"id": "pins", "name": "pins", "status": "pass", "detail": "", "arch": None}]
    attested.attestation_checks(report, [_verify_attestation(failing)], keyed=True, required=True)
    assert _checks(report) == {("attestations", None): "pass", ("attested-verify", "sm_120"): "pass",
                               ("attested-verify", "sm_121"): "fail"}
    report = Report("verify", "r/x@" + DIGEST)  # a check failed for every architecture fails each
    attested.attestation_checks(report, [_verify_attestation([{**failing[1], "status": "fail"}])], keyed=True, required=True)
    assert _checks(report)[("attested-verify", "sm_120")] == _checks(report)[("attested-verify", "sm_121")] == "fail"


def test_an_unsigned_attestation_fails_when_a_key_was_given_and_none_fails_only_when_required():
    report = Report("verify", "x")
    attested.attestation_checks(report, [_verify_attestation([], signed_by=None)], keyed=True, required=False)
    assert _checks(report)[("attestations", None)] == "fail"
    for required, status in ((True, "fail"), (False, "skip")):
        report = Report("verify", "x")
        attested.attestation_checks(report, [], keyed=True, required=required)
        assert _checks(report) == {("attestations", None): status}


# -- the driver's libraries: the verdict, and the loader's search order behind it --------------------------

def _reply(driver: dict) -> StaticReply:
    return StaticReply(**{**{f: None for f in StaticReply.__dataclass_fields__}, "driver": driver})


def _driver(shadows: list[dict]) -> dict:
    return {"runtime_libdir": "/usr/lib/x86_64-linux-gnu", "copies": [],
            "libraries": {"libcuda.so.1": {"shadows": shadows, "ldd": None, "checked_with": None}}}


@pytest.mark.parametrize("shadow, arch, status", [
    (None, "sm_120", "pass"),
    ({"path": "/opt/stubs/libcuda.so.1", "why": "LD_LIBRARY_PATH=/opt/stubs", "compat": False}, "sm_120", "fail"),
    ({"path": "/opt/stubs/libcuda.so.1", "why": "LD_LIBRARY_PATH=/opt/stubs", "compat": False}, "sm_100", "fail"),
    ({"path": "/usr/local/cuda/compat/libcuda.so.1", "why": "ld.so.conf", "compat": True}, "sm_120", "fail"),  # RTX: no compat
    ({"path": "/usr/local/cuda/compat/libcuda.so.1", "why": "ld.so.conf", "compat": True}, "sm_121", "fail"),  # GB10 neither
    ({"path": "/usr/local/cuda/compat/libcuda.so.1", "why": "ld.so.conf", "compat": True}, "sm_100", "warn"),  # B200: its branch decides
])
def test_a_copy_of_the_driver_found_before_the_runtimes_fails_but_for_compat_on_data_center_gpus(shadow, arch, status):
    check = driver_check(_reply(_driver([shadow] if shadow else [])), arch)
    assert check.status == status, check.detail


def _elf(path: Path, soname: str, flags: list[str] = ()) -> Path:
    subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", *flags, "-o", str(path), "-x", "c", "-"],
                   input=b"int f(void){return 0;}\n", check=True)
    return path


def test_ld_so_conf_is_read_in_ldconfigs_order_with_its_includes_sorted_in_place(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "20-b.conf").write_text("/b # a comment\n")
    (tmp_path / "conf.d" / "10-a.conf").write_text("/a1:/a2\n")
    (tmp_path / "ld.so.conf").write_text(f"/first\ninclude {tmp_path}/conf.d/*.conf\nhwcap 0 nosegneg\n/last\n")
    dirs = [d for d, _ in loader.ld_conf_dirs(str(tmp_path / "ld.so.conf"))]
    assert dirs == ["/first", "/a1", "/a2", "/b", "/last"]


def test_the_loader_looks_in_rpath_then_ld_library_path_then_runpath_then_the_cache_before_the_runtime(tmp_path, monkeypatch):
    """ld.so's order, each place holding a copy of libcuda.so.1: the shadows come back in that order, with why; a
    library with a RUNPATH has its RPATH ignored; a copy after the runtime's directory is no shadow."""
    dirs = {name: tmp_path / name for name in ("rpath", "env", "runpath", "conf", "runtime", "after")}
    for name, d in dirs.items():
        d.mkdir()
        _elf(d / "libcuda.so.1", "libcuda.so.1")
    ops = _elf(tmp_path / "ops.so", "ops.so", ["-Wl,--disable-new-dtags", f"-Wl,-rpath,{dirs['rpath']}", "-L", str(dirs["conf"]),
                                                "-Wl,--no-as-needed", "-l:libcuda.so.1"])
    both = _elf(tmp_path / "both.so", "both.so", ["-Wl,--enable-new-dtags", f"-Wl,-rpath,{dirs['runpath']}"])
    monkeypatch.setenv("LD_LIBRARY_PATH", str(dirs["env"]))
    monkeypatch.setattr(loader, "runtime_libdir", lambda: str(dirs["runtime"]))
    monkeypatch.setattr(loader, "cache_order", lambda: [(str(dirs["conf"]), "/etc/ld.so.conf.d/x.conf"), (str(dirs["runtime"]), "trusted"),
                                                         (str(dirs["after"]), "trusted")])
    monkeypatch.setattr(loader, "stray_copies", lambda: [])
    monkeypatch.setattr(loader, "_ldd_paths", lambda library: {})
    found = loader.driver_libraries([str(ops), str(both)])["libraries"]["libcuda.so.1"]["shadows"]
    assert [Path(s["path"]).parent.name for s in found] == ["rpath", "env", "runpath", "conf", "runtime"]
    assert "DT_RPATH" in found[0]["why"] and "LD_LIBRARY_PATH" in found[1]["why"] and "DT_RUNPATH" in found[2]["why"]
    assert "before the runtime's" in found[3]["why"] and "a regular file in the runtime's own directory" in found[4]["why"]
    # A RUNPATH silences the same library's RPATH (ld.so's rule): the rpath copy is then no shadow.
    monkeypatch.setattr(loader, "elf_dynamic", lambda p, real=loader.elf_dynamic: {**real(p), "runpath": ["/nowhere"]}
                        if p == str(ops) else real(p))
    found = loader.driver_libraries([str(ops), str(both)])["libraries"]["libcuda.so.1"]["shadows"]
    assert "rpath" not in [Path(s["path"]).parent.name for s in found]


# -- sglbuild's own records -----------------------------------------------------------------------------------

@pytest.mark.parametrize("record", ["record_stage", "record_verified", "record_push"])
def test_two_processes_recording_at_once_lose_nothing(tmp_path, record):
    """Two builds (or a build and a verify) write the same state file: each one's read-change-write holds the file's lock."""
    import sys

    calls = {"record_stage": "record_stage(f'{who}-{i}', 'sha256:x', 'c')",
             "record_verified": "record_verified(f'{who}-{i}', gpu_checked=False)",
             "record_push": "record_push(f'{who}-{i}', 'r@sha256:x', 't')"}
    script = f"import sys\nfrom builder.state import {record}\nwho = sys.argv[1]\nfor i in range(150):\n    {calls[record]}\n"
    env = {**os.environ, "SGLBUILD_STATE": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", script, who], env=env) for who in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    name = {"record_stage": "stages.json", "record_verified": "verified.json", "record_push": "pushes.json"}[record]
    assert len(json.loads((tmp_path / name).read_text())) == 300


def test_a_build_drops_the_stage_image_it_replaced_only_when_no_other_build_runs(tmp_path):
    """Two builds of one stage at once: the second's retag must not remove the image the first is building on."""
    import sys
    import uuid

    from builder.state import alone, engine_lock

    where = f"unix:///test-{uuid.uuid4().hex}.sock"  # an engine address of this test's own
    assert alone(where)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from builder.state import engine_lock\n"
                               f"with engine_lock({where!r}):\n    print('in', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "in"
        with engine_lock(where):
            assert not alone(where)  # another build holds its place
        holder.kill()  # kill -9: the kernel releases its lock; its file is stale
        holder.wait()
        with engine_lock(where):
            assert alone(where)
    finally:
        holder.kill()
