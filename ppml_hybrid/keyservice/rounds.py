"""The decryption policy of K: which HE->SS round may be decrypted, and whose share goes where.

Round protocol (who learns what: K learns only the announced (id, kind, shape) and, later, the
masked values v + R it decrypts; each party learns only its own share):

1. Announce. Every party P_j announces the round ``(round_id, kind, shape)`` over its own mTLS
   channel. Each party announces ids in order 0, 1, 2, ... (a gap is OUT-OF-ORDER, an id again
   is a REPLAY); every party must announce the identical (kind, shape, value bound V) (else
   MISMATCH, not recorded); V + H above ``max_mask_bits`` is refused (a mask that wide would not
   decrypt). A round is *open* once all n parties have announced it. At most
   ``max_open_rounds`` ids may be ahead of the oldest round not yet decrypted and delivered (else RESOURCE_EXHAUSTED).
   Decrypted rounds whose shares are not all fetched count as open.
2. Submit. E (only E) submits the masked ciphertexts of an open round with the same
   (round_id, kind, shape); rounds are decrypted in id order, each exactly once. A round not
   announced by every party is UNKNOWN; a later open round before the next one is
   OUT-OF-ORDER; a decrypted round is a REPLAY; another kind/shape or ciphertext count is
   INVALID_ARGUMENT. K decrypts, encodes as CrypTen fixed point and splits into n shares.
3. Fetch. Each party fetches its own share (chosen by its certificate; the request names
   no party), once. A second fetch is a REPLAY.
4. Stop. A submission K refuses at decryption (a value outside its announced range: E
   misbehaved, or a malformed ciphertext) stops the run: that round and every later request
   are refused with RunStoppedError, so E never learns more than one bit per run about a
   value's range (no retry, no bisection).

Budget: the union bound behind H bits of hiding covers at most 2^(H - 10) masked slots over
K's lifetime (``he_stage.runspec.masked_slot_budget``). K decrypts every slot of every
submitted ciphertext, padding included (junk a rotation left there is data-dependent too), so
each submission is charged ciphertexts x slots; one that would go beyond the budget is refused
(``ValueBoundError``), so a run longer than its H allows stops instead of weakening.

Quota: every request of one caller naming one retained round counts (accepted or refused);
the ``round_quota + 1``-th is RESOURCE_EXHAUSTED. A round is forgotten once all its shares
are delivered. This module holds no key and no ciphertext: it is the pure state machine.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.he_stage.runspec import masked_slot_budget

from ppml_hybrid.rpc.keyservice_errors import (
    AnnouncementMismatchError, OutOfOrderRoundError, QuotaExceededError, RoundMismatchError, RoundReplayError,
    RunStoppedError, ShareNotReadyError, TooManyOpenRoundsError, UnknownRoundError, ValueBoundError,
)
from ppml_hybrid.rpc.messages import RoundRef, ShareTensor

ANNOUNCING, OPEN, DECRYPTING, DECRYPTED = "announcing", "open", "decrypting", "decrypted"


class RequestQuota:
    """Requests per (caller, id) under one cap: the ``quota + 1``-th is RESOURCE_EXHAUSTED. Not
    thread-safe on its own: its owner calls it under its lock. :meth:`forget` ends an id's count."""

    def __init__(self, quota: int) -> None:
        self._quota = quota
        self._counts: Dict[Tuple[str, int], int] = {}

    def charge(self, caller: str, key: int, *, what: str) -> None:
        n = self._counts.get((caller, key), 0) + 1
        self._counts[(caller, key)] = n
        if n > self._quota:
            raise QuotaExceededError(f"{caller} has used its quota of {self._quota} requests for {what}")

    def forget(self, key: int) -> None:
        for k in [k for k in self._counts if k[1] == key]:
            del self._counts[k]


@dataclass
class _Round:
    ref: RoundRef
    announced: Set[int] = field(default_factory=set)
    state: str = ANNOUNCING
    shares: Dict[int, np.ndarray] = field(default_factory=dict)  # party -> its share, until fetched
    delivered: Set[int] = field(default_factory=set)


