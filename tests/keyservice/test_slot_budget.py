"""K's lifetime budget behind H bits of hiding: at most 2^(H-10) decrypted slots, every slot of
every submitted ciphertext counted (padding included), on K's own round book."""

from __future__ import annotations

import numpy as np
import pytest

from ppml_hybrid.keyservice.rounds import RoundBook
from ppml_hybrid.rpc.keyservice_errors import ValueBoundError
from ppml_hybrid.rpc.messages import RoundRef

H = 13  # budget 2^(13-10) = 8 slots
SLOTS = 2


def _book() -> RoundBook:
    return RoundBook(parties=2, round_quota=4, max_open_rounds=8, hiding_bits=H, max_mask_bits=56,
                     slots_per_ciphertext=SLOTS)


def _decrypt(book: RoundBook, round_id: int, *, ciphertexts: int) -> None:
    ref = RoundRef(round_id=round_id, kind="act", shape=(1, 1), value_bits=4)  # one value, padded slots around it
    for party in (1, 2):
        book.announce(party=party, ref=ref)
    book.begin_decryption(caller="evaluator", ref=ref, n_ciphertexts=ciphertexts, expected_ciphertexts=ciphertexts)
    book.complete_decryption(round_id=round_id, shares=[np.zeros((1, 1), np.int64)] * 2)


def test_every_decrypted_slot_counts_and_the_budget_holds():
    book = _book()
    _decrypt(book, 0, ciphertexts=2)  # 4 slots for a single value: padding counts
    _decrypt(book, 1, ciphertexts=2)  # 8 slots: the whole budget
    with pytest.raises(ValueBoundError, match="masked slots K decrypted to 10, beyond the 8"):
        _decrypt(book, 2, ciphertexts=1)


def test_a_run_within_the_budget_is_served():
    book = _book()
    for r in range(4):
        _decrypt(book, r, ciphertexts=1)
