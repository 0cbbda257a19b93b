"""What a party or E does before sending K anything: check K's attestation.

Steps: (1) fetch the public material; (2) draw a fresh 32-byte nonce; (3) ``Attest(nonce)``;
(4) verify the document (:func:`verify_key_service`) against the policy from config, the
:class:`KeyBinding` recomputed from the material received, the decryption policy from config
and the role registry the caller expects (the consortium's pinned certificates), and the
channel binding of the TLS trust certificate this client pinned. Any failure is the one
opaque :class:`AttestationError`; the caller must then send nothing to K.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from ppml_hybrid.config import KeyServiceConfig
from ppml_hybrid.rpc.attestation.binding import KeyBinding, channel_binding, decryption_policy
from ppml_hybrid.rpc.attestation.document import AttestationPayload
from ppml_hybrid.rpc.attestation.errors import reject
from ppml_hybrid.rpc.attestation.verifier import (
    REQUIRED_PCRS, AttestationPolicy, Clock, utc_now, verify_key_service,
)
from ppml_hybrid.rpc.tls import Registry

log = logging.getLogger(__name__)


def policy_from_config(*, keyservice: KeyServiceConfig, development_root_pem: Optional[bytes] = None,
                       accept_development: bool = False, clock: Clock = utc_now) -> AttestationPolicy:
    """``keyservice.expected_pcrs`` entries are ``"index:hex"``. ``accept_development`` is this
    client host's own choice (a command-line flag, or the one-machine launcher for the K it
    started itself), never a key of the shared run config."""
    pcrs = {}
    for entry in keyservice.expected_pcrs:
        index, _, value = entry.partition(":")
        pcrs[int(index)] = bytes.fromhex(value)
    missing = [i for i in REQUIRED_PCRS if i not in pcrs]
    if missing and not accept_development:
        log.warning("keyservice.expected_pcrs pins no PCR%s: every Nitro attestation document will be refused. "
                    "Set PCR0, PCR1 and PCR2 from the image's measurements (enclave/out/pcrs.json)", missing[0])
    if accept_development:
        log.warning("ACCEPTING DEVELOPMENT ATTESTATION: this host trusts a key service that proves no enclave "
                    "(a development signer); for one-machine runs and tests only")
    return AttestationPolicy(expected_pcrs=pcrs, allow_development=accept_development,
                             development_root_pem=development_root_pem if accept_development else None,
                             allow_debug=keyservice.allow_debug_enclave,
                             max_age_s=keyservice.attestation_max_age_s, clock=clock)


def attest_key_service(*, client, published: Any, keyservice: KeyServiceConfig,
                       development_root_pem: Optional[bytes], tls_trust_pem: bytes,
                       registry: Registry, accept_development: bool = False) -> AttestationPayload:
    """What a party or E runs: :func:`check_key_service` under the policy from ``keyservice``."""
    policy = policy_from_config(keyservice=keyservice, development_root_pem=development_root_pem,
                                accept_development=accept_development)
    return check_key_service(client=client, published=published, keyservice=keyservice, policy=policy,
                             tls_trust_pem=tls_trust_pem, registry=registry)


def development_note(payload: AttestationPayload) -> str:
    """Log suffix that says a development document was accepted (empty for a real enclave)."""
    return " (DEVELOPMENT signer, no enclave: accepted by this host's own choice)" if payload.development else ""


def check_key_service(*, client, published: Any, keyservice: KeyServiceConfig,
                      policy: AttestationPolicy, tls_trust_pem: bytes, registry: Registry) -> AttestationPayload:
    """Attest K over ``client`` (a PartyKeyClient or EvaluatorKeyClient) for ``published`` (the
    :class:`~ppml_hybrid.he_stage.material.PublishedMaterial` it received); return the verified payload."""
    nonce = os.urandom(32)
    doc = client.attest(nonce=nonce)
    if not doc.cose_sign1:
        raise reject("K returned no signed attestation document")
    binding = KeyBinding.of(material=published.material,
                            policy=decryption_policy(published=published, keyservice=keyservice, registry=registry))
    return verify_key_service(document=doc.cose_sign1, policy=policy, nonce=nonce, binding=binding,
                              public_key=channel_binding(tls_trust_pem=tls_trust_pem))
