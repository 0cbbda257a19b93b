"""Plaintext training of the block model, with Opacus DP-SGD or without it.

This is the accuracy and speed reference for every encrypted run. Under DP: Poisson
sampling at rate ``batch_size / N``, per-sample clipping to ``dp.max_grad_norm``, Gaussian
noise ``N(0, sigma^2 C^2)``, and Opacus's accountant (RDP or PRV) for epsilon. Batch
membership and noise come from OS entropy, never from the shared ``seed`` (anyone who can
recompute the batches voids the amplification by sampling).
"""

from __future__ import annotations

import logging
import secrets
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

import ppml_hybrid.privacy.grad_samplers  # noqa: F401  (fills Opacus's grad-sampler registry)
from ppml_hybrid.config import RunConfig
from ppml_hybrid.data import DataSplits
from ppml_hybrid.errors import Interrupted, PrivacyBudgetError
from ppml_hybrid.model import BlockModel, build_model
from ppml_hybrid.privacy.accounting import resolve_noise_multiplier
from ppml_hybrid.training.checks import check_divergence, check_schedule
from ppml_hybrid.training.checkpoint import (
    Checkpoint, CheckpointError, check_same_data, checkpoint_of, data_digest, epoch_end, load_checkpoint,
    restore_history, restore_schedule, resume_position, save_checkpoint,
)
from ppml_hybrid.training.interrupts import Interrupts
from ppml_hybrid.training.evaluation import SplitMetrics, evaluate, logits_of
from ppml_hybrid.training.optim import make_optimizer, make_schedule
from ppml_hybrid.training.sampling import PoissonSchedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    steps: int
    train_loss: float
    val: SplitMetrics
    epsilon: Optional[float]
    seconds: float


@dataclass(frozen=True)
class PlaintextResult:
    model: BlockModel
    epochs: tuple
    test: SplitMetrics
    val: SplitMetrics
    epsilon: Optional[float]
    noise_multiplier: Optional[float]
    sample_rate: float
    steps: int
    test_histograms: tuple = ()  # score_histograms of the test rows

    def metrics(self) -> dict:
        seconds = [e.seconds for e in self.epochs]
        return {
            "test": self.test.as_dict(),
            "test_score_histograms": [list(map(list, h)) for h in self.test_histograms],
            "val": self.val.as_dict(),
            "epsilon": self.epsilon,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "time_per_epoch_s": sum(seconds) / len(seconds) if seconds else None,
            "epochs": [
                {**asdict(e), "val": e.val.as_dict()} for e in self.epochs
            ],
        }


def _entropy_generator() -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(secrets.randbits(63))
    return gen


