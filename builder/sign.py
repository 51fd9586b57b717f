"""Keys and DSSE envelopes: what signs the attestations sglbuild attaches to a pushed image, with a key the user holds.

A key pair is Ed25519 (``sglbuild keygen``): the private key as PKCS#8 PEM (mode 0600; encrypted when
``SGLBUILD_KEY_PASSWORD`` is set), the public key as SubjectPublicKeyInfo PEM, the form Sigstore's cosign and
securesystemslib read. A key's ID is the sha256 of its raw public bytes.

An envelope is DSSE v1 (github.com/secure-systems-lab/dsse): the payload and its type, signed over the
pre-authentication encoding PAE(type, payload), so a signature cannot be moved to another payload type. The
payload here is an in-toto Statement. Keyless signing (Sigstore's Fulcio and Rekor, a CI's OIDC identity) needs
services outside this machine: see the README.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .contracts import IN_TOTO
from .errors import InputError, IntegrityError
from .state import atomic_write

PASSWORD_ENV = "SGLBUILD_KEY_PASSWORD"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def keygen(prefix: Path) -> tuple[Path, Path]:
    """PREFIX.key and PREFIX.pub, a new Ed25519 pair; never over an existing file."""
    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for path in (private, public):
        if path.exists():
            raise InputError(f"{path} exists: sglbuild does not overwrite a key", "give another --output, or move the old key away")
    key = Ed25519PrivateKey.generate()
    password = os.environ.get(PASSWORD_ENV, "").encode()
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even for a moment
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    atomic_write(public, key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the signing key ({exc.strerror})", "give the .key file 'sglbuild keygen' wrote") from None
    password = os.environ.get(PASSWORD_ENV, "").encode() or None
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        why = "it is encrypted: set SGLBUILD_KEY_PASSWORD" if "encrypted" in str(exc) or "password" in str(exc).lower() else "not a PEM private key"
        raise InputError(f"{path}: cannot load the signing key ({why})", "give the .key file 'sglbuild keygen' wrote") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: not an Ed25519 key", "make one with 'sglbuild keygen'")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the public key ({exc.strerror})") from None
    except ValueError:
        raise InputError(f"{path}: not a PEM public key", "give the .pub file 'sglbuild keygen' wrote") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path}: not an Ed25519 public key", "make a pair with 'sglbuild keygen'")
    return key


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def envelope(payload: bytes, key: Ed25519PrivateKey | None, payload_type: str = IN_TOTO) -> bytes:
    """PAYLOAD in a DSSE envelope, signed with KEY (no signature without one)."""
    signatures = []
    if key is not None:
        sig = key.sign(pae(payload_type, payload))
        signatures.append({"keyid": key_id(key.public_key()), "sig": base64.b64encode(sig).decode()})
    return json.dumps({"payloadType": payload_type, "payload": base64.b64encode(payload).decode(), "signatures": signatures},
                      sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Opened:
    payload: bytes
    payload_type: str
    signed_by: str | None  # the key ID whose signature verified, None when no key was asked for
    signatures: int


def open_envelope(data: bytes, key: Ed25519PublicKey | None, where: str) -> Opened:
    """The payload of the DSSE envelope DATA; with KEY, only if one of its signatures is KEY's over PAE(type, payload)."""
    try:
        env = json.loads(data)
        payload_type, payload = env["payloadType"], base64.b64decode(env["payload"], validate=True)
        signatures = [(s.get("keyid", ""), base64.b64decode(s["sig"], validate=True)) for s in env.get("signatures") or []]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{where}: not a DSSE envelope ({type(exc).__name__})", "it was changed after it was signed") from None
    if key is None:
        return Opened(payload, payload_type, None, len(signatures))
    wanted = key_id(key)
    for _, sig in signatures:  # the key ID is a hint; the signature decides
        try:
            key.verify(sig, pae(payload_type, payload))
        except InvalidSignature:
            continue
        return Opened(payload, payload_type, wanted, len(signatures))
    signers = ", ".join(k[:16] for k, _ in signatures) or "nobody"
    raise IntegrityError(f"{where}: no signature by key {wanted[:16]} verifies (signed by {signers})",
                         "the envelope was changed, or was signed with another key")
