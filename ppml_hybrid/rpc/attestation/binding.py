"""What K's attestation document binds, in a canonical form both sides compute.

* ``user_data`` = canonical CBOR of :class:`KeyBinding`: SHA-384 of the serialized crypto
  context, of the public key, of the evaluation keys (eval-mult key then rotation keys, each
  length-prefixed) and of K's decryption policy (:class:`DecryptionPolicy`, canonical CBOR,
  including the SHA-384 of K's role registry: which certificate is which party, E, launcher).
* ``public_key`` (towards parties and E) = :func:`channel_binding` of the TLS trust certificate
  the client pins: K's one-off TLS CA whose key signed K's leaf inside K and was then dropped,
  so only the process that holds the attested TLS key can terminate the channel.

K computes these from what it serves; a client computes them from what it received and
compares (it learns nothing else from them: every input is public).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ppml_hybrid.config import KeyServiceConfig
from ppml_hybrid.rpc.attestation.errors import reject
from ppml_hybrid.rpc.tls import Registry

BINDING_VERSION = 1
CHANNEL_PREFIX = b"ppml-hybrid tls-trust sha384:"


def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def _len_prefixed(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


@dataclass(frozen=True)
class DecryptionPolicy:
    """The only decryptions K performs: announced, masked HE->SS rounds under these limits."""

    parties: int
    hiding_bits: int
    max_mask_bits: int
    round_quota: int
    max_open_rounds: int
    # SHA-384 of the role registry: who K decrypts for (a party's share goes to the certificate
    # registered as that party), so a client sees exactly whom K serves
    registry_sha384: bytes = b""
    operation: str = "decrypt-and-share masked rounds only"
    # dp.noise_source=enclave: what K does for the DP noise (keyservice/noise.py)
    noise: str = ("one exact discrete Gaussian draw per step id, split into uniform additive shares, each "
                  "delivered once to its own party, none kept, logged or written")

    def canonical(self) -> bytes:
        return cbor2.dumps(asdict(self), canonical=True)


def decryption_policy(*, published: Any, keyservice: KeyServiceConfig, registry: Registry) -> DecryptionPolicy:
    """The policy K enforces, from the facts both K and its clients know (material, config and
    the role registry: the consortium's pinned certificates). ``published``: the
    :class:`~ppml_hybrid.he_stage.material.PublishedMaterial` K serves or the client received."""
    return DecryptionPolicy(parties=published.parties, hiding_bits=published.hiding_bits, max_mask_bits=published.max_mask_bits,
                            round_quota=keyservice.round_quota, max_open_rounds=keyservice.max_open_rounds,
                            registry_sha384=registry.digest())


@dataclass(frozen=True)
class KeyBinding:
    context_sha384: bytes
    public_key_sha384: bytes
    eval_keys_sha384: bytes
    policy_sha384: bytes

    @classmethod
    def of(cls, *, material: Any, policy: DecryptionPolicy) -> "KeyBinding":
        """``material``: the :class:`~ppml_hybrid.he_stage.keys.PublicMaterial` served or received."""
        return cls(context_sha384=sha384(material.context), public_key_sha384=sha384(material.public_key),
                   eval_keys_sha384=sha384(_len_prefixed(material.eval_mult_key, material.rotation_keys)),
                   policy_sha384=sha384(policy.canonical()))

    def to_user_data(self) -> bytes:
        return cbor2.dumps({"v": BINDING_VERSION, "context": self.context_sha384, "public_key": self.public_key_sha384,
                            "eval_keys": self.eval_keys_sha384, "policy": self.policy_sha384}, canonical=True)

    @classmethod
    def from_user_data(cls, raw: bytes) -> "KeyBinding":
        try:
            m = cbor2.loads(raw)
            if m.get("v") != BINDING_VERSION:
                raise ValueError("version")
            return cls(context_sha384=bytes(m["context"]), public_key_sha384=bytes(m["public_key"]),
                       eval_keys_sha384=bytes(m["eval_keys"]), policy_sha384=bytes(m["policy"]))
        except Exception:  # noqa: BLE001
            raise reject("user_data is not a key binding") from None


def channel_binding(*, tls_trust_pem: bytes) -> bytes:
    """The ``public_key`` field for a TLS channel: prefix + SHA-384 of the pinned trust certificate (DER)."""
    der = x509.load_pem_x509_certificate(tls_trust_pem).public_bytes(serialization.Encoding.DER)
    return CHANNEL_PREFIX + sha384(der)
