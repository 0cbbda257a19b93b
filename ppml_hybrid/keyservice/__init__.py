"""Key service K: holds the CKKS secret key, publishes public material, decrypts only announced,
masked HE->SS rounds into per-party additive shares (see :mod:`.rounds` for the protocol).

Public API: :func:`spawn_key_service` (its own process), :class:`KeyServiceSpec`. Its clients
(:class:`~ppml_hybrid.he_stage.keyservice_client.PartyKeyClient`,
:class:`~ppml_hybrid.he_stage.keyservice_client.EvaluatorKeyClient`), its refusal types
(:mod:`ppml_hybrid.rpc.keyservice_errors`) and the check of its attestation
(:mod:`ppml_hybrid.rpc.keyservice_verify`) live below the roles, where every caller reaches them.
"""

from ppml_hybrid.keyservice.process import spawn_key_service
from ppml_hybrid.keyservice.spec import KeyServiceSpec

__all__ = ["KeyServiceSpec", "spawn_key_service"]
