"""``docker network ...``: the build's internal network, which reaches this host's wheel server and nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING

import docker.errors

from ..contracts import LABEL_MANAGED
from .guard import guard
from .records import NetworkRecord

if TYPE_CHECKING:
    from . import Engine

BUILD_NETWORK = "sglbuild-build"


class Networks:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def build_network(self) -> tuple[str, str, str]:
        """The build network's name, its gateway (this host's address on it) and its subnet."""
        networks = self.engine.client.networks
        with guard(f"setting up the {BUILD_NETWORK} network"):
            try:
                net = networks.get(BUILD_NETWORK)
            except docker.errors.NotFound:
                try:
                    net = networks.create(BUILD_NETWORK, driver="bridge", internal=True, labels={LABEL_MANAGED: "true"},
                                          check_duplicate=True)
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:  # 409: another build made it a moment ago; use that one
                        raise
                    net = networks.get(BUILD_NETWORK)
                net.reload()
            ipam = net.attrs["IPAM"]["Config"][0]
        return net.name, ipam["Gateway"], ipam["Subnet"]

    def list_managed(self) -> list[NetworkRecord]:
        with guard("a list of networks"):
            found = self.engine.client.networks.list(filters={"label": LABEL_MANAGED})
            for net in found:
                net.reload()  # the list leaves out the attached containers
            return [NetworkRecord(n.name, n.id, len(n.attrs.get("Containers") or {})) for n in found]

    def remove(self, name: str) -> None:
        with guard(f"removing the {name} network"):
            try:
                self.engine.client.networks.get(name).remove()
            except docker.errors.NotFound:
                pass
