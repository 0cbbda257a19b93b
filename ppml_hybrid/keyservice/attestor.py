"""K's side of attestation: one document per ``Attest(nonce)``.

Steps: (1) at start-up K computes the :class:`KeyBinding` of the material it serves and its
decryption policy, and the channel binding of its TLS trust certificate; (2) per request it asks
its producer (NSM device or development signer) for a document over
``(user_data = binding, nonce = caller's nonce, public_key = channel binding)``.
Who learns what: the caller gets public hashes and K's measurements; nothing secret is in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ppml_hybrid.config import KeyServiceConfig
from ppml_hybrid.errors import ConfigError
from ppml_hybrid.he_stage.material import PublishedMaterial
from ppml_hybrid.keyservice.attestation.producer import AttestationProducer
from ppml_hybrid.rpc.attestation.binding import KeyBinding, channel_binding, decryption_policy
from ppml_hybrid.rpc.attestation.document import MAX_NONCE
from ppml_hybrid.rpc.errors import InvalidArgumentError
from ppml_hybrid.rpc.tls import Registry


def make_producer(*, keyservice: KeyServiceConfig) -> AttestationProducer:
    if keyservice.attestation == "development":
        from ppml_hybrid.keyservice.attestation.devsigner import DevelopmentSigner
        return DevelopmentSigner()
    if keyservice.attestation == "nsm":
        from ppml_hybrid.keyservice.attestation.hazmat_nsm import NsmDevice
        return NsmDevice()
    raise ConfigError(f"keyservice.attestation must be 'development' or 'nsm'; got {keyservice.attestation!r}")


@dataclass(frozen=True)
class KeyAttestor:
    producer: AttestationProducer
    binding: KeyBinding
    channel: bytes

    @classmethod
    def build(cls, *, producer: AttestationProducer, published: PublishedMaterial, keyservice: KeyServiceConfig,
              tls_trust_pem: bytes, registry: Registry) -> "KeyAttestor":
        policy = decryption_policy(published=published, keyservice=keyservice, registry=registry)
        return cls(producer=producer, binding=KeyBinding.of(material=published.material, policy=policy),
                   channel=channel_binding(tls_trust_pem=tls_trust_pem))

    @property
    def development(self) -> bool:
        return bool(self.producer.development)

    @property
    def development_root_pem(self) -> Optional[bytes]:
        return getattr(self.producer, "root_pem", None)

    def document(self, *, nonce: bytes) -> bytes:
        if not 1 <= len(nonce) <= MAX_NONCE:
            raise InvalidArgumentError(f"an attestation nonce has 1 to {MAX_NONCE} bytes")
        return self.producer.attest(user_data=self.binding.to_user_data(), nonce=nonce, public_key=self.channel)