@dataclass(frozen=True)
class AnnounceResult:
    round: RoundRef
    announced: int
    parties: int


class RoundBook:
    """Thread-safe round state of one K process."""

    def __init__(self, *, parties: int, round_quota: int, max_open_rounds: int, hiding_bits: int,
                 max_mask_bits: int, slots_per_ciphertext: int) -> None:
        if parties < 2 or round_quota < 1 or max_open_rounds < 1:
            raise ConfigError("keyservice needs parties >= 2, round_quota >= 1 and max_open_rounds >= 1")
        self._hiding = hiding_bits
        self._max_mask = max_mask_bits
        self._stopped: Optional[str] = None
        self._parties = parties
        self._quota = RequestQuota(round_quota)
        self._max_open = max_open_rounds
        self._cond = threading.Condition()
        self._rounds: Dict[int, _Round] = {}
        self._next_announce: Dict[int, int] = {j: 0 for j in range(1, parties + 1)}
        self._next_decrypt = 0
        self._slots = slots_per_ciphertext
        self._slot_budget = masked_slot_budget(hiding_bits)
        self._slots_decrypted = 0

    @property
    def parties(self) -> int:
        return self._parties

    # ---------------------------------------------------------------- 1. announce (parties)

    def announce(self, *, party: int, ref: RoundRef) -> AnnounceResult:
        with self._cond:
            self._raise_if_stopped()
            r = ref.round_id
            expected = self._next_announce[party]
            if r < expected:
                raise RoundReplayError(f"party {party} already announced round {r}")
            if r > expected:
                raise OutOfOrderRoundError(f"party {party} must announce round {expected} next, not round {r}")
            oldest = min([self._next_decrypt, *self._rounds])  # undelivered rounds count as open too
            if r >= oldest + self._max_open:
                raise TooManyOpenRoundsError(
                    f"round {r} is {self._max_open} or more rounds ahead of round {oldest}, the oldest not yet "
                    "decrypted and delivered; convert and fetch the open rounds first"
                )
            self._charge(f"party {party}", r)
            if ref.value_bits + self._hiding > self._max_mask:
                raise ValueBoundError(
                    f"round {r} ({ref.kind}) announces |v| < 2^{ref.value_bits}: with {self._hiding} hiding bits the "
                    f"mask would be 2^{ref.value_bits + self._hiding}, above he.max_mask_bits={self._max_mask}"
                )
            rnd = self._rounds.get(r)
            if rnd is not None and rnd.ref != ref:
                raise AnnouncementMismatchError(
                    f"round {r} was announced as kind {rnd.ref.kind!r} shape {rnd.ref.shape} bound "
                    f"2^{rnd.ref.value_bits}; party {party} announced kind {ref.kind!r} shape {ref.shape} bound "
                    f"2^{ref.value_bits}"
                )
            if rnd is None:
                rnd = self._rounds[r] = _Round(ref=ref)
            rnd.announced.add(party)
            self._next_announce[party] = r + 1
            if len(rnd.announced) == self._parties:
                rnd.state = OPEN
            return AnnounceResult(round=ref, announced=len(rnd.announced), parties=self._parties)

    # ---------------------------------------------------------------- 2. submit (E)

    def begin_decryption(self, *, caller: str, ref: RoundRef, n_ciphertexts: int, expected_ciphertexts: int) -> RoundRef:
        """Check E's submission against the announcements; mark the round as being decrypted."""
        with self._cond:
            self._raise_if_stopped()
            r = ref.round_id
            if r < self._next_decrypt:
                raise RoundReplayError(f"round {r} was already decrypted")
            rnd = self._rounds.get(r)
            if rnd is None or rnd.state == ANNOUNCING:
                have = 0 if rnd is None else len(rnd.announced)
                raise UnknownRoundError(
                    f"round {r} has not been announced by all parties ({have} of {self._parties}); "
                    "K decrypts only announced rounds"
                )
            self._charge(caller, r)
            if rnd.state in (DECRYPTING, DECRYPTED):
                raise RoundReplayError(f"round {r} is already being decrypted or was decrypted")
            if r != self._next_decrypt:
                raise OutOfOrderRoundError(f"round {self._next_decrypt} must be decrypted before round {r}")
            if ref != rnd.ref:
                raise RoundMismatchError(
                    f"round {r} was announced as kind {rnd.ref.kind!r} shape {rnd.ref.shape}; the submission "
                    f"names kind {ref.kind!r} shape {ref.shape}"
                )
            if n_ciphertexts != expected_ciphertexts:
                raise RoundMismatchError(
                    f"round {r} (shape {rnd.ref.shape}) takes {expected_ciphertexts} ciphertexts; got {n_ciphertexts}"
                )
            slots = n_ciphertexts * self._slots
            if self._slots_decrypted + slots > self._slot_budget:
                raise ValueBoundError(
                    f"round {r} would bring the masked slots K decrypted to {self._slots_decrypted + slots}, beyond "
                    f"the {self._slot_budget} that {self._hiding} bits of hiding cover (statistical distance 2^-10 "
                    "over K's lifetime): start K for a longer run with a larger he.mask_hiding_bits"
                )
            self._slots_decrypted += slots
            rnd.state = DECRYPTING
            return rnd.ref

    def stop(self, *, round_id: int, reason: str) -> RunStoppedError:
        """Step 4: the decryption of ``round_id`` was refused; stop the run for every caller."""
        with self._cond:
            if self._stopped is None:
                self._stopped = (f"K refused the decryption of round {round_id}: {reason}. The HE evaluator (E) "
                                 "submitted a value outside the round's announced bound, or a malformed ciphertext; "
                                 "the run is stopped (no retry: it would give E a range oracle)")
            self._cond.notify_all()
            return RunStoppedError(self._stopped)

    def _raise_if_stopped(self) -> None:
        if self._stopped is not None:
            raise RunStoppedError(self._stopped)

    def complete_decryption(self, *, round_id: int, shares: List[np.ndarray]) -> None:
        with self._cond:
            rnd = self._rounds[round_id]
            if rnd.state != DECRYPTING or len(shares) != self._parties:
                raise RoundReplayError(f"round {round_id} is not being decrypted")
            rnd.shares = {j + 1: s for j, s in enumerate(shares)}
            rnd.state = DECRYPTED
            self._next_decrypt = round_id + 1
            self._cond.notify_all()

    # ---------------------------------------------------------------- 3. fetch (parties)

    def fetch(self, *, party: int, round_id: int, wait_s: float) -> ShareTensor:
        with self._cond:
            self._raise_if_stopped()
            rnd = self._rounds.get(round_id)
            if (rnd is None and round_id < self._next_decrypt) or (rnd is not None and party in rnd.delivered):
                raise RoundReplayError(f"party {party}'s share of round {round_id} was already delivered")
            if rnd is None or party not in rnd.announced:
                raise UnknownRoundError(f"party {party} has not announced round {round_id}")
            self._charge(f"party {party}", round_id)
            if not self._cond.wait_for(lambda: rnd.state == DECRYPTED or self._stopped is not None, timeout=wait_s):
                raise ShareNotReadyError(f"round {round_id} was not decrypted within {wait_s:.0f} s")
            self._raise_if_stopped()
            if party in rnd.delivered:
                raise RoundReplayError(f"party {party}'s share of round {round_id} was already delivered")
            share = rnd.shares.pop(party)
            rnd.delivered.add(party)
            if len(rnd.delivered) == self._parties:
                self._forget(round_id)
            return ShareTensor(round=rnd.ref, share=share)

    # ---------------------------------------------------------------- bookkeeping

    def _charge(self, caller: str, round_id: int) -> None:
        self._quota.charge(caller, round_id, what=f"round {round_id}")

    def _forget(self, round_id: int) -> None:
        del self._rounds[round_id]
        self._quota.forget(round_id)

    def open_rounds(self) -> int:
        with self._cond:
            return sum(1 for r in self._rounds.values() if r.state != DECRYPTED)

    def next_decryption(self) -> Optional[int]:
        with self._cond:
            return self._next_decrypt
