"""Client side of K's attestation: AWS Nitro attestation documents (COSE_Sign1/CBOR, ES384), what
they bind, and their verification (what a party or E checks before sending K anything).

* binding: :class:`~.binding.KeyBinding` (user_data), :class:`~.binding.DecryptionPolicy` and
  :func:`~.binding.channel_binding` (public_key), computed alike by K and its clients;
* verification: :class:`~.verifier.AttestationPolicy`, :func:`~.verifier.verify_key_service`;
* one opaque :class:`~.errors.AttestationError` for every failed check.

The producers (the NSM device inside an enclave, the development signer) are K's and stay in
:mod:`ppml_hybrid.keyservice.attestation`.
"""

from ppml_hybrid.rpc.attestation.binding import DecryptionPolicy, KeyBinding, channel_binding
from ppml_hybrid.rpc.attestation.document import AttestationPayload
from ppml_hybrid.rpc.attestation.errors import AttestationError
from ppml_hybrid.rpc.attestation.verifier import AttestationPolicy, verify_document, verify_key_service

__all__ = ["AttestationError", "AttestationPayload", "AttestationPolicy", "DecryptionPolicy", "KeyBinding",
           "channel_binding", "verify_document", "verify_key_service"]
