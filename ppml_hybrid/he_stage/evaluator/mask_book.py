"""E's shares of -R per round, each delivered once to its own party (picked by certificate)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Set

import numpy as np

from ppml_hybrid.rpc.evaluator_errors import MaskNotReadyError, MaskReplayError, TooManyMaskRoundsError
from ppml_hybrid.rpc.messages import RoundRef, ShareTensor


@dataclass
class _Entry:
    ref: RoundRef
    shares: Dict[int, np.ndarray] = field(default_factory=dict)
    delivered: Set[int] = field(default_factory=set)


class MaskShareBook:
    def __init__(self, *, parties: int, max_rounds: int) -> None:
        self._parties = parties
        self._max = max_rounds
        self._cond = threading.Condition()
        self._rounds: Dict[int, _Entry] = {}
        self._reserved: Set[int] = set()
        self._done: Set[int] = set()  # round ids masked before (never masked twice)
        self._stopped: Optional[str] = None

    def stop(self, *, reason: str) -> None:
        """K stopped the run: no round is masked or delivered any more."""
        with self._cond:
            self._stopped = reason
            self._rounds.clear()
            self._cond.notify_all()

    def _raise_if_stopped(self) -> None:
        if self._stopped is not None:
            from ppml_hybrid.rpc.keyservice_errors import RunStoppedError

            raise RunStoppedError(self._stopped)

    def reserve(self, *, ref: RoundRef) -> None:
        """Claim a round id before masking: each round is masked once, with one fresh R."""
        with self._cond:
            self._raise_if_stopped()
            r = ref.round_id
            if r in self._done or r in self._rounds or r in self._reserved:
                raise MaskReplayError(f"round {r} was already masked; a mask is never reused")
            if len(self._rounds) + len(self._reserved) >= self._max:
                raise TooManyMaskRoundsError(f"{self._max} rounds hold undelivered mask shares; parties must fetch them")
            self._reserved.add(r)

    def release(self, *, round_id: int) -> None:
        """Masking or K's decryption failed: the shares are dropped (a retry draws a new R)."""
        with self._cond:
            self._reserved.discard(round_id)

    def publish(self, *, ref: RoundRef, shares: Sequence[np.ndarray]) -> None:
        with self._cond:
            self._reserved.discard(ref.round_id)
            self._done.add(ref.round_id)
            self._rounds[ref.round_id] = _Entry(ref=ref, shares={j + 1: s for j, s in enumerate(shares)})
            self._cond.notify_all()

    def fetch(self, *, party: int, round_id: int, wait_s: float) -> ShareTensor:
        with self._cond:
            ready = self._cond.wait_for(lambda: round_id in self._rounds or round_id in self._done
                                        or self._stopped is not None, timeout=wait_s)
            self._raise_if_stopped()
            if not ready:
                raise MaskNotReadyError(f"round {round_id} was not masked within {wait_s:.0f} s")
            e = self._rounds.get(round_id)
            if e is None or party in e.delivered:
                raise MaskReplayError(f"party {party}'s mask share of round {round_id} was already delivered")
            share = e.shares.pop(party)
            e.delivered.add(party)
            if len(e.delivered) == self._parties:
                del self._rounds[round_id]
            return ShareTensor(round=e.ref, share=share)
