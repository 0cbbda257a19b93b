"""The coordinator's side of encrypted training (``mode=hybrid``): schedule, public update,
accountant, metrics. It holds no scan, no share and no key.

:func:`coordinate` drives any :class:`SiteSession` (the parties, however they are reached):
each step it sends every party the public weights and the step number; the parties sample,
share, train and open only the noised gradient sums; the coordinator checks they all opened
the same sums, applies the public update (the same optimiser as plaintext mode), steps the
accountant and reports progress. Each epoch every site evaluates its own validation rows with
the public model and only aggregates come back (:mod:`.site_metrics`). ``dp=off`` runs the
same pipeline without clipping or noise and opens exact gradient sums: a non-private
reference (benchmarks), never for real data.

The deployed roles (:mod:`ppml_hybrid.roles`) reach the parties over the control channel.
Protocol tests and benchmarks that hand rows to an in-process
:class:`~ppml_hybrid.smpc_stage.launcher.PartySession` directly build their step programs
with :func:`ppml_hybrid.roles.local_services.step_factory` (it starts K and E on this machine)
and split rows with :func:`assign_rows`.
"""

from __future__ import annotations

import dataclasses
import math
import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import torch
from opacus.accountants import create_accountant
from tqdm import tqdm

from ppml_hybrid.config import RunConfig
from ppml_hybrid.data import ImageSet
from ppml_hybrid.data.sites import owners
from ppml_hybrid.model import BlockModel, build_model
from ppml_hybrid.protocols.step_common import PartyRows, StepOutput
from ppml_hybrid.smpc_stage.errors import MPCError
from ppml_hybrid.smpc_stage.cost_model import STANDARD_PROFILES, measure_loopback, project_step
from ppml_hybrid.smpc_stage.transport import ChannelTraffic, Traffic
from ppml_hybrid.training.evaluation import SplitMetrics
from ppml_hybrid.training.site_metrics import (
    DEFAULT_BINS, DEFAULT_MIN_PATIENTS, SiteAggregate, auc_max_error, pool,
)
from ppml_hybrid.training.optim import make_optimizer, make_schedule
from ppml_hybrid.privacy.accounting import epsilon_options
from ppml_hybrid.errors import Interrupted, PrivacyBudgetError
from ppml_hybrid.training.checkpoint import (
    Checkpoint, CheckpointError, checkpoint_of, epoch_end, restore_history, restore_schedule, resume_position,
    save_checkpoint,
)
from ppml_hybrid.training.interrupts import Interrupts
from ppml_hybrid.training.ledger import Release
from ppml_hybrid.training.checks import check_divergence
from ppml_hybrid.training.plan import RunPlan, enclave_noise, split_clip

log = logging.getLogger(__name__)
ETA_AFTER_STEPS = 3  # log the run's expected duration after this many steps


def assign_rows(data: ImageSet, *, parties: int) -> List[PartyRows]:
    """Split the training rows among the parties (by site or patient: ``data.sites.owners``)."""
    owner = owners(list(data.sites), list(data.patient_ids), parties=parties)
    out = []
    for j in range(parties):
        idx = torch.tensor([i for i, o in enumerate(owner) if o == j], dtype=torch.long)
        out.append(PartyRows(images=data.images[idx], labels=data.labels[idx]))
    return out


@dataclass(frozen=True)
class SecureEpoch:
    epoch: int
    steps: int
    val: SplitMetrics
    epsilon: Optional[float]
    seconds: float


@dataclass(frozen=True)
class SecureResult:
    model: BlockModel
    epochs: tuple
    test: SplitMetrics
    epsilon: Optional[float]
    noise_multiplier: float
    sample_rate: float
    steps: int
    step_seconds: tuple
    traffic_per_party: tuple  # mean bytes sent / rounds per step, per party
    projections: Dict[str, float]
    layer_traffic: tuple = ()  # per party, per MPC layer and direction: mean bytes sent / rounds per step
    stage_costs: tuple = ()  # per protocol stage: mean seconds (the driver's clock) and bytes per step
    steps_per_epoch: int = 0
    privacy: Dict[str, Any] = field(default_factory=dict)  # what the accountant was given, and why
    sites: Dict[str, Any] = field(default_factory=dict)  # per-site aggregates of the last val and the test

    def metrics(self) -> dict:
        return {
            "test": self.test.as_dict(),
            "val": self.epochs[-1].val.as_dict(),
            "epsilon": self.epsilon,
            "noise_multiplier": self.noise_multiplier,
            "privacy": dict(self.privacy),
            "sites": dict(self.sites),
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "time_per_step_s": sum(self.step_seconds) / len(self.step_seconds),
            "median_step_s": statistics.median(self.step_seconds[1:] or self.step_seconds),  # warm-up excluded
            "mpc_traffic_per_step": list(self.traffic_per_party),
            "projected_step_s": self.projections,
            "projected_epoch_s": {k: v * self.steps_per_epoch for k, v in self.projections.items()},
            "stages_per_step": list(self.stage_costs),
            "mpc_layers_per_step": list(self.layer_traffic),
            "epochs": [_epoch_dict(e) for e in self.epochs],
        }


