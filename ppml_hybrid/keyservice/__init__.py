"""Key service K: holds the CKKS secret key, publishes public material, decrypts only announced,
masked HE->SS rounds into per-party additive shares (see :mod:`.rounds` for the protocol).

Public API: :func:`spawn_key_service` (its own process), :class:`KeyServiceSpec`,
:class:`PartyKeyClient`, :class:`EvaluatorKeyClient`, the refusal types in :mod:`.errors`.
"""

from ppml_hybrid.keyservice.client import (
    AnnounceReceipt, AttestationDoc, EvaluatorKeyClient, PartyKeyClient, SubmitReceipt,
)
from ppml_hybrid.keyservice.errors import (
    AnnouncementMismatchError, NotRegisteredError, OutOfOrderRoundError, QuotaExceededError, RoundMismatchError,
    RoundReplayError, ShareNotReadyError, TooManyOpenRoundsError, UnknownRoundError,
)
from ppml_hybrid.keyservice.material import PublishedMaterial
from ppml_hybrid.keyservice.process import spawn_key_service
from ppml_hybrid.keyservice.spec import KeyServiceSpec

__all__ = [
    "AnnounceReceipt", "AnnouncementMismatchError", "AttestationDoc", "EvaluatorKeyClient", "KeyServiceSpec",
    "NotRegisteredError", "OutOfOrderRoundError", "PartyKeyClient", "PublishedMaterial", "QuotaExceededError",
    "RoundMismatchError", "RoundReplayError", "ShareNotReadyError", "SubmitReceipt", "TooManyOpenRoundsError",
    "UnknownRoundError", "spawn_key_service",
]
