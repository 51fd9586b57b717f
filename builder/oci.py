"""Registries, spoken to directly: references, and the OCI distribution API (manifests, blobs, referrers).

The engine pushes and pulls images; what it cannot do goes through here: an OCI image index over
several platforms' manifests, and artifacts attached to a manifest (``subject``) and found again
through the Referrers API, or, on a registry without it (Debian's docker-registry), through the
tag schema (``sha256-<digest>``). Credentials come from the engine's store, handed in by the caller;
a repository given as a URL, perhaps with a user and password in it, is refused without repeating
it, so no credential reaches sglbuild's arguments, output, labels or records.

Every request counts the bytes it moved (``Registry.received``, ``Registry.sent``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import requests

from .errors import InputError, IntegrityError, NetworkError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFESTS = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
EMPTY_CONFIG = b"{}"


def check_repo(repo: str) -> str:
    """REPO as a registry repository (HOST[:PORT]/PATH), or an InputError that does not repeat it."""
    scheme = "://" in repo
    authority = repo.split("://", 1)[-1].split("/", 1)[0]
    userinfo = "@" in authority
    if scheme or userinfo:
        host = authority.rpartition("@")[2]
        raise InputError(f"the repository is given as a URL{' with credentials in it' if userinfo else ''} (host {host})",
                         "give HOST[:PORT]/PATH, and log in with 'docker login HOST'")
    return repo


def split_repo(repo: str) -> tuple[str, str]:
    """HOST[:PORT]/PATH -> (HOST[:PORT], PATH); Docker Hub's short names -> (registry-1.docker.io, library/NAME)."""
    check_repo(repo)
    first, _, rest = repo.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "registry-1.docker.io", repo if rest else f"library/{repo}"


def is_remote_ref(ref: str) -> bool:
    """Whether REF names a registry (its first path part is a host: it has a dot or a port) rather than a local name."""
    return "/" in ref and any(c in ref.split("/")[0] for c in ".:")