class SiteSession(Protocol):
    """The parties as the coordinator sees them: one call per step or evaluation, all parties."""

    def step(self, step: int, state: Dict[str, torch.Tensor]) -> "StepRun": ...

    def evaluate(self, split: str, state: Dict[str, torch.Tensor]) -> List[SiteAggregate]: ...


@dataclass(frozen=True)
class StepRun:
    results: Tuple[StepOutput, ...]  # rank order
    wall_s: float


def coordinate(cfg: RunConfig, sites: SiteSession, plan: RunPlan, *, networks: Sequence[Any] = (),
               resume: Optional[Checkpoint] = None, released_before: int = 0,
               ledger_dir: Optional[str] = None) -> SecureResult:
    """Train under encryption through ``sites`` (module doc); ``networks`` are extra profiles to
    project step time onto. ``resume``: the checkpoint this run continues; ``released_before``:
    the releases of this run the parties' ledgers already hold (the accountant starts from them,
    so epsilon continues from the ledgers, not from the checkpoint alone); ``ledger_dir`` (the
    one-machine launcher): where its parties' ledgers are, recorded in the checkpoint."""
    torch.set_num_threads(cfg.train.num_threads)
    model = build_model(cfg.model, image_size=cfg.data.image_size, seed=cfg.seed, split_clip=split_clip(cfg))
    optimizer = make_optimizer(cfg, model, train_rows=plan.n_train)
    schedule = make_schedule(cfg, optimizer, plan.schedule.total_steps)
    if resume is not None:
        if resume.step >= plan.schedule.total_steps:
            raise CheckpointError(f"train.resume={cfg.train.resume}: that run already took all its "
                                  f"{plan.schedule.total_steps} steps; nothing to resume")
        model.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        restore_schedule(schedule, resume.schedule)
        log.info("resuming %s at step %d of %d (%d epochs done)", cfg.train.resume, resume.step,
                 plan.schedule.total_steps, len(resume.epochs))
    n_blocks = len(cfg.model.blocks)
    stages = (f"blocks 1..{cfg.split_layer} under MPC and {cfg.split_layer + 1}..{n_blocks} under HE"
              if cfg.split_layer < n_blocks else f"all {n_blocks} blocks under MPC")
    accountant = None
    if plan.dp is not None:
        accountant = create_accountant(cfg.dp.accountant)
        source = ("drawn by the key service: one exact discrete Gaussian per step" if plan.dp.noise_source == "enclave"
                  else f"each party adds std {plan.dp.noise_std_per_party:.4g}, so the release carries "
                  f"{plan.dp.released_noise_multiplier:.4f}")
        log.info("DP-SGD with %s: %d parties + dealer, noise multiplier %.4f (%s), clip %.3g, sample rate %.4f, "
                 "%d steps; batch sizes released with noise std %g rows, so the accountant counts noise multiplier "
                 "%.4f", stages, cfg.smpc.parties, plan.sigma, source, cfg.dp.max_grad_norm,
                 plan.schedule.sample_rate, plan.schedule.total_steps, cfg.dp.count_noise, plan.sigma_eff)
    else:
        log.warning("dp=off: NON-PRIVATE run (%s): every step opens the exact gradient sums, which leak the "
                    "batch. For reference runs and benchmarks only, never for real patients' data.", stages)
    prior = max(released_before, resume.step if resume is not None else 0) if accountant is not None else 0
    if accountant is not None and prior:
        restore_history(accountant, [(plan.sigma_eff, plan.schedule.sample_rate, prior)])
        done = resume.step if resume is not None else 0
        if resume is not None and prior == done + 1:
            log.warning("step %d was under way when the run stopped: the parties' ledgers count it as released (its "
                        "sums may have been opened), so epsilon counts one step more than an uninterrupted run",
                        done + 1)
        elif prior > done:
            log.warning("the parties' ledgers already hold %d releases of this run (earlier sessions over the same "
                        "data): epsilon counts them", prior)
    result = _loop(cfg, model, optimizer, schedule, accountant, sites, plan=plan, networks=networks,
                   resume=resume, released_before=prior, ledger_dir=ledger_dir)
    return dataclasses.replace(result, privacy={**plan.privacy, "releases_counted": prior + result.steps
                                                - (resume.step if resume is not None else 0)})


