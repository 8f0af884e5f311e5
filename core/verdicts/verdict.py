"""From raw per-face P(fake) to a verdict: calibration, aggregation, ensemble, label.

Every aggregate and every label works on calibrated probabilities, where each model's own
decision threshold sits at 0.5, so one band around 0.5 means UNCERTAIN for every model.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

RULES = ("mean", "confident", "fakest_face")
LABELS = ("REAL", "FAKE", "UNCERTAIN")
_EPS = 1e-6


def _logit(p):
    return np.log(p) - np.log1p(-p)


def calibrate(p, threshold: float = 0.5, temperature: float = 1.0):
    """sigmoid((logit(p) - logit(threshold)) / temperature), p clipped to [1e-6, 1 - 1e-6].

    Moves a model's threshold to 0.5 and, with temperature > 1, softens over-confident outputs.
    Scalars give a numpy float, arrays an array of the same shape.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold}")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    clipped = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    z = (_logit(clipped) - _logit(threshold)) / temperature
    calibrated = 0.5 * (1.0 + np.tanh(0.5 * z))   # the sigmoid, without overflow for large |z|
    return calibrated[()] if calibrated.ndim == 0 else calibrated


def _scores_array(scores) -> np.ndarray:
    if isinstance(scores, Mapping):
        scores = scores.values()
    if not isinstance(scores, np.ndarray):
        scores = list(scores)
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("no scores to aggregate")
    return values


def confident_mean(scores, *, fake_threshold: float = 0.8, real_threshold: float = 0.2,
                   fake_fraction: float = 0.4, min_fake_ratio: float = 11 / 32,
                   real_fraction: float = 0.9) -> float:
    """The DFDC winner's confident-frames rule, on one person's per-frame scores.

    fake_threshold / real_threshold: a frame is confidently fake above / confidently real below.
    fake_fraction: confident fakes must be more than floor(n * fake_fraction) of the n frames...
    min_fake_ratio: ... and more than max(1, round(n * min_fake_ratio)): the winner asked for more
        than 11 of its 32 frames; scaled to n, and at least 2 frames, so one frame of a short
        clip cannot decide alone.
    real_fraction: otherwise, if more than n * real_fraction frames are confidently real, their
        mean.
    Otherwise the plain mean. A few confidently fake frames outweigh many unsure ones because
    manipulations often show only in some frames.
    """
    values = _scores_array(scores)
    n = values.size
    fakes = values[values > fake_threshold]
    reals = values[values < real_threshold]
    least_fakes = max(math.floor(n * fake_fraction), max(1, round(n * min_fake_ratio)))
    if fakes.size > least_fakes:
        return float(fakes.mean())
    if reals.size > n * real_fraction:
        return float(reals.mean())
    return float(values.mean())


def aggregate_person(scores, rule: str = "confident", **rule_options) -> float:
    """One person's score from their per-frame calibrated scores (a sequence or {frame: score}).

    "mean": the plain mean (the origin project's rule). "confident": `confident_mean`.
    "fakest_face": only differs at video level; for one person it is the mean.
    """
    _check_rule(rule)
    if rule == "confident":
        return confident_mean(scores, **rule_options)
    return float(_scores_array(scores).mean())


def aggregate_video(person_scores: Mapping[int, Mapping[int, float]], rule: str = "confident",
                    **rule_options) -> float:
    """The video's score from {person_id: {frame_index: calibrated score}}.

    "mean" / "confident": the most suspicious person's aggregate (one fake face makes a fake
    video). "fakest_face": in each frame the highest score among the persons present, then the
    mean over frames.
    """
    _check_rule(rule)
    persons = {pid: scores for pid, scores in person_scores.items() if len(scores)}
    if not persons:
        raise ValueError("no face scores to aggregate")
    if rule == "fakest_face":
        fakest: dict[int, float] = {}
        for scores in persons.values():
            for frame_index, score in scores.items():
                fakest[frame_index] = max(float(score), fakest.get(frame_index, -math.inf))
        return float(np.mean(list(fakest.values())))
    return max(aggregate_person(scores, rule, **rule_options) for scores in persons.values())


def ensemble(calibrated: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mean over models of calibrated probabilities ({model name: scores}, same shapes)."""
    if not calibrated:
        raise ValueError("no model outputs to ensemble")
    arrays = [np.asarray(v, dtype=np.float64) for v in calibrated.values()]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"models gave outputs of different shapes: {sorted(shapes)}")
    mean = np.mean(np.stack(arrays), axis=0)
    return mean[()] if mean.ndim == 0 else mean


def label_for(probability: float, band: float = 0.1) -> str:
    """"FAKE" if p >= 0.5 + band, "REAL" if p < 0.5 - band, else "UNCERTAIN".

    band 0 is the origin project's plain threshold: 0.5 itself is FAKE.
    """
    if not 0.0 <= band < 0.5:
        raise ValueError(f"band must be in [0, 0.5), got {band}")
    p = float(probability)
    if math.isnan(p):
        raise ValueError("probability is NaN")
    if p >= 0.5 + band:
        return "FAKE"
    if p < 0.5 - band:
        return "REAL"
    return "UNCERTAIN"


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; choose one of {', '.join(RULES)}")
