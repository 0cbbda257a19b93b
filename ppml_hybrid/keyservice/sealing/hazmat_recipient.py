"""HAZMAT: K's ephemeral RSA recipient key and the opening of ``CiphertextForRecipient``.

Steps: (1) K makes a fresh RSA-2048 key pair in memory per KMS call (never stored, never sent
except the public half inside an attestation document); (2) KMS wraps the data key to it in CMS
EnvelopedData; (3) :meth:`EphemeralRecipient.open` unwraps (RSAES-OAEP-SHA-256, then
AES-256-CBC) and returns the 32-byte data key to the sealing code only. Who learns the data
key: KMS and this process; the parent host sees only the envelope.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ppml_hybrid.keyservice.sealing.cms import OAEP_SHA256, parse_enveloped
from ppml_hybrid.keyservice.sealing.errors import sealing_failure

DATA_KEY_BYTES = 32


class EphemeralRecipient:
    __slots__ = ("_key",)

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def __repr__(self) -> str:
        return "EphemeralRecipient(<private key hidden>)"

    def __getstate__(self) -> None:
        raise TypeError("EphemeralRecipient holds a private key and cannot be pickled")

    def public_der(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)

    def open(self, ciphertext_for_recipient: bytes) -> bytes:
        """The data key inside the envelope (opaque SealingError on any failure)."""
        env = parse_enveloped(ciphertext_for_recipient)
        try:
            cek = self._key.decrypt(env.encrypted_key, OAEP_SHA256)
            if len(cek) != 32:
                raise ValueError("content key length")
            dec = Cipher(algorithms.AES(cek), modes.CBC(env.iv)).decryptor()
            padded = dec.update(env.ciphertext) + dec.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            data_key = unpadder.update(padded) + unpadder.finalize()
        except Exception as exc:  # noqa: BLE001 - ValueError from OAEP / padding
            raise sealing_failure(f"cannot open the envelope ({type(exc).__name__})") from None
        if len(data_key) != DATA_KEY_BYTES:
            raise sealing_failure("data key length")
        return data_key
