"""Errors of the SMPC stage. Each message names the party involved and says what to do.

Exit code 6 is the SMPC stage's (2: config, 3: data, 4: not built, 5: HE).
"""

from __future__ import annotations

from typing import Optional

from ppml_hybrid.errors import ConfigError, PPMLError


class MPCError(PPMLError):
    """Base class of every error the SMPC stage raises on purpose."""

    exit_code = 6


class RendezvousError(MPCError, ConfigError):
    """The rendezvous section (address, port, rank, parties) is unusable."""

    exit_code = 2


class PartyFailedError(MPCError):
    """A party (or the dealer) crashed, raised, or stopped making progress.

    ``party`` is the rank that caused the failure (the dealer is rank ``parties``), or None
    when it cannot be attributed to one process.
    """

    def __init__(self, message: str, *, party: Optional[int], role: str = "party") -> None:
        super().__init__(message)
        self.party = party
        self.role = role


class PartyCrashedError(PartyFailedError):
    """A party process exited (or raised) before finishing its program."""


class PartyTimeoutError(PartyFailedError):
    """No party made progress for ``smpc.timeout_s`` seconds: one of them hangs."""


class PeerCommunicationError(MPCError):
    """A communication call failed inside a party, usually because a peer went away.

    Raised inside party processes; the orchestrator treats it as a consequence of another
    party's failure, not as the cause.
    """


class LayerShapeError(MPCError):
    """Shares or public weights do not have the shapes the model config implies."""


class LinkSetupError(MPCError):
    """An MPC link could not be set up: a port in use, a peer unreachable, a bad roster."""


class PeerIdentityError(LinkSetupError):
    """A peer's certificate is not the one the consortium file pins for its role (or ours is
    not pinned at the peer): the connection was refused."""


class ConfigMismatchError(LinkSetupError):
    """Another role runs a different run config (model, split, DP or HE settings); refused
    before any MPC message."""

    exit_code = 2


class RunAbortedError(PeerCommunicationError):
    """Another role stopped the run because of a failure elsewhere (a consequence, not a cause)."""
