"""Who makes attestation documents: the NSM device inside an enclave, the development signer locally.

Both return the raw COSE_Sign1 bytes for ``(user_data, nonce, public_key)``; the document's
other fields (PCRs, certificate chain, timestamp) come from the producer itself.
"""

from __future__ import annotations

from typing import Optional, Protocol


class AttestationProducer(Protocol):
    development: bool

    def attest(self, *, user_data: Optional[bytes], nonce: Optional[bytes], public_key: Optional[bytes]) -> bytes:
        ...