def _budget_reached(cfg: RunConfig, plan: RunPlan, releases: List[Any], step: int) -> bool:
    """The parties' ledger rule, applied here first: stop before a step that would take epsilon
    beyond ``dp.max_epsilon`` (each party refuses such a step anyway)."""
    if plan.dp is None:
        return False
    from ppml_hybrid.training.ledger import stops_at_cap

    nxt = Release(run="", step=step, sample_rate=plan.schedule.sample_rate, noise_multiplier=plan.sigma_eff)
    if stops_at_cap(releases, nxt, max_epsilon=cfg.dp.max_epsilon, delta=cfg.dp.delta, discrete=enclave_noise(cfg),
                    total_steps=plan.schedule.total_steps):
        return True
    releases.append(nxt)
    return False


def _state(model: BlockModel) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _evaluate_at_sites(sites: SiteSession, model: BlockModel, split: str) -> List[SiteAggregate]:
    """Every site evaluates its own ``split`` rows with the public model; only aggregates come back."""
    aggs = list(sites.evaluate(split, _state(model)))
    hidden = [a.site for a in aggs if a.suppressed]
    if hidden:
        log.warning("%s metrics of site(s) %s suppressed: fewer than %d patients there; pooled over the others",
                    split, ", ".join(str(h) for h in hidden), DEFAULT_MIN_PATIENTS)
    return aggs


def party_inputs_for(cfg: RunConfig, rows: List[PartyRows]) -> List[Any]:
    """What each party process gets once: its own rows (and nothing else: its keys it makes itself)."""
    if cfg.split_layer == len(cfg.model.blocks):
        return rows
    from ppml_hybrid.protocols.hybrid_train_step import HybridPartyInputs

    return [HybridPartyInputs(rows=r) for r in rows]


