"""Fitting a model card's decision threshold and temperature on the validation split.

calibrated = sigmoid((logit(p) - logit(threshold)) / temperature), the mapping verdict.calibrate
applies at inference: the threshold lands on 0.5 and the temperature sets how sure the model sounds.
The threshold is fitted on video-level scores (what verdicts are made of), the temperature on
face-level scores (many more samples, so a steadier log loss)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

# Probabilities are clipped before logit so 0 and 1 from a saturated sigmoid stay finite.
EPSILON = 1e-6
# Video-level log loss is reported on probabilities clipped to this range, so one confidently
# wrong clip of a few dozen does not dominate the number.
LOG_LOSS_CLIP = (0.01, 0.99)
THRESHOLD_RANGE = (1e-4, 1.0 - 1e-4)
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class Calibration:
    threshold: float
    temperature: float


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPSILON, 1.0 - EPSILON)
    return np.log(p) - np.log1p(-p)


def calibrated(p, threshold: float = 0.5, temperature: float = 1.0) -> np.ndarray:
    """The inference-time mapping itself, so what is fitted here is what the app applies."""
    from .verdict import calibrate

    return np.asarray(calibrate(p, threshold, temperature), dtype=np.float64)


def balanced_accuracy(labels, scores, threshold: float) -> float:
    y = np.asarray(labels, dtype=int)
    predicted = np.asarray(scores, dtype=np.float64) >= threshold
    return 0.5 * (float(np.mean(predicted[y == 1])) + float(np.mean(~predicted[y == 0])))


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=int).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if s.size == 0:
        raise ValueError("calibration needs at least one score")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return s, y


def fit_threshold(scores, labels) -> float:
    """The threshold t maximising balanced accuracy of `score >= t`.

    Candidates are the midpoints between neighbouring distinct scores (every different decision
    has one); among equally good ones the middle of the best run is taken, the margin-wise safest
    choice. With a single class there is nothing to separate and 0.5 is returned."""
    s, y = _check(scores, labels)
    if len(np.unique(y)) < 2:
        return 0.5
    distinct = np.unique(s)
    candidates = np.concatenate([[distinct[0] - 1e-3], (distinct[:-1] + distinct[1:]) / 2.0,
                                 [distinct[-1] + 1e-3]])
    accuracies = np.array([balanced_accuracy(y, s, t) for t in candidates])
    best = np.flatnonzero(accuracies >= accuracies.max() - 1e-12)
    # The best candidates can form several runs; take the longest, then its middle.
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    run = max(runs, key=len)
    low, high = candidates[run[0]], candidates[run[-1]]
    threshold = (low + high) / 2.0 if len(run) > 1 else candidates[run[0]]
    return float(np.clip(threshold, *THRESHOLD_RANGE))


def log_loss(labels, probabilities) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1.0 - EPSILON)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def fit_temperature(scores, labels, threshold: float = 0.5) -> float:
    """The temperature minimising the log loss of the calibrated scores (searched on log T)."""
    s, y = _check(scores, labels)
    z = logit(s) - logit(threshold)
    if len(np.unique(y)) < 2 or not np.any(z):
        return 1.0

    def loss(log_t: float) -> float:
        return log_loss(y, 1.0 / (1.0 + np.exp(-z / np.exp(log_t))))

    bounds = np.log(TEMPERATURE_RANGE)
    found = minimize_scalar(loss, bounds=tuple(bounds), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def fit_calibration(video_scores, video_labels, face_scores, face_labels) -> Calibration:
    threshold = fit_threshold(video_scores, video_labels)
    temperature = fit_temperature(face_scores, face_labels, threshold)
    return Calibration(threshold=threshold, temperature=temperature)
