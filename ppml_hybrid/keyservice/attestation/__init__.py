"""Attestation of K: AWS Nitro attestation documents (COSE_Sign1/CBOR, ES384) and their verification.

* producers: :class:`~.hazmat_nsm.NsmDevice` (inside an enclave) and
  :class:`~.devsigner.DevelopmentSigner` (locally; marked development, refused without opt-in);
* binding: :class:`~.binding.KeyBinding` (user_data) and :func:`~.binding.channel_binding` (public_key);
* client side: :class:`~.verifier.AttestationPolicy`, :func:`~.verifier.verify_key_service`;
* one opaque :class:`~.errors.AttestationError` for every failed check.
"""

from ppml_hybrid.keyservice.attestation.binding import DecryptionPolicy, KeyBinding, channel_binding
from ppml_hybrid.keyservice.attestation.devsigner import DevelopmentSigner, development_pcrs
from ppml_hybrid.keyservice.attestation.document import AttestationPayload
from ppml_hybrid.keyservice.attestation.errors import AttestationError
from ppml_hybrid.keyservice.attestation.verifier import AttestationPolicy, verify_document, verify_key_service

__all__ = ["AttestationError", "AttestationPayload", "AttestationPolicy", "DecryptionPolicy", "DevelopmentSigner",
           "KeyBinding", "channel_binding", "development_pcrs", "verify_document", "verify_key_service"]