def split_ref(ref: str) -> tuple[str, str]:
    """REPO@sha256:... or REPO:TAG -> (REPO, sha256:... or TAG)."""
    if "@" in ref:
        repo, _, digest = ref.partition("@")
        return repo, digest
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        return ref, "latest"
    return repo, tag


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A content descriptor: what an index or manifest says of what it names."""

    media_type: str
    digest: str
    size: int
    data: bytes = b""

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


class Registry:
    """One registry host, as the OCI distribution specification (v1.1) describes it."""

    def __init__(self, host: str, *, insecure: bool = False, credentials: tuple[str, str] | None = None, timeout: float = 60) -> None:
        self.host, self.credentials, self.timeout = host, credentials, timeout
        self.base = f"{'http' if insecure else 'https'}://{host}/v2/"
        self.session = requests.Session()
        self.token: str | None = None
        self.received = self.sent = 0

    # -- transport ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None, data: bytes | None = None,
                params: dict[str, str] | None = None, allow: tuple[int, ...] = ()) -> requests.Response:
        url = path if path.startswith("http") else self.base + path
        for attempt in (1, 2):
            hdrs = dict(headers or {})
            if self.token:
                hdrs["Authorization"] = f"Bearer {self.token}"
            elif self.credentials:
                hdrs["Authorization"] = requests.auth._basic_auth_str(*self.credentials)  # noqa: SLF001 - requests' own encoder
            try:
                r = self.session.request(method, url, headers=hdrs, data=data, params=params, timeout=self.timeout, allow_redirects=True)
            except requests.RequestException as exc:
                raise NetworkError(f"the registry {self.host} did not answer: {type(exc).__name__}",
                                   "check that it runs and that the address is right") from None
            self.sent += len(data or b"") + len(method) + len(url)
            self.received += len(r.content)
            if r.status_code == 401 and attempt == 1 and self._authenticate(r.headers.get("WWW-Authenticate", "")):
                continue
            break
        if r.status_code >= 400 and r.status_code not in allow:
            why = " ".join(r.text.split())[:200]
            raise NetworkError(f"the registry {self.host} refused {method} {path.split('?')[0]}: HTTP {r.status_code} {why}",
                               "check the repository name and your login ('docker login')")
        return r

    def _authenticate(self, challenge: str) -> bool:
        """Bearer token flow (a Docker Hub-like registry); basic credentials are sent with every request already."""
        m = re.match(r"Bearer (.*)", challenge)
        if not m:
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        auth = requests.auth.HTTPBasicAuth(*self.credentials) if self.credentials else None
        try:
            r = self.session.get(fields.get("realm", ""), params={k: v for k, v in fields.items() if k in ("service", "scope")},
                                 auth=auth, timeout=self.timeout)
        except requests.RequestException:
            return False
        self.received += len(r.content)
        if r.status_code != 200:
            return False
        body = r.json()
        self.token = body.get("token") or body.get("access_token")
        return bool(self.token)

    # -- manifests and blobs ------------------------------------------------------------------------------

    def manifest(self, name: str, reference: str) -> Blob | None:
        """The manifest (or index) NAME:REFERENCE, its bytes checked against its digest; None if there is none."""
        r = self.request("GET", f"{name}/manifests/{reference}", headers={"Accept": ", ".join(MANIFESTS)}, allow=(404,))
        if r.status_code == 404:
            return None
        data, digest = r.content, digest_of(r.content)
        if reference.startswith("sha256:") and digest != reference:
            raise IntegrityError(f"{self.host}/{name}@{reference}: the registry sent bytes whose digest is {digest}")
        media = r.headers.get("Content-Type", "").split(";")[0] or json.loads(data).get("mediaType", "")
        return Blob(media, digest, len(data), data)

    def put_manifest(self, name: str, reference: str, media_type: str, data: bytes) -> str:
        self.request("PUT", f"{name}/manifests/{reference}", headers={"Content-Type": media_type}, data=data)
        return digest_of(data)

    def has_blob(self, name: str, digest: str) -> bool:
        return self.request("HEAD", f"{name}/blobs/{digest}", allow=(404,)).status_code == 200

    def blob(self, name: str, digest: str) -> bytes:
        data = self.request("GET", f"{name}/blobs/{digest}").content
        if digest_of(data) != digest:
            raise IntegrityError(f"{self.host}/{name}: blob {digest[:19]} came back with another digest")
        return data

    def put_blob(self, name: str, data: bytes) -> str:
        """Upload DATA (monolithic: POST for a session, PUT with the digest); its digest. Nothing if it is there."""
        digest = digest_of(data)
        if self.has_blob(name, digest):
            return digest
        start = self.request("POST", f"{name}/blobs/uploads/")
        location = start.headers.get("Location", "")
        if not location.startswith("http"):
            location = f"{self.base.rsplit('/v2/', 1)[0]}{location}"
        joiner = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{joiner}digest={digest}", headers={"Content-Type": "application/octet-stream"}, data=data)
        return digest

    # -- referrers (OCI 1.1), with the tag schema where the Referrers API is missing ------------------

    def referrers(self, name: str, digest: str) -> tuple[list[dict[str, Any]], str]:
        """Descriptors of the manifests whose subject is DIGEST, and how they were found ("api" or "tag")."""
        r = self.request("GET", f"{name}/referrers/{digest}", headers={"Accept": OCI_INDEX}, allow=(404, 400, 405))
        if r.status_code == 200 and r.headers.get("Content-Type", "").startswith(OCI_INDEX):
            return list(r.json().get("manifests") or []), "api"
        index = self.manifest(name, referrers_tag(digest))
        return (list(json.loads(index.data).get("manifests") or []) if index else []), "tag"

    def attach(self, name: str, subject: Blob, artifact_type: str, layers: list[tuple[str, bytes, dict[str, str]]],
               annotations: dict[str, str]) -> str:
        """Push an artifact manifest whose subject is SUBJECT (LAYERS: media type, bytes, annotations), and list it
        under the subject's referrers tag too (registries without the Referrers API); its digest."""
        config = Blob(OCI_EMPTY, self.put_blob(name, EMPTY_CONFIG), len(EMPTY_CONFIG))
        descriptors = [Blob(media, self.put_blob(name, data), len(data)).descriptor(annotations=notes) for media, data, notes in layers]
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                    "config": config.descriptor(), "layers": descriptors,
                    "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
                    "annotations": annotations}
        raw = canonical(manifest)
        digest = self.put_manifest(name, digest_of(raw), OCI_MANIFEST, raw)
        found, how = self.referrers(name, subject.digest)
        if how == "tag":  # the fallback index: the earlier referrers and this one, by digest
            entry = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw), "artifactType": artifact_type,
                     "annotations": annotations}
            kept = [m for m in found if m.get("digest") != digest]
            index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*kept, entry]})
            self.put_manifest(name, referrers_tag(subject.digest), OCI_INDEX, index)
        return digest


@dataclass(frozen=True)
class Described:
    """What a reference names in its registry: a manifest, or an index of them, with each image's platform."""

    top: Blob
    images: dict[str, Blob]  # platform (linux/arm64) -> the image's manifest
    configs: dict[str, str]  # platform -> the image's config digest (its ID on the legacy image store)

    @property
    def is_index(self) -> bool:
        return self.top.media_type in (OCI_INDEX, DOCKER_LIST)


def describe(client: Registry, name: str, reference: str) -> Described | None:
    """NAME:REFERENCE (a tag or a digest) as its registry holds it; None if it holds nothing by that name."""
    top = client.manifest(name, reference)
    if top is None:
        return None
    body = json.loads(top.data)
    images, configs = {}, {}
    children = body.get("manifests") if top.media_type in (OCI_INDEX, DOCKER_LIST) else None
    for child in children if children is not None else [{"digest": top.digest}]:
        manifest = client.manifest(name, child["digest"]) if children is not None else top
        if manifest is None:
            raise IntegrityError(f"{client.host}/{name}@{reference} names {child['digest'][:19]}, which the registry does not hold")
        config = json.loads(manifest.data).get("config", {}).get("digest", "")
        # An index says each image's platform; a lone manifest's is in its config (a few KB, never a layer).
        platform = child.get("platform") if children is not None else json.loads(client.blob(name, config)) if config else {}
        key = f"{(platform or {}).get('os', 'linux')}/{(platform or {}).get('architecture', 'amd64')}"
        images[key] = manifest
        configs[key] = config
    return Described(top, images, configs)


def referrers_tag(digest: str) -> str:
    """The tag schema's name for the index of DIGEST's referrers: sha256-<hex>."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}"[:128]


def canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