def _loop(cfg: RunConfig, model: BlockModel, optimizer: torch.optim.Optimizer, schedule: Any, accountant: Any,
          sites: SiteSession, *, plan: RunPlan, networks: Sequence[Any], resume: Optional[Checkpoint],
          released_before: int, ledger_dir: Optional[str]) -> "SecureResult":
    sample_rate, total_steps = plan.schedule.sample_rate, plan.schedule.total_steps
    steps_per_epoch, sigma, sigma_eff = plan.schedule.steps_per_epoch, plan.sigma, plan.sigma_eff
    # train.max_steps can end the run before train.epochs: the bar counts the epochs that run
    epochs_run = min(cfg.train.epochs, -(-total_steps // max(steps_per_epoch, 1)))
    first_epoch, step = resume_position(resume)
    session_start = step
    epochs = [_epoch_of(e) for e in resume.epochs] if resume is not None else []
    step_seconds: List[float] = []  # this session's steps (as the traffic below)
    traffic_sum = [Traffic() for _ in range(cfg.smpc.parties)]
    layer_sum: Dict[Tuple[int, str, str], List[float]] = {}
    stage_sum: Dict[str, List[float]] = {}
    first_val: Optional[float] = resume.baseline_loss if resume is not None else None
    # what each party's ledger holds too (training/ledger.py)
    releases: List[Any] = [Release(run="", step=i, sample_rate=sample_rate, noise_multiplier=sigma_eff)
                           for i in range(released_before)]
    capped = False
    first_traffic: List[Traffic] = []

    def checkpoint(reason: str) -> None:
        save_checkpoint(cfg.output_dir, checkpoint_of(
            cfg, step=step, epochs=[_epoch_dict(e) for e in epochs], model=model, optimizer=optimizer,
            schedule=schedule, accountant=accountant, data={"site_train_rows": list(plan.train_rows)},
            baseline_loss=first_val, reason=reason, ledger_dir=ledger_dir))

    with Interrupts() as interrupts:
        try:
            for epoch in range(first_epoch, cfg.train.epochs + 1):
                start, epoch_start = time.perf_counter(), step
                todo = max(epoch_end(epoch, steps_per_epoch, total_steps) - step, 0)
                bar = tqdm(range(todo), desc=f"epoch {epoch}/{epochs_run} (split {cfg.split_layer})", unit="step",
                           disable=not cfg.train.progress, leave=False)
                for _ in bar:
                    if _budget_reached(cfg, plan, releases, step):
                        capped = True
                        break
                    run = sites.step(step, _state(model))
                    out = _agree(run.results)
                    with interrupts.update():  # weights, schedule, accountant and count: one step, whole
                        _apply(model, optimizer, out, expected_batch=plan.schedule.expected_batch)
                        schedule.step()
                        if accountant is not None:
                            accountant.step(noise_multiplier=sigma_eff, sample_rate=sample_rate)
                        step += 1
                    step_seconds.append(run.wall_s)
                    _add_stages(stage_sum, run.results)
                    if len(step_seconds) == 1:
                        first_traffic = [r.traffic for r in run.results]  # the warm-up (module doc)
                    for j, r in enumerate(run.results):
                        traffic_sum[j] = traffic_sum[j] + r.traffic
                        for c in r.layer_costs:
                            acc = layer_sum.setdefault((j, c.layer, c.direction), [0.0, 0.0, 0.0])
                            acc[0] += c.traffic.bytes_sent
                            acc[1] += c.traffic.rounds
                            acc[2] += c.seconds
                    bar.set_postfix(batch=out.batch_size, s=f"{run.wall_s:.1f}")
                    if len(step_seconds) == ETA_AFTER_STEPS and total_steps > step:
                        # The first step also starts the processes and opens channels: estimate from the others.
                        per_step = sum(step_seconds[1:]) / (len(step_seconds) - 1)
                        log.info("about %.1f s per step: the remaining %d steps need about %.0f min",
                                 per_step, total_steps - step, per_step * (total_steps - step) / 60)
                bar.close()
                if capped and step == epoch_start:
                    break  # the cap stopped the run before this epoch took a step
                val_sites = _evaluate_at_sites(sites, model, "val")
                val = pool(val_sites)
                if val.n and math.isfinite(val.loss):  # the public model's pooled val loss: all the run may watch
                    first_val = val.loss if first_val is None else first_val
                check_divergence(val.loss if val.n else 0.0, first=first_val or 0.0, num_classes=cfg.model.num_classes,
                                 what=f"pooled validation loss of the public model after epoch {epoch}", cfg=cfg,
                                 snapshot=True)
                eps = (float(accountant.get_epsilon(delta=cfg.dp.delta, **epsilon_options(discrete=enclave_noise(cfg))))
                       if accountant is not None else None)
                epochs.append(SecureEpoch(epoch, step, val, eps, time.perf_counter() - start))
                log.info("epoch %d: %d steps, val acc %.4f, val AUC %.4f, %s, %.1f s/step", epoch, step,
                         val.accuracy, val.auc, f"epsilon {eps:.3f}" if eps is not None else "dp=off",
                         sum(step_seconds[-todo:]) / max(min(todo, len(step_seconds)), 1))
                checkpoint("epoch")
                if step >= total_steps or capped:
                    break
        except KeyboardInterrupt:
            checkpoint("interrupted")
            raise Interrupted(cfg.output_dir, step) from None
    if step == 0:
        raise PrivacyBudgetError(f"dp.max_epsilon={cfg.dp.max_epsilon} does not allow a single step of this run")
    ran = max(step - session_start, 1)  # this session's steps: the means below are over them
    # time and traffic per step without the session's first step (it also opens the channels
    # and K's and E's sessions), when there is another
    warm = len(step_seconds) > 1
    measured = [t - f for t, f in zip(traffic_sum, first_traffic)] if warm else traffic_sum
    n_measured = len(step_seconds) - 1 if warm else max(len(step_seconds), 1)
    per_step = [_scaled(t, 1.0 / n_measured) for t in measured]
    mean_traffic = [
        {"party": j, "bytes_sent": t.bytes_sent, "bytes_received": t.peers.bytes_received
         + t.dealer.bytes_received + t.services.bytes_received, "rounds": t.rounds,
         "dealer_bytes_sent": t.dealer.bytes_sent, "dealer_bytes_received": t.dealer.bytes_received,
         "service_bytes_sent": t.services.bytes_sent, "service_bytes_received": t.services.bytes_received,
         "service_rounds": t.services.rounds}
        for j, t in enumerate(per_step)
    ]
    compute_s = statistics.median(step_seconds[1:] if warm else step_seconds) if step_seconds else 0.0
    loopback = measure_loopback()  # what loopback itself spent on the traffic (cost_model)
    projections = {}
    for net in (cfg.network, *STANDARD_PROFILES, *networks):
        projections[net.name] = project_step(traffic_per_party=per_step, compute_s=compute_s, network=net,
                                             loopback=loopback).total_s
    test_sites = _evaluate_at_sites(sites, model, "test")
    return SecureResult(
        model=model, epochs=tuple(epochs), test=pool(test_sites),
        sites={"val": [a.as_dict() for a in val_sites], "test": [a.as_dict() for a in test_sites],
               "min_patients": DEFAULT_MIN_PATIENTS,
               "score_bins": DEFAULT_BINS, "val_auc_max_error": auc_max_error(val_sites),
               "test_auc_max_error": auc_max_error(test_sites)},
        epsilon=epochs[-1].epsilon, noise_multiplier=sigma, sample_rate=sample_rate, steps=step,
        step_seconds=tuple(step_seconds), traffic_per_party=tuple(mean_traffic), projections=projections,
        layer_traffic=tuple(
            {"party": j, "layer": layer, "direction": direction, "bytes_sent": b / ran, "rounds": r / ran,
             "seconds": sec / ran}
            for (j, layer, direction), (b, r, sec) in layer_sum.items()
        ),
        stage_costs=tuple(
            {"stage": name, "seconds": sec / ran, "bytes_sent": b / ran, "dealer_bytes": d / ran}
            for name, (sec, b, d) in stage_sum.items()
        ),
        steps_per_epoch=steps_per_epoch,
    )


def _epoch_dict(e: SecureEpoch) -> Dict[str, Any]:
    return {"epoch": e.epoch, "steps": e.steps, "val": e.val.as_dict(), "epsilon": e.epsilon, "seconds": e.seconds}


def _epoch_of(raw: Dict[str, Any]) -> SecureEpoch:
    return SecureEpoch(raw["epoch"], raw["steps"], SplitMetrics(**raw["val"]), raw["epsilon"], raw["seconds"])


def _add_stages(stage_sum: Dict[str, List[float]], results: Sequence[StepOutput]) -> None:
    """Per stage: the driver's time (the last party calls E; the others' clocks would charge
    their wait for E to the next stage) and the largest traffic of any party."""
    per_stage: Dict[str, List[float]] = {}
    for rank, r in enumerate(results):
        driver = rank == len(results) - 1
        mine: Dict[str, List[float]] = {}
        for c in r.stages:  # a stage can occur twice in a step (SS->HE of a and of delta_z)
            acc = mine.setdefault(c.stage, [0.0, 0.0, 0.0])
            acc[0] += c.seconds
            acc[1] += c.traffic.bytes_sent
            acc[2] += c.traffic.dealer.bytes_total
        for name, (sec, b, d) in mine.items():
            cur = per_stage.setdefault(name, [0.0, 0.0, 0.0])
            per_stage[name] = [sec if driver else cur[0], max(cur[1], b), max(cur[2], d)]
    for name, (sec, b, d) in per_stage.items():
        acc = stage_sum.setdefault(name, [0.0, 0.0, 0.0])
        acc[0] += sec
        acc[1] += b
        acc[2] += d


def _agree(results: Sequence[StepOutput]) -> StepOutput:
    """Every party opened the same noised sums; anything else is a protocol failure."""
    first = results[0]
    for r in results[1:]:
        if r.batch_size != first.batch_size or any(
            not torch.equal(r.noised_sums[k], first.noised_sums[k]) for k in first.noised_sums
        ):
            raise MPCError("parties opened different gradient sums: the MPC is out of sync; stopped")
    return first


def _apply(model: BlockModel, optimizer: torch.optim.Optimizer, out: StepOutput, *, expected_batch: float) -> None:
    """Public update: the noised sum over the expected batch size (Opacus's mean reduction)."""
    optimizer.zero_grad(set_to_none=True)
    params = dict(model.named_parameters())
    missing = set(params) - set(out.noised_sums)
    if missing:
        raise MPCError(f"the MPC step returned no gradient for {sorted(missing)}; stopped")
    for name, p in params.items():
        p.grad = out.noised_sums[name].reshape(p.shape).to(p.dtype) / expected_batch
    optimizer.step()


def _scaled(t: Traffic, factor: float) -> Traffic:
    """Mean traffic per step from a run's total."""
    def scale(c: ChannelTraffic) -> ChannelTraffic:
        return ChannelTraffic(round(c.rounds * factor), round(c.bytes_sent * factor), round(c.bytes_received * factor))

    return Traffic(peers=scale(t.peers), dealer=scale(t.dealer), services=scale(t.services))
