"""Key generation at K and the public material E receives (openfhe-python's server/client split).

K builds the context, generates the key pair, the relinearisation key and only the rotation
keys the head needs, and publishes :class:`PublicMaterial`: every field is OpenFHE binary
serialization (bytes, no files). E rebuilds an :class:`EvaluatorKeys` from it, which has no
secret key to hold. :class:`SecretMaterial` never leaves K.
"""

from __future__ import annotations

import dataclasses

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

import openfhe

from ppml_hybrid.he_stage.context import ContextInfo, HEContext, describe, enable_features
from ppml_hybrid.he_stage.errors import KeyMaterialError
from ppml_hybrid.he_stage.layout import SlotLayout
from ppml_hybrid.he_stage.params import CKKSParams


@dataclass(frozen=True)
class PublicMaterial:
    """What K publishes: context, public key, eval-mult key, the needed rotation keys."""

    params: CKKSParams
    layout: SlotLayout
    rotation_indices: Tuple[int, ...]
    context: bytes
    public_key: bytes
    eval_mult_key: bytes
    rotation_keys: bytes  # b"" when the layout needs no rotation

    def digest(self) -> str:
        """SHA-256 over the serialized objects (what an attestation document binds)."""
        h = hashlib.sha256()
        for part in (self.context, self.public_key, self.eval_mult_key, self.rotation_keys):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
        return h.hexdigest()


@dataclass(frozen=True)
class SecretMaterial:
    """K's side: the context with the secret key. Never serialized towards E or a party."""

    context: HEContext
    secret_key: Any = field(repr=False)
    public_key: Any = field(repr=False)


@dataclass(frozen=True)
class EvaluatorKeys:
    """E's side: a context with evaluation keys loaded, and the public key (for fresh masks)."""

    cc: Any
    public_key: Any
    params: CKKSParams
    info: ContextInfo
    layout: SlotLayout
    rotation_indices: Tuple[int, ...]


# Evaluation-key bytes exist about this many times over at once. Measured with poly_cnn at
# split 2 (ring 2^15, 96 keys): K's resident memory 4.5x the key bytes (objects, serialized
# bytes, gRPC stream buffers), E's 3.4x; the orchestrator's attestation checks hold ~2x more.
KEY_COPIES = 10


def available_memory_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo (None where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_key_memory(*, key_bytes: int, keys: int, ring_dim: int, available_bytes: Optional[int]) -> None:
    """Refuse a key set whose copies would not fit in memory (a clear error instead of the OOM killer)."""
    need = key_bytes * keys * KEY_COPIES
    if available_bytes is not None and need > available_bytes:
        raise KeyMaterialError(
            f"this split needs {keys} evaluation keys of {key_bytes / 2**20:.0f} MB at ring 2^{ring_dim.bit_length() - 1} "
            f"({key_bytes * keys / 2**30:.1f} GB, held about {KEY_COPIES} times across K, E and the transfer: "
            f"{need / 2**30:.1f} GB) but {available_bytes / 2**30:.1f} GB of memory is available. Use a larger "
            "split_layer (fewer layers under HE: a smaller ring and fewer keys) or a machine with more memory")


def generate_keys(
    *, context: HEContext, layout: SlotLayout, rotation_indices: Tuple[int, ...]
) -> Tuple[SecretMaterial, PublicMaterial]:
    """Key pair + relinearisation key + rotation keys for ``rotation_indices`` only."""
    if layout.slots != context.info.slots:
        raise KeyMaterialError(f"layout is for {layout.slots} slots but the context has {context.info.slots}")
    cc = context.cc
    kp = cc.KeyGen()
    cc.EvalMultKeyGen(kp.secretKey)
    tag = kp.secretKey.GetKeyTag()
    indices = tuple(sorted({int(i) for i in rotation_indices}))
    eval_mult_key = openfhe.SerializeEvalMultKeyString(openfhe.BINARY, tag)
    # A rotation key is as large as the relinearisation key: refuse before the machine runs out.
    check_key_memory(key_bytes=len(eval_mult_key), keys=len(indices) + 1, ring_dim=context.info.ring_dim,
                     available_bytes=available_memory_bytes())
    rot = b""
    if indices:
        cc.EvalRotateKeyGen(kp.secretKey, list(indices))
        rot = openfhe.SerializeEvalAutomorphismKeyString(openfhe.BINARY, tag)
    public = PublicMaterial(
        params=context.params,
        layout=layout,
        rotation_indices=indices,
        context=openfhe.Serialize(cc, openfhe.BINARY),
        public_key=openfhe.Serialize(kp.publicKey, openfhe.BINARY),
        eval_mult_key=eval_mult_key,
        rotation_keys=rot,
    )
    return SecretMaterial(context=context, secret_key=kp.secretKey, public_key=kp.publicKey), public


def load_public_material(*, material: PublicMaterial) -> EvaluatorKeys:
    """Deserialize what K published into a context E can evaluate with."""
    try:
        cc = openfhe.DeserializeCryptoContextString(material.context, openfhe.BINARY)
        enable_features(cc)
        pk = openfhe.DeserializePublicKeyString(material.public_key, openfhe.BINARY)
        if material.eval_mult_key:  # absent from encryption-only material
            _insert_eval_mult_key(material.eval_mult_key)
        if material.rotation_keys:
            openfhe.DeserializeEvalAutomorphismKeyString(material.rotation_keys, openfhe.BINARY)
    except (RuntimeError, TypeError) as exc:
        raise KeyMaterialError(f"cannot read K's public material ({exc}); fetch it again from the key service") from exc
    info = describe(cc, material.params)
    if info.ring_dim != 2 * material.layout.slots:
        raise KeyMaterialError(
            f"the context has ring {info.ring_dim} but the layout is for {material.layout.slots} slots"
        )
    return EvaluatorKeys(cc=cc, public_key=pk, params=material.params, info=info, layout=material.layout,
                         rotation_indices=material.rotation_indices)


def encryption_only(material: PublicMaterial) -> PublicMaterial:
    """The part of K's material a party needs: context and public key, no evaluation keys.

    Parties encrypt, run the XOR chain (ciphertext x plaintext, additions) and combine
    (additions): none of it needs the relinearisation or rotation keys, which are most of the
    bytes (about 250 MB at ring 2^14 with the packed layout's rotations).
    """
    return dataclasses.replace(material, eval_mult_key=b"", rotation_keys=b"")


def _insert_eval_mult_key(data: bytes) -> None:
    """Load the relinearisation key into OpenFHE's (process-wide) key cache.

    When K and E share a process (tests, single-machine runs) the cache already holds this very
    key under the same key tag and OpenFHE refuses to insert it twice; that case is accepted.
    """
    try:
        openfhe.DeserializeEvalMultKeyString(data, openfhe.BINARY)
    except RuntimeError as exc:
        if "there is a key vector for the given keyTag" not in str(exc):
            raise


def serialize_ciphertext(ct: Any) -> bytes:
    return openfhe.Serialize(ct, openfhe.BINARY)


def deserialize_ciphertext(data: bytes) -> Any:
    try:
        return openfhe.DeserializeCiphertextString(data, openfhe.BINARY)
    except RuntimeError as exc:
        raise KeyMaterialError(f"not an OpenFHE binary ciphertext ({exc})") from exc
