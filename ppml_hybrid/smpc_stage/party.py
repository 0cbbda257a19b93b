"""One MPC process: a party (ranks 0..parties-1) or the dealer (rank ``parties``).

Party process, protocol steps:

1. one torch thread; CrypTen's config (TTP provider, fixed point f=16) set inside this process
   only; torch.distributed's timeout set to the rendezvous timeout;
2. joins the gloo world of parties + dealer and agrees on its AES-CTR streams with the dealer
   and its neighbours (:mod:`~ppml_hybrid.smpc_stage.world`: the dealer's and the party's
   streams then agree on this party's share of every Beaver triple / square pair / wrap value;
   only party 0 receives data from the dealer, padded);
3. installs :class:`~ppml_hybrid.smpc_stage.transport.Transport` around the communicator;
4. runs ``program(context, inputs)``; ``inputs`` are this party's own rows only. In a session
   (:class:`~ppml_hybrid.smpc_stage.launcher.PartySession`) the process stays up: it runs one
   program per command from the orchestrator, keeping CrypTen's world, the dealer connection,
   its inputs and ``context.session`` (a per-process cache) between them;
5. leaves the world (party 0 tells the dealer to stop).

Who learns what: a party sees its own inputs, its shares, and opened values that are masked
by dealer randomness (uniform); the dealer sees its own randomness and the request sizes.

Dealer process: :func:`~ppml_hybrid.smpc_stage.dealer.serve`, answering party 0's requests
until told to stop.

Run standalone on one host per role with :func:`run_party` / :func:`run_dealer` and the same
``smpc`` section (see :mod:`ppml_hybrid.smpc_stage.rendezvous`); on one machine
:func:`ppml_hybrid.smpc_stage.launcher.run_parties` starts them all.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Dict, Optional

import torch

from ppml_hybrid.config import FIXED_POINT_BITS
from ppml_hybrid.smpc_stage.crypten_compat import import_crypten

import_crypten()  # at import: the orchestrator's fork server preloads this module
from ppml_hybrid.smpc_stage.errors import LinkSetupError, MPCError, PeerCommunicationError
from ppml_hybrid.identity import LinkIdentity, make_link_identity
from ppml_hybrid.smpc_stage.links import Mesh, Roster
from ppml_hybrid.smpc_stage.rendezvous import Rendezvous
from ppml_hybrid.smpc_stage.transport import LinkShaping, Transport, install_transport
from ppml_hybrid.smpc_stage.world import join_as_party, leave, serve_as_dealer

log = logging.getLogger(__name__)

PRECISION_BITS = FIXED_POINT_BITS


# What a party process is doing, by ProgressBoard.stage index.
STAGES = ("starting", "opening its MPC links", "waiting for the launcher's next program", "running a program")
STAGE_STARTING, STAGE_LINKS, STAGE_IDLE, STAGE_PROGRAM = range(len(STAGES))


class ProgressBoard:
    """Shared per-party progress, read by the orchestrator to attribute a hang.

    ``last[r]``: time of party r's last completed communicator call (or heartbeat);
    ``in_comm[r]``: 1 while party r waits inside a communicator call; ``ops[r]``: calls done;
    ``stage[r]``: an index into :data:`STAGES` (what party r is doing, for the timeout's message).
    Built by the orchestrator from multiprocessing shared arrays.
    """

    def __init__(self, *, last: Any, in_comm: Any, ops: Any, stage: Any) -> None:
        self.last, self.in_comm, self.ops, self.stage = last, in_comm, ops, stage

    def at(self, rank: int, stage: int) -> None:
        self.stage[rank] = stage
        self.last[rank] = time.time()

    def describe(self, rank: int) -> str:
        return STAGES[self.stage[rank]] if 0 <= self.stage[rank] < len(STAGES) else "?"

    def enter(self, rank: int) -> None:
        self.in_comm[rank] = 1

    def exit(self, rank: int) -> None:
        self.in_comm[rank] = 0
        self.ops[rank] += 1
        self.last[rank] = time.time()

    def beat(self, rank: int) -> None:
        self.last[rank] = time.time()


@dataclass(frozen=True)
class PartyContext:
    """What a party program gets: who it is, CrypTen, and the transport's counters.

    There is no global state of ours: programs receive everything through this object.
    ``session`` is this process's cache across the programs of one session (deserialized keys,
    open RPC channels); programs key their entries so a changed input is never served stale.
    """

    rank: int
    parties: int
    crypten: Any
    transport: Transport
    board: Optional[ProgressBoard] = None
    session: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # this party's own key pair (made in this process): its MPC link identity, also its client
    # credential towards K and E. None only on the hazmat (tests) path.
    identity: Optional[LinkIdentity] = field(default=None, compare=False, repr=False)

    def heartbeat(self) -> None:
        """Report progress during long local computations (no communication)."""
        if self.board is not None:
            self.board.beat(self.rank)

    def share(self, rows: Optional[torch.Tensor], *, src: int, precision: Optional[int] = None) -> Any:
        """Secret-share ``rows`` held by party ``src``; other parties pass None.

        The size is broadcast by ``src`` (one round): the number of rows a party contributes
        is public, its values are not. ``precision=0`` shares integers at scale 1.
        """
        crypten = self.crypten
        if self.rank == src:
            return crypten.cryptensor(rows.float(), src=src, broadcast_size=True, precision=precision)
        return crypten.cryptensor(torch.empty(0), src=src, broadcast_size=True, precision=precision)


@dataclass(frozen=True)
class LinkSetup:
    """What a process needs to open its MPC links: its own identity (private key: stays in this
    process) and the roster (every role's address and pinned certificate, the run digest)."""

    identity: LinkIdentity = field(repr=False)
    roster: Roster
    connect_timeout_s: Optional[float] = None
    bind_host: Optional[str] = None

    def mesh(self, *, rank: int, timeout_s: float) -> Mesh:
        return Mesh(me=rank, roster=self.roster, identity=self.identity, timeout_s=timeout_s,
                    connect_timeout_s=self.connect_timeout_s, bind_host=self.bind_host)


def _mesh(rz: Rendezvous, links: Optional[LinkSetup], *, orchestrated: bool) -> Optional[Mesh]:
    if rz.hazmat_crypten_ttp:
        return None
    if links is None:
        raise LinkSetupError(f"{rz.role} has no link setup (identity and roster): cannot join securely")
    # Under an orchestrator the links wait longer than its watchdog, so that it is the
    # orchestrator that names the hanging party.
    return links.mesh(rank=rz.rank, timeout_s=rz.timeout_s * (3 if orchestrated else 1) + 5)


def _configure_crypten(rz: Rendezvous, *, orchestrated: bool) -> Any:
    torch.set_num_threads(1)
    os.environ.update(rz.environment())
    # torch.distributed reads its default timeout when groups are created: set it in this
    # process before CrypTen creates them. Under an orchestrator the parties wait longer than
    # the orchestrator's own watchdog, so it is the orchestrator that names the hanging party.
    import torch.distributed.distributed_c10d as c10d

    c10d.default_pg_timeout = timedelta(seconds=rz.timeout_s * (3 if orchestrated else 1) + 5)
    crypten = import_crypten()
    crypten.cfg.encoder.precision_bits = PRECISION_BITS
    crypten.cfg.communicator.verbose = False  # our Transport counts
    return crypten


def watch_parent(parent_pid: int) -> None:
    """Exit this process if the orchestrator that started it disappears (no orphans)."""

    def loop() -> None:
        while True:
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(70)
            except PermissionError:
                pass
            time.sleep(0.5)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def run_party(
    *,
    rendezvous: Rendezvous,
    program: Callable[[PartyContext, Any], Any],
    inputs: Any,
    shaping: Optional[LinkShaping] = None,
    board: Optional[ProgressBoard] = None,
    links: Optional[LinkSetup] = None,
) -> Any:
    """Run ``program`` as party ``rendezvous.rank`` and return its result (steps: module doc)."""
    crypten = _configure_crypten(rendezvous, orchestrated=board is not None)
    if board is not None:
        board.at(rendezvous.rank, STAGE_LINKS)
    # The dealer process provides triples, never the trusted-first-party default.
    provider = join_as_party(crypten, mesh=_mesh(rendezvous, links, orchestrated=board is not None),
                             parties=rendezvous.parties, hazmat_crypten_ttp=rendezvous.hazmat_crypten_ttp)
    rank = rendezvous.rank
    failed = True  # until the program returns
    try:
        transport = install_transport(
            crypten.comm.get(),
            shaping=shaping,
            on_enter=(lambda: board.enter(rank)) if board is not None else None,
            on_exit=(lambda: board.exit(rank)) if board is not None else None,
        )
        transport.dealer = provider  # settles the dealer's asynchronous answers after each peer call
        ctx = PartyContext(rank=rank, parties=rendezvous.parties, crypten=crypten, transport=transport, board=board,
                           identity=links.identity if links is not None else None)
        log.info("party %d of %d started", rank, rendezvous.parties)
        result = program(ctx, inputs)
        log.info("party %d finished its program", rank)
        failed = False
        return result
    finally:
        try:
            leave(crypten, provider, failed=failed)
        except Exception:  # the world may already be broken; the process exits anyway
            log.debug("party %d: leaving the world failed", rank)


def run_dealer(*, rendezvous: Rendezvous, links: Optional[LinkSetup] = None) -> None:
    """Serve correlated randomness (:mod:`~ppml_hybrid.smpc_stage.dealer`) until party 0 says stop."""
    if not rendezvous.is_dealer:
        raise ValueError(f"run_dealer needs rank == parties ({rendezvous.parties}), got {rendezvous.rank}")
    crypten = _configure_crypten(rendezvous, orchestrated=False)
    log.info("dealer started for %d parties", rendezvous.parties)
    serve_as_dealer(crypten, mesh=_mesh(rendezvous, links, orchestrated=False), parties=rendezvous.parties,
                    hazmat_crypten_ttp=rendezvous.hazmat_crypten_ttp)
    try:
        crypten.uninit()
    except Exception:
        log.debug("dealer: uninit failed")


# ---------------------------------------------------------------- process entry points


def _orchestrated_links(rz: Rendezvous, results: Any, setup: Any) -> Optional[LinkSetup]:
    """Make this process's own link identity, publish its certificate to the orchestrator and
    receive the roster (every role's pinned certificate). The private key never leaves here."""
    if rz.hazmat_crypten_ttp:
        return None
    identity = make_link_identity(f"ppml-hybrid {rz.role}")
    results.put(("cert", rz.rank, identity.cert_pem))
    try:
        roster = setup.get(timeout=rz.timeout_s)
    except Exception:
        raise LinkSetupError(f"{rz.role}: no roster from the orchestrator within {rz.timeout_s:g} s") from None
    return LinkSetup(identity=identity, roster=roster)


def party_main(rendezvous: Rendezvous, program: Any, inputs: Any, shaping: Any, board: ProgressBoard,
               results: Any, parent_pid: int, setup: Any = None) -> None:
    """Entry point of an orchestrated party process: runs ``program`` (which reports its own
    results, see :class:`_ServeCommands`) and reports failures as ``(kind, rank, message)``."""
    watch_parent(parent_pid)
    logging.basicConfig(level=logging.WARNING)
    rank = rendezvous.rank
    try:
        inputs = pickle.loads(inputs)
        links = _orchestrated_links(rendezvous, results, setup)
        run_party(rendezvous=rendezvous, program=program, inputs=inputs, shaping=shaping, board=board, links=links)
    except PeerCommunicationError as exc:
        results.put(("peer_error", rank, str(exc)))
        results.close()
        results.join_thread()
        os._exit(1)
    except BaseException as exc:  # report everything: the orchestrator decides what it means
        results.put(("error", rank, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"))
        results.close()
        results.join_thread()
        os._exit(1)
    results.close()
    results.join_thread()


@dataclass(frozen=True)
class _ServeCommands:
    """Session program: run each program the orchestrator sends, report each result, until None.

    Commands are ``(seq, pickled program)``; results ``("ok", rank, pickled (seq, output))``.
    A program that raises ends the session (the orchestrator stops every process).
    """

    commands: Any
    results: Any

    def __call__(self, ctx: PartyContext, inputs: Any) -> None:
        while True:
            if ctx.board is not None:
                ctx.board.at(ctx.rank, STAGE_IDLE)
            command = self.commands.get()
            if command is None:
                return
            seq, program = command
            if ctx.board is not None:
                ctx.board.at(ctx.rank, STAGE_PROGRAM)
            out = pickle.loads(program)(ctx, inputs)
            # Plain pickle (by value): torch's multiprocessing reducers would pass tensors as
            # file descriptors that die with this process.
            self.results.put(("ok", ctx.rank, pickle.dumps((seq, out))))


def party_session_main(rendezvous: Rendezvous, inputs: Any, shaping: Any, board: ProgressBoard, results: Any,
                       commands: Any, parent_pid: int, setup: Any = None) -> None:
    """Entry point of a session party process (one program per command, see :class:`_ServeCommands`)."""
    party_main(rendezvous, _ServeCommands(commands=commands, results=results), inputs, shaping, board, results,
               parent_pid, setup)


def dealer_main(rendezvous: Rendezvous, parent_pid: int, results: Any = None, setup: Any = None) -> None:
    """Entry point of the orchestrated dealer process (failures reported like a party's)."""
    watch_parent(parent_pid)
    logging.basicConfig(level=logging.WARNING)
    try:
        links = _orchestrated_links(rendezvous, results, setup)
        run_dealer(rendezvous=rendezvous, links=links)
    except PeerCommunicationError as exc:  # a consequence of another role's failure
        if results is not None:
            results.put(("peer_error", rendezvous.rank, f"{type(exc).__name__}: {exc}"))
            results.close()
            results.join_thread()
        os._exit(1)
    except MPCError as exc:
        if results is not None:
            results.put(("error", rendezvous.rank, f"{type(exc).__name__}: {exc}"))
            results.close()
            results.join_thread()
        os._exit(1)
