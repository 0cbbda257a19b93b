"""A party's privacy ledger: every release of its data, written before the release is opened.

Each party keeps its own ledger (a JSON-lines file on its own host, no secret in it: step,
sample rate, the noise multiplier the accountant counts, the run digest). Before a step's sums
can be opened, the party appends that step's entry and flushes it to disk (``fsync``), so no
opened step goes uncounted, whatever stops the run afterwards; a step that then fails is counted
anyway (conservative). Entries of earlier sessions of the same run (same run digest: a restarted
or resumed run over the same data) count too.

With ``dp.max_epsilon`` the party refuses (:class:`PrivacyBudgetError`) a step whose entry would
take the ledger's epsilon (RDP, the run's accounting: integer orders for K's discrete Gaussian)
beyond the cap; the coordinator applies the same rule and stops the run there.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from ppml_hybrid.errors import PrivacyBudgetError
from ppml_hybrid.privacy.accounting import epsilon_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    """One ledger entry."""

    run: str  # run digest
    step: int
    sample_rate: float
    noise_multiplier: float  # what the accountant counts (sigma_eff)
    data: str = ""  # digest of the site's training rows (a resume over other rows is refused)


def epsilon_of(releases: Sequence[Release], *, delta: float, discrete: bool) -> float:
    """Epsilon of these releases (Opacus's RDP accountant)."""
    if not releases:
        return 0.0
    from opacus.accountants import RDPAccountant  # imported here: about 4 s, and only with a cap

    acc = RDPAccountant()
    for r in releases:
        acc.step(noise_multiplier=r.noise_multiplier, sample_rate=r.sample_rate)
    return float(acc.get_epsilon(delta=delta, **epsilon_options(discrete=discrete)))


def would_exceed(releases: Sequence[Release], nxt: Release, *, max_epsilon: Optional[float], delta: float,
                 discrete: bool) -> Optional[float]:
    """The epsilon after ``nxt`` if it exceeds ``max_epsilon``, else None."""
    if max_epsilon is None:
        return None
    eps = epsilon_of([*releases, nxt], delta=delta, discrete=discrete)
    return eps if eps > max_epsilon else None


def stops_at_cap(done: Sequence[Release], nxt: Release, *, max_epsilon: Optional[float], delta: float,
                 discrete: bool, total_steps: int) -> bool:
    """The rule the coordinator and plaintext mode apply before each step (the parties' own,
    applied first): True, and said, when ``nxt`` would take epsilon beyond ``max_epsilon``."""
    over = would_exceed(done, nxt, max_epsilon=max_epsilon, delta=delta, discrete=discrete)
    if over is not None:
        log.warning("stopping after %d of %d steps: the next would take epsilon to %.3f, beyond dp.max_epsilon=%g",
                    nxt.step, total_steps, over, max_epsilon)
    return over is not None


class PrivacyLedger:
    """The JSON-lines ledger at ``path`` for the run ``run_digest`` (module doc)."""

    def __init__(self, path: Path, *, run_digest: str) -> None:
        self.path = Path(path)
        self.run = run_digest
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def releases(self) -> List[Release]:
        """This run's entries so far (other runs' lines are kept, not counted)."""
        if not self.path.exists():
            return []
        out = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                release = Release(run=str(raw["run"]), step=int(raw["step"]), sample_rate=float(raw["sample_rate"]),
                                  noise_multiplier=float(raw["noise_multiplier"]), data=str(raw.get("data", "")))
            except (ValueError, KeyError, TypeError) as exc:
                raise PrivacyBudgetError(f"{self.path} line {n}: not a ledger entry ({type(exc).__name__}); the "
                                         "ledger must not be edited: restore it or start a new run") from None
            if release.run == self.run:
                out.append(release)
        return out

    def before_opening(self, nxt: Release, *, max_epsilon: Optional[float], delta: float, discrete: bool) -> None:
        """Refuse ``nxt`` if it would break the cap, else append it durably (before any opening)."""
        over = (would_exceed(self.releases(), nxt, max_epsilon=max_epsilon, delta=delta, discrete=discrete)
                 if max_epsilon is not None else None)  # the file is read only when there is a cap
        if over is not None:
            raise PrivacyBudgetError(f"step {nxt.step + 1} would take this site's epsilon to {over:.3f}, beyond "
                                     f"dp.max_epsilon={max_epsilon} (ledger {self.path}); the party refuses it")
        line = json.dumps({"run": nxt.run, "step": nxt.step, "sample_rate": nxt.sample_rate,
                           "noise_multiplier": nxt.noise_multiplier, "data": nxt.data, "time": time.time()}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
