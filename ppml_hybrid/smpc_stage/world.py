"""Joining and leaving the MPC world with cryptographic randomness (instead of ``crypten.init``).

``crypten.init()`` seeds Mersenne Twisters and, with a TTP, receives a seed the dealer drew
with ``torch.randint`` (predictable in forked processes, sent in clear). This module does the
same joins with the randomness of :mod:`.dealer` and :mod:`.zero_sharing`:

Party (:func:`join_as_party`):

1. opens its mutually authenticated TLS links to the other parties and the dealer (rank n)
   (:mod:`.links`) and makes :class:`.link_communicator.LinkCommunicator` CrypTen's
   communicator in this process (no gloo, no rendezvous store);
2. key agreement with the dealer (triple stream; party 0 also a pad stream), then with the
   neighbouring parties (zero-sharing streams), every private key from this process's
   ``os.urandom``, over those links;
3. this process's CrypTen uses :class:`.dealer.DealerProvider` and the AES-CTR zero
   sharings; drawing from a torch generator raises.

Dealer (:func:`serve_as_dealer`): joins, agrees with each party, answers party 0 until told
to stop. :func:`leave` ends a party's world (party 0 stops the dealer first).

``hazmat_crypten_ttp`` (tests only, never reachable from a run config) keeps CrypTen's own
``init``, TTP and gloo links in clear: the old behaviour, so regression tests can show their
attacks succeed on it.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from ppml_hybrid.smpc_stage import link_communicator, zero_sharing
from ppml_hybrid.smpc_stage.dealer import PROVIDER_NAME, DealerProvider, party_streams, serve
from ppml_hybrid.smpc_stage.errors import LinkSetupError
from ppml_hybrid.smpc_stage.link_communicator import LinkCommunicator
from ppml_hybrid.smpc_stage.links import Mesh

log = logging.getLogger(__name__)


def _register_provider(crypten: Any, provider: Any) -> None:
    """Make ``provider`` CrypTen's default provider in this process."""
    vars(crypten.mpc)["__SUPPORTED_PROVIDERS"][PROVIDER_NAME] = provider
    crypten.cfg.mpc.provider = PROVIDER_NAME


def _join_links(crypten: Any, mesh: Mesh, parties: int) -> LinkCommunicator:
    comm = LinkCommunicator(mesh=mesh.open(), parties=parties)
    link_communicator.install(crypten, comm)
    return comm


def join_as_party(crypten: Any, *, mesh: Optional[Mesh], parties: int,
                  hazmat_crypten_ttp: bool = False) -> Optional[DealerProvider]:
    """Steps 1-3 for party ``mesh.me.rank`` (``mesh``: this process's links, not yet open)."""
    if hazmat_crypten_ttp:
        crypten.cfg.mpc.provider = "TTP"
        crypten.init()
        return None
    if mesh is None:
        raise LinkSetupError("a party needs its authenticated links (identity and roster) to join")
    comm = _join_links(crypten, mesh, parties)
    rank = comm.get_rank()
    streams = party_streams(rank=rank, dealer_rank=comm.get_ttp_rank(), comm=comm)
    zero_sharing.install(crypten, zero_sharing.neighbour_streams(rank=rank, parties=parties, comm=comm))
    provider = DealerProvider(comm=comm, streams=streams)
    _register_provider(crypten, provider)
    return provider


def serve_as_dealer(crypten: Any, *, mesh: Optional[Mesh], parties: int, hazmat_crypten_ttp: bool = False) -> None:
    """The dealer process: join, agree with every party, serve until party 0 says stop."""
    if hazmat_crypten_ttp:
        crypten.cfg.mpc.provider = "TTP"
        crypten.mpc.provider.TTPServer()  # runs crypten.init() and CrypTen's request loop
        return
    if mesh is None:
        raise LinkSetupError("the dealer needs its authenticated links (identity and roster) to join")
    comm = _join_links(crypten, mesh, parties)
    served = serve(comm=comm, parties=parties)
    log.info("dealer served %d requests", served)


def leave(crypten: Any, provider: Optional[DealerProvider], *, failed: bool = False) -> None:
    """End this party's world: party 0 stops the dealer (aborts it, if this party failed), then
    the links (or CrypTen's groups) close."""
    if provider is not None:
        provider.terminate(failed=failed)
    crypten.uninit()
