"""A run's report: plots (PNG) and ``report.md`` beside ``metrics.json``, from the metrics alone.

What it draws, all from what the run released (nothing here reads data or the model):

* ``curves.png``: validation loss, accuracy and AUC, and epsilon, per epoch;
* ``test.png``: the test ROC curve (per class one-vs-rest beyond two classes) and, for two
  classes, the confusion matrix at the model's decision (P(class 1) >= 0.5), both from the
  pooled class-score histograms (20 bins: what sites release in encrypted runs; plaintext
  runs compute the same histograms), with balanced accuracy and the majority-class rate, so a
  model that predicts one class cannot look good;
* ``cost.png`` (encrypted runs): seconds and bytes sent per step by stage, and bytes per MPC
  layer (party 0).

``report.md`` shows them with the summary and the run's configuration.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

from ppml_hybrid.config import RunConfig

log = logging.getLogger("ppml_hybrid.report")


@dataclass(frozen=True)
class BinaryCounts:
    """The test rows' decision counts at P(class 1) >= 0.5, from the score histograms."""

    tp: int
    fn: int
    fp: int
    tn: int

    @property
    def balanced_accuracy(self) -> float:
        tpr = self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")
        tnr = self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")
        return (tpr + tnr) / 2

    @property
    def majority_rate(self) -> float:
        n = self.tp + self.fn + self.fp + self.tn
        return max(self.tp + self.fn, self.fp + self.tn) / n if n else float("nan")


def pooled_histograms(metrics: Mapping[str, Any]) -> Optional[np.ndarray]:
    """hist[c][k][b] summed over the reporting sites (encrypted runs) or as computed (plaintext)."""
    if metrics.get("test_score_histograms"):
        return np.asarray(metrics["test_score_histograms"], dtype=np.int64)
    sites = [s for s in metrics.get("sites", {}).get("test", []) if not s.get("suppressed")]
    if not sites:
        return None
    return np.sum([np.asarray(s["score_histograms"], dtype=np.int64) for s in sites], axis=0)


def roc_points(neg: Sequence[int], pos: Sequence[int]) -> tuple:
    """(FPR, TPR) at every bin edge, threshold from 1 down to 0."""
    neg, pos = np.asarray(neg, dtype=np.float64), np.asarray(pos, dtype=np.float64)
    fpr = np.concatenate([[0.0], np.cumsum(neg[::-1]) / max(neg.sum(), 1)])
    tpr = np.concatenate([[0.0], np.cumsum(pos[::-1]) / max(pos.sum(), 1)])
    return fpr, tpr


def binary_counts(hist: np.ndarray) -> BinaryCounts:
    """Decision counts for two classes: bins at or above 0.5 of P(class 1) are predicted 1."""
    neg, pos = hist[1][0], hist[1][1]
    half = len(pos) // 2
    return BinaryCounts(tp=int(pos[half:].sum()), fn=int(pos[:half].sum()), fp=int(neg[half:].sum()),
                        tn=int(neg[:half].sum()))


