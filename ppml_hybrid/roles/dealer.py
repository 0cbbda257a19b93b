"""Role ``dealer``: serves the parties' correlated randomness. ``python -m ppml_hybrid dealer ...``

It opens its authenticated MPC links (pinned certificates from the consortium file, its own
key) and answers party 0's requests (:mod:`ppml_hybrid.smpc_stage.dealer`) until party 0 says
stop; a broken link ends it with an error. Who learns what: the dealer sees every triple it
makes and the request sizes, nothing else, so it must collude with no party (run it at an
organisation that is none of the hospitals).
"""

from __future__ import annotations

import logging
from typing import Optional

from ppml_hybrid.config import RunConfig, run_digest
from ppml_hybrid.consortium import Consortium
from ppml_hybrid.identity import LinkIdentity
from ppml_hybrid.roles.common import check_parties, check_pinned

log = logging.getLogger("ppml_hybrid.dealer")


def run_dealer_role(*, cfg: RunConfig, consortium: Consortium, identity: LinkIdentity,
                    bind_host: Optional[str] = None) -> int:
    from ppml_hybrid.smpc_stage.links import Roster
    from ppml_hybrid.smpc_stage.party import LinkSetup, run_dealer
    from ppml_hybrid.smpc_stage.rendezvous import Rendezvous

    check_pinned(identity, consortium, "dealer")
    check_parties(consortium, cfg.smpc.parties)
    links = LinkSetup(identity=identity, roster=Roster.from_consortium(consortium, run_digest=run_digest(cfg)),
                      bind_host=bind_host)
    rz = Rendezvous(master_addr="127.0.0.1", master_port=1, parties=consortium.parties, rank=consortium.parties,
                    timeout_s=cfg.smpc.timeout_s)
    run_dealer(rendezvous=rz, links=links)
    log.info("dealer finished: party 0 said stop")
    return 0
