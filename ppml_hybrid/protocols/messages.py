"""Messages of SS->HE. Ciphertexts are OpenFHE binary serializations (bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class EncryptedShare:
    """P_j -> E: Enc(u_j / 2^f), packed with the run's :class:`SlotLayout`."""

    party: int  # 0-based rank
    cts: Tuple[bytes, ...]


@dataclass(frozen=True)
class ChainMessage:
    """P_j -> P_{j+1} (the last party -> E): Enc(XOR of bit shares so far), per carry bit.

    ``bits[k]`` holds the packed ciphertexts of carry bit k (bit m + k of sum u_j).
    """

    sender: int  # 0-based rank
    bits: Tuple[Tuple[bytes, ...], ...]


@dataclass(frozen=True)
class ChainTranscript:
    """Test aid: what a party received in the chain and what it passed on."""

    received: ChainMessage | None
    sent: ChainMessage


@dataclass(frozen=True)
class PartyContribution:
    """Everything one party sends towards E for one SS->HE conversion."""

    share: EncryptedShare
    chain: ChainMessage | None  # only the last party's chain message goes to E
    shape: Tuple[int, int]  # (batch, features): public
