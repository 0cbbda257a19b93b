"""Role ``party``: one hospital. ``python -m ppml_hybrid party --role party-J ...``

Steps, on the hospital's own host:

1. read the run config (the same overrides as every role; ``data.root`` names this site's own
   folder), the consortium file and this role's identity (its own key, made by ``keygen``);
   check the identity is the one the consortium pins for this role;
2. load and split only this site's scans (``ppml_hybrid.data.load_site_splits``);
3. dial the coordinator (mutual TLS, pinned) and say :class:`~.messages.Hello` with this
   site's training-row count;
4. open the authenticated MPC links to the other parties and the dealer (TLS 1.3, pinned,
   fixed ports; the run digest is compared before the first message);
5. on :class:`~.messages.Start`: derive the plan itself (schedule and noise from the config
   and the sites' counts, never taken from the coordinator); for a split below the last
   block, verify K's attestation itself over its own channel (``VerifyKeyService``); answer
   :class:`~.messages.Ready`;
6. serve :class:`~.messages.TrainStep` (this party's program, built here from the config and
   the public weights: nothing executable comes over the wire), :class:`~.messages.Evaluate`
   (this site's aggregates only) until :class:`~.messages.Stop`; refuse steps out of order or
   beyond the plan.

Who learns what: this process holds this site's rows, its shares and its own key. The
coordinator learns what :mod:`.messages` lists; the other parties and the dealer learn what
the MPC protocols reveal (masked values, noised sums, padded row counts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ppml_hybrid.config import RunConfig, run_digest
from ppml_hybrid.consortium import Consortium, party_role
from ppml_hybrid.errors import ConfigError, PPMLError, PrivacyBudgetError
from ppml_hybrid.identity import LinkIdentity
from ppml_hybrid.roles import messages as m
from ppml_hybrid.roles.common import (
    check_parties, check_pinned, read_development_root, service_registry, when_reachable,
)
from ppml_hybrid.rpc.codec import decode, encode
from ppml_hybrid.rpc.coordination import ControlChannelError, CoordinatorLink
from ppml_hybrid.training.plan import (
    HybridContext, RunPlan, is_all_mpc, needs_key_service, plan_run, split_clip, step_program,
)

log = logging.getLogger("ppml_hybrid.party")


class ProtocolOrderError(PPMLError):
    """The coordinator sent a command out of order, or beyond the run's plan: refused."""

    exit_code = 6


def plan_digest(plan: RunPlan) -> str:
    """What every party must agree on before step 1 (compared by the coordinator)."""
    s = plan.schedule
    raw = [list(plan.train_rows), s.sample_rate, s.total_steps, s.expected_batch, plan.sigma, plan.sigma_eff]
    return hashlib.sha256(json.dumps(raw).encode()).hexdigest()


@dataclass(frozen=True)
class KeyServiceAccess:
    """How this party reaches and checks K and E (from the consortium file and its own flags)."""

    endpoints: Any  # ServiceEndpoints
    registry: Any  # whom K must decrypt for: the consortium's parties and evaluator
    # this host's own choice: accept K's development attestation with the root in this file
    development_root: Optional[Path] = None


def key_service_access(consortium: Consortium, *, development_root: Optional[Path],
                       with_evaluator: bool = True) -> KeyServiceAccess:
    """K (and E when blocks run under HE: ``with_evaluator``) from the consortium file; K's
    registry names E exactly when the run has one, at K and at every party alike."""
    from ppml_hybrid.protocols.hybrid_train_step import ServiceEndpoints

    k = consortium.role("keyservice")
    e = consortium.role("evaluator") if with_evaluator else None
    endpoints = ServiceEndpoints(key_address=k.address, key_trust_pem=k.cert_pem,
                                 evaluator_address=e.address if e else "", evaluator_trust_pem=e.cert_pem if e else b"")
    return KeyServiceAccess(endpoints=endpoints, registry=service_registry(consortium, with_evaluator=with_evaluator),
                            development_root=development_root)


