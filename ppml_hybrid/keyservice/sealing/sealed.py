"""The sealed-key file: public material in the clear, the secret key under AES-GCM, the KMS blob.

CBOR map ``{v, key_id, ciphertext_blob, nonce, ciphertext, material}`` where ``material`` is the
public material as its wire chunks (so a restarted K serves byte-identical material) and the
AES-GCM associated data (:meth:`SealedKey.aad`) binds the version, KMS key id, KMS blob and the
SHA-256 of the stored material chunks: swapping any of them makes unsealing fail. The file holds nothing secret in
the clear; it lives on the parent's disk (or anywhere: :mod:`.store`) and is written with mode
0600 anyway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Tuple

import cbor2

from ppml_hybrid.he_stage.material import PublishedMaterial, from_chunks, to_chunks
from ppml_hybrid.keyservice.sealing.errors import sealing_failure
from ppml_hybrid.rpc import keyservice_pb2 as pb

SEALED_VERSION = 1


@dataclass(frozen=True)
class SealedKey:
    key_id: str
    ciphertext_blob: bytes
    nonce: bytes
    ciphertext: bytes
    material: Tuple[bytes, ...]  # serialized PublicMaterialChunk messages

    @staticmethod
    def material_of(published: PublishedMaterial) -> Tuple[bytes, ...]:
        return tuple(c.SerializeToString() for c in to_chunks(published))

    @staticmethod
    def material_sha256(material: Tuple[bytes, ...]) -> str:
        """SHA-256 over the stored chunks exactly as stored (header facts such as mask_bits included)."""
        h = hashlib.sha256()
        for c in material:
            h.update(len(c).to_bytes(8, "big") + c)
        return h.hexdigest()

    def published(self) -> PublishedMaterial:
        try:
            return from_chunks(pb.PublicMaterialChunk.FromString(c) for c in self.material)
        except Exception as exc:  # noqa: BLE001 - DecodeError, KeyMaterialError
            raise sealing_failure(f"stored public material ({type(exc).__name__})") from None

    @staticmethod
    def aad(*, key_id: str, ciphertext_blob: bytes, material_sha256: str) -> bytes:
        return cbor2.dumps({"v": SEALED_VERSION, "key_id": key_id, "ciphertext_blob": ciphertext_blob,
                            "material_sha256": material_sha256, "what": "ppml-hybrid CKKS secret key"},
                           canonical=True)

    def encode(self) -> bytes:
        return cbor2.dumps({"v": SEALED_VERSION, "key_id": self.key_id, "ciphertext_blob": self.ciphertext_blob,
                            "nonce": self.nonce, "ciphertext": self.ciphertext, "material": list(self.material)})

    @classmethod
    def decode(cls, raw: bytes) -> "SealedKey":
        try:
            m = cbor2.loads(raw)
            if m["v"] != SEALED_VERSION:
                raise ValueError("version")
            sealed = cls(key_id=str(m["key_id"]), ciphertext_blob=bytes(m["ciphertext_blob"]), nonce=bytes(m["nonce"]),
                         ciphertext=bytes(m["ciphertext"]), material=tuple(bytes(c) for c in m["material"]))
        except Exception as exc:  # noqa: BLE001
            raise sealing_failure(f"sealed file does not parse ({type(exc).__name__})") from None
        return sealed
