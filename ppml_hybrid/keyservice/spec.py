"""What K is started with (JSON over its stdin pipe; it holds no secret of K's own).

``aws_credentials`` (optional) are the parent instance role's temporary credentials, for the
AWS KMS client only (IMDS is unreachable from an enclave); they travel over the pipe / vsock,
are never written to disk by K, and are not shown by ``repr``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional

from ppml_hybrid.config import KeyServiceConfig, from_mapping
from ppml_hybrid.he_stage.runspec import HERunSpec
from ppml_hybrid.rpc.tls import Registry

if TYPE_CHECKING:  # imported lazily: the sealing package pulls in K's key-handling code
    from ppml_hybrid.keyservice.sealing.sigv4 import AwsCredentials


@dataclass(frozen=True)
class KeyServiceSpec:
    run: HERunSpec
    keyservice: KeyServiceConfig
    client_ca_pem: bytes  # CA of the client certificates
    registry: Registry  # client certificate fingerprint -> role
    wire_log: Optional[str] = None  # tests: record message types (never values) K receives and sends
    aws_credentials: Optional[AwsCredentials] = None  # the parent's role credentials, for AWS KMS (see above)

    def to_json(self) -> dict:
        out = {"run": self.run.to_json(), "keyservice": dataclasses.asdict(self.keyservice),
               "client_ca_pem": self.client_ca_pem.decode(), "registry": self.registry.to_json(),
               "wire_log": self.wire_log}
        if self.aws_credentials is not None:
            out["aws_credentials"] = self.aws_credentials.to_json()
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "KeyServiceSpec":
        creds = None
        if raw.get("aws_credentials"):
            from ppml_hybrid.keyservice.sealing.sigv4 import AwsCredentials

            creds = AwsCredentials.from_json(raw["aws_credentials"])
        return cls(run=HERunSpec.from_json(raw["run"]),
                   keyservice=from_mapping(KeyServiceConfig, raw["keyservice"], "keyservice"),
                   client_ca_pem=str(raw["client_ca_pem"]).encode(), registry=Registry.from_json(raw["registry"]),
                   wire_log=raw.get("wire_log"),
                   aws_credentials=creds)