@dataclass
class ServeCoordinator:
    """The party program of a whole run (steps 5-6 of the module doc), run inside the MPC world."""

    cfg: RunConfig
    link: CoordinatorLink
    role: str
    train_rows: int
    services: Optional[KeyServiceAccess] = None
    ledger: Any = None  # PrivacyLedger: every step is entered (and the cap checked) before it runs
    data_digest: str = ""  # of this site's training rows: kept in its own ledger, never sent

    def __call__(self, ctx: Any, inputs: Any) -> None:
        torch.set_num_threads(1)
        start = self._expect(m.Start)
        if len(start.train_rows) != ctx.parties or start.train_rows[ctx.rank] != self.train_rows:
            raise ProtocolOrderError(f"{self.role}: the coordinator's row counts {start.train_rows} do not list "
                                     f"this site's {self.train_rows} training rows at rank {ctx.rank}")
        plan = plan_run(self.cfg, train_rows=start.train_rows)
        released = self._check_resume(plan, start.resume_step)
        hybrid, key, key_digest, development = self._verify_key_service(ctx, inputs)
        log.info("%s: plan of %d steps at sample rate %.4f, noise multiplier %.4f (noise from %s)%s", self.role,
                 plan.schedule.total_steps, plan.schedule.sample_rate, plan.sigma,
                 self.cfg.dp.noise_source if plan.dp is not None else "nobody: dp=off",
                 "; K's attestation verified" if key is not None else "")
        self.link.send(encode(m.Ready(plan_digest=plan_digest(plan), key_material_digest=key_digest,
                                      development_attestation=development, ledger_releases=released)))
        next_step = start.resume_step
        while True:
            msg = self._next()
            if isinstance(msg, m.Stop):
                log.info("%s: stopped by the coordinator after %d steps%s", self.role, next_step,
                         f" ({msg.reason})" if msg.reason else "")
                return
            if isinstance(msg, m.TrainStep):
                if msg.step != next_step or msg.step >= plan.schedule.total_steps:
                    raise ProtocolOrderError(f"{self.role}: step {msg.step} asked; the next is {next_step} of "
                                             f"{plan.schedule.total_steps} planned")
                self._enter_in_ledger(plan, msg.step)
                program = step_program(self.cfg, plan, step=msg.step, state=dict(msg.state), hybrid=hybrid,
                                       key_service=key)
                self.link.send(encode(m.StepDone(output=program(ctx, inputs))))
                next_step += 1
            elif isinstance(msg, m.Evaluate):
                from ppml_hybrid.training.site_metrics import EvaluateAtSite

                program = EvaluateAtSite(model=self.cfg.model, state_dict=dict(msg.state),
                                         image_size=self.cfg.data.image_size, split=msg.split,
                                         split_clip=split_clip(self.cfg))
                self.link.send(encode(m.Evaluated(aggregate=program(ctx, inputs))))
            else:
                raise ProtocolOrderError(f"{self.role}: unexpected {m.describe(msg)} from the coordinator")

    def _check_resume(self, plan: RunPlan, resume_step: int) -> int:
        """This run's releases in the ledger; a resume is refused when the ledger does not hold
        the steps the run already took, or holds them over other training rows of this site."""
        if plan.dp is None or self.ledger is None:
            return 0
        releases = self.ledger.releases()
        if resume_step > len(releases):
            raise PrivacyBudgetError(f"{self.role}: the coordinator resumes at step {resume_step + 1} but this "
                                     f"site's ledger {self.ledger.path} holds {len(releases)} releases of the run: "
                                     "run the party with the ledger it used (--ledger), or start a new run")
        if resume_step and releases and releases[-1].data not in ("", self.data_digest):
            raise ProtocolOrderError(f"{self.role}: this site's training rows changed since the run's last step "
                                     f"(ledger {self.ledger.path}): a resume must train on the same rows")
        return len(releases)

    def _enter_in_ledger(self, plan: RunPlan, step: int) -> None:
        """This site's ledger entry for ``step``, durable before the step opens anything."""
        if plan.dp is None:
            return
        if self.ledger is None:
            raise ConfigError(f"{self.role}: a DP run needs this party's privacy ledger (--ledger)")
        from ppml_hybrid.training.ledger import Release
        from ppml_hybrid.training.plan import enclave_noise

        self.ledger.before_opening(
            Release(run=self.ledger.run, step=step, sample_rate=plan.schedule.sample_rate,
                    noise_multiplier=plan.sigma_eff, data=self.data_digest),
            max_epsilon=self.cfg.dp.max_epsilon, delta=self.cfg.dp.delta, discrete=enclave_noise(self.cfg))

    def _verify_key_service(self, ctx: Any, inputs: Any):
        if not needs_key_service(self.cfg):
            return None, None, "", False
        from ppml_hybrid.protocols.hybrid_train_step import VerifyKeyService
        from ppml_hybrid.protocols.key_access import KeyEndpoint
        from ppml_hybrid.training.plan import he_run_spec

        if self.services is None:
            raise ConfigError(f"split_layer={self.cfg.split_layer} with dp.noise_source={self.cfg.dp.noise_source} "
                              "needs the key service: the consortium file must list keyservice (and evaluator when "
                              "blocks run under HE)")
        svc = self.services
        root = None
        if svc.development_root is not None:
            root = read_development_root(svc.development_root, timeout_s=self.cfg.keyservice.startup_timeout_s)
        verify = VerifyKeyService(endpoints=svc.endpoints, keyservice=self.cfg.keyservice, registry=svc.registry,
                                  development_root_pem=root, accept_development=root is not None,
                                  return_material=True)
        digest, development, material = when_reachable(lambda: verify(ctx, inputs),
                                                       timeout_s=self.cfg.keyservice.startup_timeout_s,
                                                       what=f"the key service at {svc.endpoints.key_address}",
                                                       waiting=ctx.heartbeat)
        key = KeyEndpoint(address=svc.endpoints.key_address, trust_pem=svc.endpoints.key_trust_pem)
        if is_all_mpc(self.cfg):
            return None, key, digest, development
        return HybridContext(endpoints=svc.endpoints, material=material, spec=he_run_spec(self.cfg)), key, digest, \
            development

    def _next(self) -> Any:
        raw = self.link.recv()
        if raw is None:
            raise ControlChannelError(f"{self.role}: the coordinator at {self.link.address} ended the session "
                                      "without Stop")
        return decode(raw, types=m.TO_PARTY)

    def _expect(self, kind: type) -> Any:
        msg = self._next()
        if not isinstance(msg, kind):
            raise ProtocolOrderError(f"{self.role}: expected {kind.__name__} from the coordinator, got "
                                     f"{m.describe(msg)}")
        return msg


