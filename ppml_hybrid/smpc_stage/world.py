"""Joining and leaving the MPC world with cryptographic randomness (instead of ``crypten.init``).

``crypten.init()`` seeds Mersenne Twisters and, with a TTP, receives a seed the dealer drew
with ``torch.randint`` (predictable in forked processes, sent in clear). This module does the
same joins with the randomness of :mod:`.dealer` and :mod:`.zero_sharing`:

Party (:func:`join_as_party`):

1. CrypTen's communicator joins the gloo world of n parties + the dealer (rank n);
2. key agreement with the dealer (triple stream; party 0 also a pad stream), then with the
   neighbouring parties (zero-sharing streams), every private key from this process's
   ``os.urandom``;
3. this process's CrypTen uses :class:`.dealer.DealerProvider` and the AES-CTR zero
   sharings; drawing from a torch generator raises.

Dealer (:func:`serve_as_dealer`): joins, agrees with each party, answers party 0 until told
to stop. :func:`leave` ends a party's world (party 0 stops the dealer first).

``hazmat_crypten_ttp`` (tests only, never reachable from a run config) keeps CrypTen's own
``init`` and TTP: the old behaviour, so regression tests can show their attacks succeed on it.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from ppml_hybrid.smpc_stage import zero_sharing
from ppml_hybrid.smpc_stage.dealer import PROVIDER_NAME, DealerProvider, party_streams, serve

log = logging.getLogger(__name__)


def _register_provider(crypten: Any, provider: Any) -> None:
    """Make ``provider`` CrypTen's default provider in this process."""
    vars(crypten.mpc)["__SUPPORTED_PROVIDERS"][PROVIDER_NAME] = provider
    crypten.cfg.mpc.provider = PROVIDER_NAME


def join_as_party(crypten: Any, *, hazmat_crypten_ttp: bool = False) -> Optional[DealerProvider]:
    """Steps 1-3 for a party process whose environment names its rank (see rendezvous)."""
    if hazmat_crypten_ttp:
        crypten.cfg.mpc.provider = "TTP"
        crypten.init()
        return None
    comm_module = crypten.communicator
    comm_module._init(use_threads=False, init_ttp=True)
    comm = comm_module.get()
    rank, parties = comm.get_rank(), comm.get_world_size()
    streams = party_streams(rank=rank, dealer_rank=comm.get_ttp_rank(), group=comm.ttp_group)
    zero_sharing.install(crypten, zero_sharing.neighbour_streams(rank=rank, parties=parties, group=comm.main_group))
    provider = DealerProvider(comm=comm, streams=streams)
    _register_provider(crypten, provider)
    # CrypTen's shutdown would send the dealer a pickled "terminate" on another group: we stop it ourselves.
    comm.ttp_initialized = False
    return provider


def serve_as_dealer(crypten: Any, *, parties: int, hazmat_crypten_ttp: bool = False) -> None:
    """The dealer process: join, agree with every party, serve until party 0 says stop."""
    if hazmat_crypten_ttp:
        crypten.cfg.mpc.provider = "TTP"
        crypten.mpc.provider.TTPServer()  # runs crypten.init() and CrypTen's request loop
        return
    comm_module = crypten.communicator
    comm_module._init(use_threads=False, init_ttp=True)
    comm = comm_module.get()
    comm.ttp_initialized = False
    served = serve(comm=comm, parties=parties)
    log.info("dealer served %d requests", served)


def leave(crypten: Any, provider: Optional[DealerProvider]) -> None:
    """End this party's world: party 0 stops the dealer, then CrypTen's groups are destroyed."""
    if provider is not None:
        provider.terminate()
    crypten.uninit()