def train_plaintext(cfg: RunConfig, splits: DataSplits) -> PlaintextResult:
    """Train ``cfg.model`` on the training split; report val per epoch and test at the end."""
    train_images, train_labels = splits.train.images, splits.train.labels
    torch.set_num_threads(cfg.train.num_threads)
    model = build_model(cfg.model, image_size=cfg.data.image_size, seed=cfg.seed)
    digest = data_digest(train_images, train_labels)
    resume = None
    if cfg.train.resume:
        resume = load_checkpoint(cfg.train.resume, cfg)
        check_same_data(resume, {"train_rows": digest}, run_dir=cfg.train.resume)
        model.load_state_dict(resume.model)
        log.info("resuming %s at step %d (%d epochs done)", cfg.train.resume, resume.step, len(resume.epochs))
    optimizer = make_optimizer(cfg, model, train_rows=len(train_labels))
    n = len(train_labels)
    batch_size = min(cfg.train.batch_size, n)
    # Opacus samples at q = 1 / ceil(n / batch_size) (sampling.PoissonSchedule documents it).
    plan = PoissonSchedule.of(rows=n, batch_size=batch_size, epochs=cfg.train.epochs, max_steps=cfg.train.max_steps)
    total_steps, sample_rate = plan.total_steps, plan.sample_rate
    check_schedule(cfg, total_steps=total_steps, n_train=len(train_labels))
    if resume is not None and resume.step >= total_steps:
        raise CheckpointError(f"train.resume={cfg.train.resume}: that run already took all its {total_steps} steps; "
                              "nothing to resume")

    if cfg.dp.enabled:
        loader = DataLoader(TensorDataset(train_images, train_labels), batch_size=batch_size,
                            shuffle=True, generator=_entropy_generator())
        noise_multiplier = resolve_noise_multiplier(cfg.dp, sample_rate=sample_rate, steps=total_steps)
        # Opacus's "Secure RNG turned off" warning: its secure mode needs torchcsprng (not
        # installable here); our noise generator is seeded from the OS CSPRNG instead, which we
        # say once, in our own words (plaintext mode is the reference, not the private product).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant=cfg.dp.accountant)
        log.info("plaintext DP noise: a torch generator seeded from the OS CSPRNG (Opacus's secure_mode "
                 "needs torchcsprng); the encrypted mode draws its noise from an AES-CTR CSPRNG stream")
        dp_model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=cfg.dp.max_grad_norm,
            poisson_sampling=True,
            noise_generator=_entropy_generator(),
        )
        train_module: nn.Module = dp_model
        log.info("DP-SGD: noise multiplier %.4f, clip %.3g, sample rate %.4f, %d steps",
                 noise_multiplier, cfg.dp.max_grad_norm, sample_rate, total_steps)
    else:
        gen = torch.Generator()
        gen.manual_seed(cfg.seed)
        loader = DataLoader(TensorDataset(train_images, train_labels), batch_size=batch_size,
                            shuffle=True, generator=gen)
        engine, noise_multiplier, train_module = None, None, model

    # Opacus's hooks warn on every backward when the input has no grad (ours never does).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        schedule = make_schedule(cfg, optimizer, total_steps)
        if resume is not None:
            getattr(optimizer, "original_optimizer", optimizer).load_state_dict(resume.optimizer)
            restore_schedule(schedule, resume.schedule)
            if engine is not None:
                restore_history(engine.accountant, resume.accountant_history)
        records = _run_epochs(cfg, model, train_module, optimizer, schedule, loader, engine, splits, total_steps,
                              sample_rate, resume=resume, data={"train_rows": digest})

    test = evaluate(model, splits.test.images, splits.test.labels)
    return PlaintextResult(
        model=model, epochs=tuple(records), test=test, val=records[-1].val,
        epsilon=records[-1].epsilon, noise_multiplier=noise_multiplier,
        sample_rate=sample_rate, steps=records[-1].steps,
        test_histograms=_test_histograms(model, splits, cfg.model.num_classes),
    )


@torch.no_grad()
def _test_histograms(model: BlockModel, splits: DataSplits, num_classes: int) -> tuple:
    """The test rows' class-score histograms, as encrypted runs' sites release them (the report's
    ROC curve and confusion matrix are drawn from these in every mode)."""
    from ppml_hybrid.training.site_metrics import score_histograms

    logits = logits_of(model, splits.test.images)
    return score_histograms(torch.softmax(logits.double(), dim=1), splits.test.labels, num_classes=num_classes)