def default_ledger_path(role: str, digest: str) -> Path:
    """Where a party keeps its ledger unless ``--ledger`` says: per run digest, in the user's home
    (a re-run of the same config over the same data adds to the same ledger)."""
    return Path.home() / ".ppml_hybrid" / "ledgers" / f"{role}-{digest[:16]}.jsonl"


def run_party_role(*, cfg: RunConfig, consortium: Consortium, identity: LinkIdentity, role: str,
                   development_root: Optional[Path] = None, bind_host: Optional[str] = None,
                   ledger_path: Optional[Path] = None) -> int:
    """Steps 1-6 of the module doc for ``role`` (``party-J``); returns the exit code."""
    from ppml_hybrid.data import load_site_splits
    from ppml_hybrid.protocols.hybrid_train_step import HybridPartyInputs
    from ppml_hybrid.smpc_stage.links import Roster
    from ppml_hybrid.smpc_stage.party import LinkSetup, run_party
    from ppml_hybrid.smpc_stage.rendezvous import Rendezvous
    from ppml_hybrid.training.site_metrics import site_rows

    rank = _rank_of(role, consortium, cfg)
    check_pinned(identity, consortium, role)
    splits = load_site_splits(cfg.data, num_classes=cfg.model.num_classes, progress=False)
    rows = site_rows(splits)
    log.info("%s: %d training, %d validation, %d test rows of this site", role, len(rows.labels),
             len(splits.val), len(splits.test))
    coordinator = consortium.role("coordinator")
    link = CoordinatorLink(address=coordinator.address, coordinator_cert_pem=coordinator.cert_pem, identity=identity,
                           connect_timeout_s=cfg.smpc.timeout_s)
    digest = run_digest(cfg)
    try:
        link.send(encode(m.Hello(role=role, run_digest=digest, train_rows=len(rows.labels))))
        services = None
        if needs_key_service(cfg):
            services = key_service_access(consortium, development_root=development_root,
                                          with_evaluator=not is_all_mpc(cfg))
        from ppml_hybrid.training.ledger import PrivacyLedger

        ledger = PrivacyLedger(ledger_path or default_ledger_path(role, digest), run_digest=digest)
        log.info("%s: privacy ledger %s (%d earlier releases of this run)", role, ledger.path,
                 len(ledger.releases()))
        from ppml_hybrid.training.checkpoint import data_digest

        program = ServeCoordinator(cfg=cfg, link=link, role=role, train_rows=len(rows.labels), services=services,
                                   ledger=ledger, data_digest=data_digest(rows.images, rows.labels))
        links = LinkSetup(identity=identity, roster=Roster.from_consortium(consortium, run_digest=digest),
                          bind_host=bind_host)
        rz = Rendezvous(master_addr="127.0.0.1", master_port=1, parties=consortium.parties, rank=rank,
                        timeout_s=cfg.smpc.timeout_s)
        inputs = rows if is_all_mpc(cfg) else HybridPartyInputs(rows=rows)
        run_party(rendezvous=rz, program=program, inputs=inputs, links=links)
        return 0
    except BaseException as exc:  # tell the coordinator who failed and why, then fail here too
        _report(link, role, exc, getattr(exc, "exit_code", 1))
        raise
    finally:
        time.sleep(0.2)  # let the last message (result or failure) leave before the channel closes
        link.close()


def _report(link: CoordinatorLink, role: str, exc: BaseException, code: int) -> None:
    try:
        link.send(encode(m.Failed(role=role, error=type(exc).__name__, message=m.first_line(exc), exit_code=code)))
    except Exception:  # the channel may be what failed
        log.debug("%s: could not report the failure to the coordinator", role)


def _rank_of(role: str, consortium: Consortium, cfg: RunConfig) -> int:
    check_parties(consortium, cfg.smpc.parties)
    parties = consortium.parties
    for j in range(parties):
        if party_role(j) == role:
            return j
    raise ConfigError(f"--role {role!r} is not a party of {consortium.source} "
                      f"(party-0..party-{parties - 1})")
