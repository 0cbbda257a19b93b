"""What E is started with (JSON over its stdin pipe)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ppml_hybrid.config import KeyServiceConfig, from_mapping
from ppml_hybrid.he_stage.runspec import HERunSpec
from ppml_hybrid.rpc.tls import Credential, Registry


@dataclass(frozen=True)
class EvaluatorSpec:
    run: HERunSpec
    key_address: str  # K's address and the certificate E pins for it
    key_trust_pem: bytes
    key_credential: Credential  # E's client certificate towards K
    client_ca_pem: bytes  # CA of the certificates E's own callers present
    registry: Registry  # caller fingerprint -> role (parties, orchestrator)
    address: str = "127.0.0.1:0"
    share_wait_s: float = 60.0
    max_mask_rounds: int = 8
    wire_log: Optional[str] = None  # tests: record message types (never values) E receives and sends
    # how E checks K's attestation before serving (the same policy the parties apply)
    keyservice: KeyServiceConfig = field(default_factory=KeyServiceConfig)
    development_root_pem: bytes = b""  # K's development signer root (accepted only with the opt-in)
    # the role registry K must attest (whom K decrypts for); E refuses a K that serves another
    key_registry: Optional[Registry] = None
    # accept K's development attestation: the launching host's choice, for the K it started itself
    accept_development_attestation: bool = False

    def to_json(self) -> dict:
        return {"run": self.run.to_json(), "key_address": self.key_address, "key_trust_pem": self.key_trust_pem.decode(),
                "key_credential": {"cert_pem": self.key_credential.cert_pem.decode(),
                                   "key_pem": self.key_credential.key_pem.decode()},
                "client_ca_pem": self.client_ca_pem.decode(), "registry": self.registry.to_json(),
                "address": self.address, "share_wait_s": self.share_wait_s, "max_mask_rounds": self.max_mask_rounds,
                "wire_log": self.wire_log, "keyservice": dataclasses.asdict(self.keyservice),
                "development_root_pem": self.development_root_pem.decode(),
                "key_registry": self.key_registry.to_json() if self.key_registry is not None else None,
                "accept_development_attestation": self.accept_development_attestation}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "EvaluatorSpec":
        cred = raw["key_credential"]
        return cls(run=HERunSpec.from_json(raw["run"]), key_address=str(raw["key_address"]),
                   key_trust_pem=str(raw["key_trust_pem"]).encode(),
                   key_credential=Credential(cert_pem=cred["cert_pem"].encode(), key_pem=cred["key_pem"].encode()),
                   client_ca_pem=str(raw["client_ca_pem"]).encode(), registry=Registry.from_json(raw["registry"]),
                   address=str(raw.get("address", "127.0.0.1:0")), share_wait_s=float(raw.get("share_wait_s", 60.0)),
                   max_mask_rounds=int(raw.get("max_mask_rounds", 8)), wire_log=raw.get("wire_log"),
                   keyservice=from_mapping(KeyServiceConfig, raw.get("keyservice", {}), "keyservice"),
                   development_root_pem=str(raw.get("development_root_pem", "")).encode(),
                   key_registry=Registry.from_json(raw["key_registry"]) if raw.get("key_registry") else None,
                   accept_development_attestation=bool(raw.get("accept_development_attestation", False)))
