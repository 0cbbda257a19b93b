"""Where the parties meet: address, port, world size and this process's rank.

On one machine the orchestrator (:func:`ppml_hybrid.smpc_stage.launcher.run_parties`) builds
one :class:`Rendezvous` per process from ``smpc`` and starts them all on loopback. Across
machines each hospital runs its own party with the same ``smpc`` section plus its own
``smpc.rank`` (0..parties-1); the dealer runs with ``rank = parties``. All processes must
reach ``master_addr:master_port`` (rank 0 listens there: open the port on rank 0's host).

The dealer (CrypTen's TTP server) is one more rank in the same torch.distributed world: a
world of ``parties + 1`` processes, in which the MPC itself uses ranks ``0..parties-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from ppml_hybrid.config import SMPCConfig
from ppml_hybrid.smpc_stage.errors import RendezvousError

BACKENDS = ("gloo",)


@dataclass(frozen=True)
class Rendezvous:
    """One process's view of the torch.distributed world (parties + dealer)."""

    master_addr: str
    master_port: int
    parties: int
    rank: int
    backend: str = "gloo"
    timeout_s: float = 300.0
    # HAZMAT, tests only: CrypTen's own init and TTP (Mersenne Twister triples, seeds from
    # torch.randint): the insecure behaviour regression tests attack. No config key sets it.
    hazmat_crypten_ttp: bool = False

    def __post_init__(self) -> None:
        if self.parties not in (2, 3):
            raise RendezvousError(f"smpc.parties must be 2 or 3, got {self.parties}")
        if not 0 <= self.rank <= self.parties:
            raise RendezvousError(
                f"rank {self.rank} is out of range: parties use 0..{self.parties - 1} and the "
                f"dealer uses {self.parties}"
            )
        if not 0 < self.master_port < 65536:
            raise RendezvousError(f"smpc.master_port must be in 1..65535, got {self.master_port}")
        if self.backend not in BACKENDS:
            raise RendezvousError(f"smpc.backend={self.backend!r} is not one of {BACKENDS}")
        if self.timeout_s <= 0:
            raise RendezvousError(f"smpc.timeout_s must be positive, got {self.timeout_s}")

    @property
    def is_dealer(self) -> bool:
        return self.rank == self.parties

    @property
    def role(self) -> str:
        return "dealer" if self.is_dealer else f"party {self.rank}"

    def environment(self) -> Dict[str, str]:
        """The environment CrypTen's communicator reads (``crypten.init``)."""
        return {
            "DISTRIBUTED_BACKEND": self.backend,
            "RENDEZVOUS": f"tcp://{self.master_addr}:{self.master_port}",
            "WORLD_SIZE": str(self.parties),
            "RANK": str(self.rank),
        }


def rendezvous_for(smpc: SMPCConfig, *, rank: int, port: int | None = None) -> Rendezvous:
    """The rendezvous of process ``rank`` from the ``smpc`` config section."""
    return Rendezvous(
        master_addr=smpc.master_addr,
        master_port=smpc.master_port if port is None else port,
        parties=smpc.parties,
        rank=rank,
        backend=smpc.backend,
        timeout_s=smpc.timeout_s,
    )
