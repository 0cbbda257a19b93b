"""The party side of HE->SS: announce a round to K, then collect both share streams.

For round r, party P_j receives over its own mTLS channels its share of v + R from K and its
share of -R from E; their sum mod 2^64 is P_j's additive share of v in CrypTen fixed point.
(:mod:`.he_to_ss` feeds it into a CrypTen tensor.)
"""

from __future__ import annotations

import numpy as np

from ppml_hybrid.he_stage.keyservice_client import AnnounceReceipt, PartyKeyClient
from ppml_hybrid.he_stage.shares import sum_shares
from ppml_hybrid.rpc.errors import FailedPreconditionError
from ppml_hybrid.rpc.evaluator_client import PartyMaskClient
from ppml_hybrid.rpc.messages import RoundRef


class RoundMismatch(FailedPreconditionError):
    """K's and E's shares name different rounds."""


class PartyConversionClient:
    def __init__(self, *, key: PartyKeyClient, evaluator: PartyMaskClient) -> None:
        self._key = key
        self._evaluator = evaluator

    def announce(self, *, round: RoundRef) -> AnnounceReceipt:
        return self._key.announce(round=round)

    def receive(self, *, round: RoundRef) -> np.ndarray:
        """This party's int64 share (Z_2^64, 16 fractional bits) of the round's values."""
        from_k = self._key.fetch_share(round_id=round.round_id)
        from_e = self._evaluator.fetch_mask_share(round_id=round.round_id)
        if from_k.round != round or from_e.round != round:
            raise RoundMismatch(f"shares for round {round.round_id} do not match its announcement {round}")
        return sum_shares(from_k.share, from_e.share)
