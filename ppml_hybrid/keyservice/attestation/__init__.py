"""K's side of attestation: who makes its AWS Nitro attestation documents.

* producers: :class:`~.hazmat_nsm.NsmDevice` (inside an enclave) and
  :class:`~.devsigner.DevelopmentSigner` (locally; marked development, refused without opt-in).

What a document binds and how a client verifies it (the format, the binding, the verifier and
its one opaque error) is the wire contract every client of K shares: :mod:`ppml_hybrid.rpc.attestation`.
"""

from ppml_hybrid.keyservice.attestation.devsigner import DevelopmentSigner, development_pcrs

__all__ = ["DevelopmentSigner", "development_pcrs"]
