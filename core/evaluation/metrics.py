"""Video-level measures of a verdict on a labelled set, with the errors that matter to a person
named as such: real clips called FAKE (an accusation), fake clips called REAL (a miss), and how
far the stated P(fake) is from the observed frequency (expected calibration error).

A clip is called FAKE at P >= 0.5 + band and REAL below 0.5 - band, exactly as `verdict.label_for`
labels it; UNCERTAIN is neither an accusation nor a miss. Small sets get percentile bootstrap
intervals over clips (resampled within each class for the two error shares, so each share keeps
its own denominator)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..verdicts.calibration import LOG_LOSS_CLIP

ECE_BINS = 10
BOOTSTRAP_RESAMPLES = 2000


def expected_calibration_error(labels, probabilities, bins: int = ECE_BINS) -> float:
    """Mean |observed fake share - mean P(fake)| over equal-width probability bins, weighted by
    the clips in each bin."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size == 0:
        return math.nan
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(float(y[inside].mean()) - float(p[inside].mean()))
    return total / p.size


def _share_interval(flags: np.ndarray, rng: np.random.Generator, resamples: int
                    ) -> list[float] | None:
    if flags.size == 0:
        return None
    draws = rng.integers(0, flags.size, size=(resamples, flags.size))
    shares = flags[draws].mean(axis=1)
    return [float(v) for v in np.percentile(shares, [2.5, 97.5])]


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else math.nan


def verdict_metrics(labels: Sequence[int], probabilities: Sequence[float], band: float, *,
                    calls: Sequence[str] | None = None, intervals: bool = True,
                    seed: int = 0) -> dict:
    """AUC, clipped log loss, accuracy at 0.5, ECE, the decided share, and the counts and shares
    of real clips called FAKE and fake clips called REAL; with intervals, their bootstrap 95 %
    intervals. NaN where a measure needs a class the set lacks. `calls`: each clip's verdict
    label as given (an UNCERTAIN with reasons, NO_FACE); without them, the label P(fake) has at
    this UNCERTAIN band."""
    from sklearn.metrics import log_loss

    from ..verdicts.ensemble import bootstrap_auc_interval

    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=np.float64)
    if calls is None:
        fake_called, real_called = p >= 0.5 + band, p < 0.5 - band
    else:
        fake_called = np.array([c == "FAKE" for c in calls], dtype=bool)
        real_called = np.array([c == "REAL" for c in calls], dtype=bool)
    reals, fakes = y == 0, y == 1
    decided = fake_called | real_called
    right = (fake_called & fakes) | (real_called & reals)
    metrics = {
        "videos": int(y.size),
        "real_videos": int(reals.sum()),
        "fake_videos": int(fakes.sum()),
        "auc": _auc(y, p),
        "log_loss": float(log_loss(y, np.clip(p, *LOG_LOSS_CLIP), labels=[0, 1])),
        "accuracy": float(np.mean((p >= 0.5) == fakes)),
        "ece": expected_calibration_error(y, p),
        "band": band,
        "decided_share": float(decided.mean()),
        "decided_accuracy": float(right.sum() / decided.sum()) if decided.any() else math.nan,
        "real_called_fake": int((fake_called & reals).sum()),
        "real_called_fake_share": (float((fake_called & reals).sum() / reals.sum())
                                   if reals.any() else math.nan),
        "fake_called_real": int((real_called & fakes).sum()),
        "fake_called_real_share": (float((real_called & fakes).sum() / fakes.sum())
                                   if fakes.any() else math.nan),
    }
    if intervals:
        rng = np.random.default_rng(seed)
        auc_interval = bootstrap_auc_interval(y, p, resamples=BOOTSTRAP_RESAMPLES, seed=seed)
        metrics["auc_ci95"] = list(auc_interval) if auc_interval else None
        metrics["real_called_fake_share_ci95"] = _share_interval(
            fake_called[reals].astype(float), rng, BOOTSTRAP_RESAMPLES)
        metrics["fake_called_real_share_ci95"] = _share_interval(
            real_called[fakes].astype(float), rng, BOOTSTRAP_RESAMPLES)
    return metrics


def clean(value):
    """JSON has no NaN: a measure a set cannot have is written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def number_text(value) -> str:
    """A measure as tables print it: three decimals, "n/a" for one the set cannot have."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.3f}"


def count_text(metrics: dict, key: str) -> str:
    """"3/17" for real_called_fake (of the real clips) or fake_called_real (of the fakes)."""
    of = metrics["real_videos"] if key == "real_called_fake" else metrics["fake_videos"]
    return f"{metrics[key]}/{of}"
