"""HAZMAT: the only code that touches the CKKS secret key.

:class:`KeyVault` generates the key pair inside K's process and keeps the secret key in
memory only: it is never serialized, written to disk or logged (the object's repr hides it,
and no method returns it). Its one decrypting method, :meth:`KeyVault.decrypt_and_split`,
is called by the service only after :class:`~ppml_hybrid.keyservice.rounds.RoundBook` has
accepted the round, and returns nothing but the n additive shares of the fixed-point values.
Every failed check on a submitted ciphertext is the same opaque :class:`InvalidCiphertext`.
"""

from __future__ import annotations

import logging
from typing import Sequence, Tuple

import numpy as np

from ppml_hybrid.he_stage.context import build_context
from ppml_hybrid.he_stage.errors import HEError
from ppml_hybrid.he_stage.keys import PublicMaterial, generate_keys
from ppml_hybrid.he_stage.runspec import HERunSpec, run_head, run_layout, run_params
from ppml_hybrid.he_stage.shares import encode_fixed_point_mod, split_additive
from ppml_hybrid.rpc.errors import InvalidCiphertext
from ppml_hybrid.rpc.messages import RoundRef

log = logging.getLogger(__name__)


def _hiding_bits(spec: HERunSpec) -> int:
    if spec.he.mask_hiding_bits is None:
        raise HEError("the run spec must carry a resolved he.mask_hiding_bits before keys are made")
    return int(spec.he.mask_hiding_bits)


class KeyVault:
    """HAZMAT. Holds the secret key; decrypts only into additive shares."""

    __slots__ = ("_secret", "_layout", "_parties", "_hiding_bits", "public")

    def __init__(self, *, spec: HERunSpec) -> None:
        params = run_params(spec=spec)
        context = build_context(params=params)
        layout = run_layout(spec=spec, slots=context.info.slots)
        head = run_head(spec=spec, layout=layout)
        self._secret, public = generate_keys(context=context, layout=layout, rotation_indices=head.rotation_indices)
        self._layout = layout
        self._parties = spec.parties
        self._hiding_bits = _hiding_bits(spec)
        self.public = public  # type: PublicMaterial
        log.info("key pair generated: %d rotation keys, layout %s", len(public.rotation_indices), layout)

    @classmethod
    def restore(cls, *, spec: HERunSpec, public: PublicMaterial, secret_key: bytes) -> "KeyVault":
        """HAZMAT (sealing only): rebuild the vault from K's published material and the unsealed key bytes.

        Called by :mod:`ppml_hybrid.keyservice.sealing.unseal` inside K with what AES-GCM just opened.
        The context comes from the public material (so E and the parties keep the same keys).
        """
        import openfhe

        from ppml_hybrid.he_stage.context import HEContext, describe, enable_features
        from ppml_hybrid.he_stage.keys import SecretMaterial

        if public.params != run_params(spec=spec):
            raise HEError("the sealed key was made for other CKKS parameters than this run's")
        try:
            cc = openfhe.DeserializeCryptoContextString(public.context, openfhe.BINARY)
            enable_features(cc)
            sk = openfhe.DeserializePrivateKeyString(secret_key, openfhe.BINARY)
            pk = openfhe.DeserializePublicKeyString(public.public_key, openfhe.BINARY)
        except (RuntimeError, TypeError) as exc:
            raise HEError(f"cannot rebuild the key vault ({type(exc).__name__})") from None
        context = HEContext(cc=cc, params=public.params, info=describe(cc, public.params))
        layout = run_layout(spec=spec, slots=context.info.slots)
        if layout != public.layout:
            raise HEError("the sealed key's slot layout differs from this run's")
        vault = cls.__new__(cls)
        vault._secret = SecretMaterial(context=context, secret_key=sk, public_key=pk)
        vault._layout = layout
        vault._parties = spec.parties
        vault._hiding_bits = _hiding_bits(spec)
        vault.public = public
        log.info("key vault restored from a sealed key")
        return vault

    def export_for_sealing(self) -> bytes:
        """HAZMAT (sealing only): the OpenFHE serialization of the secret key.

        The only caller is :func:`ppml_hybrid.keyservice.sealing.seal.seal_vault`, which encrypts it with
        AES-GCM at once, inside K; nothing else may call it, log it or send it anywhere.
        """
        import openfhe

        return openfhe.Serialize(self._secret.secret_key, openfhe.BINARY)

    def __repr__(self) -> str:
        return "KeyVault(<secret key hidden>)"

    def __getstate__(self) -> None:
        raise TypeError("KeyVault holds the CKKS secret key and cannot be pickled")

    @property
    def layout(self):
        return self._layout

    def expected_ciphertexts(self, *, ref: RoundRef) -> int:
        return self._layout.num_ciphertexts(ref.n_features)

    # ------------------------------------------------------------------ HAZMAT: decryption

    def decrypt_and_split(self, *, ref: RoundRef, ciphertexts: Sequence[bytes]) -> Tuple[np.ndarray, ...]:
        """Decrypt one accepted round into ``parties`` additive shares (CrypTen fixed point, Z_2^64).

        Every used slot must hold |v + R| < 2^B + 2^(V+1) (B = V + H): a masked value of the announced
        bound V, with room for decoding error. Anything else is refused with the opaque
        :class:`InvalidCiphertext`, and the caller stops the whole run (a retry would hand E a
        range oracle).
        """
        if ref.batch > self._layout.block or len(ciphertexts) != self._layout.num_ciphertexts(ref.n_features):
            raise InvalidCiphertext()
        import openfhe

        cc = self._secret.context.cc
        slots = self._layout.slots
        vectors = []
        try:
            for data in ciphertexts:
                ct = openfhe.DeserializeCiphertextString(data, openfhe.BINARY)
                pt = cc.Decrypt(self._secret.secret_key, ct)
                pt.SetLength(slots)
                vectors.append(np.asarray(pt.GetRealPackedValue(), dtype=np.float64))
            values = self._layout.unpack(vectors=vectors, n_features=ref.n_features, batch=ref.batch)
            bound = 2.0 ** (ref.value_bits + self._hiding_bits) + 2.0 ** (ref.value_bits + 1)
            if not np.all(np.isfinite(values)) or float(np.abs(values).max()) >= bound:
                raise InvalidCiphertext()
            encoded = encode_fixed_point_mod(values=values)
        except (RuntimeError, TypeError, ValueError, HEError):
            raise InvalidCiphertext() from None
        finally:
            vectors.clear()
        return tuple(split_additive(encoded=encoded, parties=self._parties))
