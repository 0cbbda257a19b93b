"""HE->SS, party side: the int64 share from masked decryption goes straight into the MPC.

Steps (design section 6): E adds a fresh mask R to the ciphertext and secret-shares -R; K
decrypts v + R and secret-shares it; party P_j's
:meth:`~ppml_hybrid.protocols.conversion_client.PartyConversionClient.receive` sums its two shares
into its additive share of v in Z_2^64 with 16 fractional bits. :func:`share_to_mpc` wraps that
share, unchanged, as this party's share of a CrypTen ``MPCTensor`` (no opening, no
communication). Fresh masks per round are E's job.

Who learns what: the party sees only its own share (uniform); nothing is logged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ppml_hybrid.protocols.errors import ConversionError
from ppml_hybrid.protocols.params import CRYPTEN_FRACTION_BITS


def share_to_mpc(*, crypten: Any, share: np.ndarray, precision: int = CRYPTEN_FRACTION_BITS) -> Any:
    """This party's int64 share -> its share of an arithmetic ``MPCTensor`` (every party calls it)."""
    a = np.asarray(share)
    if a.dtype != np.int64:
        raise ConversionError(f"HE->SS shares must be int64 (Z_2^64); got {a.dtype}")
    return crypten.mpc.MPCTensor.from_shares(torch.from_numpy(a.copy()), precision=precision)


def receive_into_mpc(*, crypten: Any, client: Any, round: Any) -> Any:
    """Fetch this party's shares of ``round`` (``PartyConversionClient``) and wrap them for CrypTen."""
    return share_to_mpc(crypten=crypten, share=client.receive(round=round))