def _run_epochs(cfg: RunConfig, model: BlockModel, train_module: nn.Module, optimizer: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler, loader: DataLoader, engine: Optional[PrivacyEngine], splits: DataSplits,
                total_steps: int, sample_rate: float, *, resume: Optional[Checkpoint], data: dict) -> list:
    loss_fn = nn.CrossEntropyLoss()
    steps_per_epoch = max(len(loader), 1)
    first_epoch, step = resume_position(resume)
    records = [_record_of(e) for e in resume.epochs] if resume is not None else []
    capped = False
    first_loss: Optional[float] = resume.baseline_loss if resume is not None else None

    def checkpoint(reason: str) -> None:
        save_checkpoint(cfg.output_dir, checkpoint_of(
            cfg, step=step, epochs=[{**asdict(r), "val": r.val.as_dict()} for r in records], model=model,
            optimizer=optimizer, schedule=schedule, accountant=engine.accountant if engine else None, data=data,
            baseline_loss=first_loss, reason=reason))

    # train.max_steps can end the run before train.epochs: the bar counts the epochs that run
    epochs_run = min(cfg.train.epochs, -(-total_steps // steps_per_epoch)) if total_steps else cfg.train.epochs
    with Interrupts() as interrupts:
        try:
            for epoch in range(first_epoch, cfg.train.epochs + 1):
                start = time.perf_counter()
                train_module.train()
                loss_sum, loss_batches, epoch_start = 0.0, 0, step
                end = epoch_end(epoch, steps_per_epoch, total_steps)
                bar = tqdm(loader, desc=f"epoch {epoch}/{epochs_run}", unit="step", total=max(end - step, 0),
                           disable=not cfg.train.progress, leave=False)
                for images, labels in bar:
                    if step >= end or (engine is not None and _cap_reached(cfg, engine, optimizer, step, total_steps,
                                                                           sample_rate)):
                        capped = step < end
                        break
                    optimizer.zero_grad(set_to_none=True)
                    # Poisson sampling can draw an empty batch: Opacus then steps with noise only (its
                    # loss is NaN and its gradient zero), which the accountant must still count.
                    loss = loss_fn(train_module(images), labels)
                    loss.backward()
                    with interrupts.update():
                        optimizer.step()
                        schedule.step()
                        step += 1
                    if len(labels):
                        loss_sum += loss.item()
                        loss_batches += 1
                        bar.set_postfix(loss=f"{loss_sum / loss_batches:.4f}")
                        first_loss = loss.item() if first_loss is None else first_loss
                bar.close()
                if capped and step == epoch_start:
                    break  # the cap stopped the run before this epoch took a step: nothing to report for it
                seconds = time.perf_counter() - start
                if first_loss is not None and loss_batches:  # plaintext may watch its training loss (encrypted: val only)
                    check_divergence(loss_sum / loss_batches, first=first_loss, num_classes=cfg.model.num_classes,
                                     what=f"mean training loss of epoch {epoch}", cfg=cfg)
                val = evaluate(model, splits.val.images, splits.val.labels)
                epsilon = engine.get_epsilon(cfg.dp.delta) if engine is not None else None
                record = EpochRecord(epoch=epoch, steps=step, train_loss=loss_sum / max(loss_batches, 1),
                                     val=val, epsilon=epsilon, seconds=seconds)
                records.append(record)
                log.info("epoch %d: train loss %.4f, val acc %.4f, val AUC %.4f%s, %.1f s", epoch,
                         record.train_loss, val.accuracy, val.auc,
                         f", epsilon {epsilon:.3f}" if epsilon is not None else "", seconds)
                checkpoint("epoch")
                if step >= total_steps or capped:
                    break
        except KeyboardInterrupt:
            checkpoint("interrupted")
            raise Interrupted(cfg.output_dir, step) from None
    if step == 0:
        raise PrivacyBudgetError(f"dp.max_epsilon={cfg.dp.max_epsilon} does not allow a single step of this run")
    return records


def _record_of(raw: dict) -> EpochRecord:
    return EpochRecord(**{**raw, "val": SplitMetrics(**raw["val"])})


def _cap_reached(cfg: RunConfig, engine: PrivacyEngine, optimizer: Any, step: int, total_steps: int,
                 sample_rate: float) -> bool:
    """``dp.max_epsilon``: stop before a step that would take epsilon beyond it (Opacus's history)."""
    if cfg.dp.max_epsilon is None:
        return False
    from ppml_hybrid.training.ledger import Release, stops_at_cap

    done = [Release(run="", step=0, sample_rate=q, noise_multiplier=sigma)
            for sigma, q, n in engine.accountant.history for _ in range(n)]  # what Opacus has counted
    nxt = Release(run="", step=step, sample_rate=sample_rate, noise_multiplier=optimizer.noise_multiplier)
    return stops_at_cap(done, nxt, max_epsilon=cfg.dp.max_epsilon, delta=cfg.dp.delta, discrete=False,
                        total_steps=total_steps)