def write_report(cfg: RunConfig, metrics: Mapping[str, Any], out_dir: Path) -> Path:
    """Write the plots and ``report.md`` into ``out_dir``; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    out_dir = Path(out_dir)
    images = [_curves(metrics, out_dir)]
    hist = pooled_histograms(metrics)
    counts = binary_counts(hist) if hist is not None and hist.shape[0] == 2 else None
    if hist is not None:
        images.append(_test_plots(hist, counts, out_dir))
    if metrics.get("stages_per_step"):
        images.append(_cost(metrics, out_dir))
    path = out_dir / "report.md"
    path.write_text(_markdown(cfg, metrics, counts, [i for i in images if i is not None]))
    return path


def _curves(metrics: Mapping[str, Any], out: Path) -> Optional[str]:
    import matplotlib.pyplot as plt

    epochs = metrics.get("epochs") or []
    if not epochs:
        return None
    x = [e["epoch"] for e in epochs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(x, [e["val"].get("loss") for e in epochs], marker="o")
    axes[0].set_title("validation loss")
    axes[1].plot(x, [e["val"].get("accuracy") for e in epochs], marker="o", label="accuracy")
    axes[1].plot(x, [e["val"].get("auc") for e in epochs], marker="s", label="AUC")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend()
    axes[1].set_title("validation accuracy and AUC")
    eps = [e.get("epsilon") for e in epochs]
    if any(v is not None for v in eps):
        axes[2].plot(x, eps, marker="o", color="tab:red")
        axes[2].set_title(f"epsilon (delta {metrics.get('dp', {}).get('delta', '')})")
    else:
        axes[2].text(0.5, 0.5, "dp=off: no privacy guarantee", ha="center", va="center")
        axes[2].set_title("epsilon")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    return "curves.png"


def _test_plots(hist: np.ndarray, counts: Optional[BinaryCounts], out: Path) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if counts is not None else 1, figsize=(10 if counts is not None else 5, 4.2))
    ax = axes[0] if counts is not None else axes
    classes = [1] if hist.shape[0] == 2 else list(range(hist.shape[0]))
    for c in classes:
        fpr, tpr = roc_points(hist[c][0], hist[c][1])
        ax.plot(fpr, tpr, marker=".", label=f"class {c}" + (" vs rest" if len(classes) > 1 else ""))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("test ROC (20-bin score histograms)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    if counts is not None:
        m = np.array([[counts.tn, counts.fp], [counts.fn, counts.tp]])
        ax = axes[1]
        ax.imshow(m, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(m[i, j]), ha="center", va="center",
                        color="white" if m[i, j] > m.max() / 2 else "black", fontsize=13)
        ax.set_xticks([0, 1], ["predicted 0", "predicted 1"])
        ax.set_yticks([0, 1], ["true 0", "true 1"])
        ax.set_title(f"test confusion matrix (balanced accuracy {counts.balanced_accuracy:.3f})")
    fig.tight_layout()
    fig.savefig(out / "test.png", dpi=110)
    plt.close(fig)
    return "test.png"


def _cost(metrics: Mapping[str, Any], out: Path) -> str:
    import matplotlib.pyplot as plt

    stages = metrics["stages_per_step"]
    names = [s["stage"] for s in stages]
    layers = [r for r in metrics.get("mpc_layers_per_step", []) if r.get("party") == 0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].barh(names, [s["seconds"] for s in stages], color="tab:blue")
    axes[0].set_title("seconds per step, by stage")
    axes[1].barh(names, [s["bytes_sent"] / 1e6 for s in stages], color="tab:orange")
    axes[1].set_title("MB sent per step, by stage (party 0)")
    labels = [f"{r['layer']} {r['direction']}" for r in layers]
    axes[2].barh(labels, [r["bytes_sent"] / 1e6 for r in layers], color="tab:green")
    axes[2].set_title("MB sent per step, by MPC layer (party 0)")
    for ax in axes:
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(out / "cost.png", dpi=110)
    plt.close(fig)
    return "cost.png"


def _markdown(cfg: RunConfig, metrics: Mapping[str, Any], counts: Optional[BinaryCounts], images: List[str]) -> str:
    import yaml

    test = metrics.get("test", {})
    eps = metrics.get("epsilon")
    privacy = metrics.get("privacy", {})
    rows = [("mode", f"{metrics.get('mode')} (split_layer {metrics.get('split_layer')})" if metrics.get("mode") ==
             "hybrid" else metrics.get("mode")),
            ("model", metrics.get("model")),
            ("test accuracy", _fmt(test.get("accuracy"))), ("test AUC", _fmt(test.get("auc"))),
            ("test rows", test.get("n"))]
    if counts is not None:
        rows += [("balanced accuracy", _fmt(counts.balanced_accuracy)),
                 ("majority-class rate (what predicting one class scores)", _fmt(counts.majority_rate))]
    rows += [("epsilon", f"{eps:.3f} at delta {privacy.get('delta_total', cfg.dp.delta):.3g}" if eps is not None
              else "dp=off: NO privacy guarantee"),
             ("steps", metrics.get("steps"))]
    if privacy:
        rows += [("noise source", privacy.get("noise_source")),
                 ("noise multiplier: credited / released",
                  f"{privacy.get('gradient_noise_multiplier', 0):.4f} / {privacy.get('released_noise_multiplier', 0):.4f}")]
    if metrics.get("time_per_step_s") is not None:
        rows.append(("seconds per step", _fmt(metrics.get("time_per_step_s"), 1)))
    lines = ["# Run report", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]
    if counts is not None and counts.balanced_accuracy < 0.55:
        lines += ["**Warning:** balanced accuracy near 0.5: the model hardly separates the classes, whatever "
                  "its accuracy says.", ""]
    for image in images:
        lines += [f"![{image}]({image})", ""]
    lines += ["## Configuration", "", "```yaml", yaml.safe_dump(_plain(asdict(cfg)), sort_keys=False).rstrip(), "```",
              "", "Figures from `metrics.json` only (the ROC and confusion matrix from 20-bin score histograms, "
              "what sites release in encrypted runs).", ""]
    return "\n".join(lines)


def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and value != value) else f"{value:.{digits}f}"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_sweep_plot(summary: Mapping[str, Any], out_dir: Path) -> Optional[str]:
    """``sweep.png`` for a split sweep: projected DP epoch time per network profile, bytes per step
    and test accuracy against the split, per model; each profile's best split marked. None when
    fewer than two hybrid jobs finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary.get("rows", []) if r.get("status") == "ok" and r.get("mode") == "hybrid"]
    if len(rows) < 2:
        return None
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(len(models), 3, figsize=(14, 3.8 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["split_layer"])
        splits = [r["split_layer"] for r in mine]
        ax = axes[i][0]
        profiles = sorted({p for r in mine for p in r["projected_epoch_s"]})
        for profile in profiles:
            ys = [r["projected_epoch_s"].get(profile) for r in mine]
            line, = ax.plot(splits, ys, marker="o", label=profile)
            best = summary.get("best_split", {}).get(f"{model}/{profile}")
            if best is not None:
                ax.plot([best["split_layer"]], [best["projected_epoch_s"]], marker="*", markersize=16,
                        color=line.get_color())
        ax.set_yscale("log")
        ax.set_title(f"{model}: projected DP epoch time (* best split)")
        ax.set_ylabel("seconds per epoch")
        ax.legend()
        axes[i][1].bar([str(s) for s in splits], [(r["bytes_per_step"] or 0) / 1e6 for r in mine], color="tab:orange")
        axes[i][1].set_title(f"{model}: MB sent per step (busiest party)")
        axes[i][2].plot(splits, [r["test_accuracy"] for r in mine], marker="o", color="tab:green")
        axes[i][2].set_ylim(0, 1.02)
        axes[i][2].set_title(f"{model}: test accuracy")
        for ax in (axes[i][0], axes[i][2]):
            ax.set_xticks(splits)
        for ax in axes[i]:
            ax.set_xlabel("split_layer")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "sweep.png", dpi=100)
    plt.close(fig)
    return "sweep.png"
