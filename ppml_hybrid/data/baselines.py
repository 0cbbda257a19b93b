"""Global-intensity baseline: how far can statistics of the pixel histogram alone get?

A labelled imaging task is only a test of a CNN if the label is *not* readable from global
intensity statistics (bright lesions are caught by the image maximum alone). This baseline
fits a classifier on per-image statistics that ignore where pixels are: mean, std, min, max,
percentiles, skewness, kurtosis and a 16-bin histogram. A CNN should beat it clearly; the demo
set is designed so that it stays near chance.
"""

from __future__ import annotations

import numpy as np
import torch

from ppml_hybrid.errors import DataError

PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
HIST_BINS = 16
# Histogram range for z-scored images; values outside are counted in the end bins.
HIST_RANGE = (-4.0, 6.0)
CLASSIFIERS = ("gbm", "logreg")


def intensity_features(images: torch.Tensor) -> np.ndarray:
    """``[N, ...]`` images -> ``[N, 4 + 9 + 2 + 16]`` float64 features of each image's value distribution.

    Columns: mean, std, min, max, the :data:`PERCENTILES`, skewness, excess kurtosis, and the
    fraction of pixels in each of :data:`HIST_BINS` bins over :data:`HIST_RANGE` (clipped).
    """
    x = torch.as_tensor(images).detach().reshape(len(images), -1).to(torch.float64).cpu().numpy()
    if x.shape[0] == 0:
        return np.zeros((0, 4 + len(PERCENTILES) + 2 + HIST_BINS))
    mean = x.mean(axis=1)
    std = x.std(axis=1)
    centred = x - mean[:, None]
    safe = np.where(std > 0, std, 1.0)
    skew = np.where(std > 0, (centred**3).mean(axis=1) / safe**3, 0.0)
    kurt = np.where(std > 0, (centred**4).mean(axis=1) / safe**4 - 3.0, 0.0)
    pct = np.percentile(x, PERCENTILES, axis=1).T
    lo, hi = HIST_RANGE
    bins = np.clip(((x - lo) / (hi - lo) * HIST_BINS).astype(np.int64), 0, HIST_BINS - 1)
    hist = np.stack([np.bincount(row, minlength=HIST_BINS) for row in bins]) / x.shape[1]
    return np.column_stack([mean, std, x.min(axis=1), x.max(axis=1), pct, skew, kurt, hist])


def intensity_baseline_accuracy(train, test, *, classifier: str = "gbm", seed: int = 0) -> float:
    """Fit ``classifier`` on :func:`intensity_features` of ``train``; return its accuracy on ``test``.

    ``train``/``test`` are :class:`~ppml_hybrid.data.dataset.ImageSet` (anything with ``images``
    and ``labels``). ``"gbm"``: histogram gradient boosting (nonlinear, the stronger attacker);
    ``"logreg"``: standardised logistic regression.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(train.labels) == 0 or len(test.labels) == 0:
        raise DataError(
            f"intensity baseline needs non-empty train and test sets; got {len(train.labels)} and {len(test.labels)} images"
        )
    y_train = torch.as_tensor(train.labels).cpu().numpy()
    y_test = torch.as_tensor(test.labels).cpu().numpy()
    if len(np.unique(y_train)) < 2:
        raise DataError("intensity baseline needs at least two classes in train")
    if classifier == "gbm":
        model = HistGradientBoostingClassifier(random_state=seed)
    elif classifier == "logreg":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    else:
        raise ValueError(f"classifier={classifier!r}; valid: {', '.join(CLASSIFIERS)}")
    model.fit(intensity_features(train.images), y_train)
    return float((model.predict(intensity_features(test.images)) == y_test).mean())
