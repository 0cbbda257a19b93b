"""What K is started with (JSON over its stdin pipe; it holds no secret of K's own)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ppml_hybrid.config import KeyServiceConfig, from_mapping
from ppml_hybrid.he_stage.runspec import HERunSpec
from ppml_hybrid.rpc.tls import Registry


@dataclass(frozen=True)
class KeyServiceSpec:
    run: HERunSpec
    keyservice: KeyServiceConfig
    client_ca_pem: bytes  # CA of the client certificates
    registry: Registry  # client certificate fingerprint -> role
    wire_log: Optional[str] = None  # tests: record message types (never values) K receives and sends

    def to_json(self) -> dict:
        return {"run": self.run.to_json(), "keyservice": dataclasses.asdict(self.keyservice),
                "client_ca_pem": self.client_ca_pem.decode(), "registry": self.registry.to_json(),
                "wire_log": self.wire_log}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "KeyServiceSpec":
        return cls(run=HERunSpec.from_json(raw["run"]),
                   keyservice=from_mapping(KeyServiceConfig, raw["keyservice"], "keyservice"),
                   client_ca_pem=str(raw["client_ca_pem"]).encode(), registry=Registry.from_json(raw["registry"]),
                   wire_log=raw.get("wire_log"))
