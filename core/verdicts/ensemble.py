"""The fitted ensemble: weights over the zoo's models, chosen on the validation split through the
full pipeline, stored as `models/ensemble.json` beside the model cards.

A face's ensemble score is the weighted mean of its members' calibrated P(fake), calibrated once
more with the ensemble's own threshold and temperature; persons and videos are then aggregated
with the rule the weights were fitted under, exactly as for a single model. The weights are
searched on a grid over the simplex that includes every single model alone, so on the split they
were fitted on the ensemble is never worse than its best member. The plain mean over any chosen
subset stays available (`kind="mean"`).

The card records each member's sha256: a member retrained or replaced makes the weights stale,
and a stale ensemble is not applied."""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import ModelError
from .calibration import LOG_LOSS_CLIP, TEMPERATURE_RANGE, fit_threshold, log_loss
from .verdict import RULES, aggregate_video, calibrate, label_for

ENSEMBLE_CARD = "ensemble.json"
GRID_STEPS = 4                 # weights in quarters: few candidates, so little room to overfit 28 clips


@dataclass
class EnsembleCard:
    weights: dict[str, float]                  # member -> weight > 0, summing to 1
    threshold: float = 0.5
    temperature: float = 1.0
    rule: str = "confident"
    member_sha256: dict[str, str] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    fitted_on: dict = field(default_factory=dict)
    created: str = ""
    card_path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        weights = {str(k): float(v) for k, v in dict(self.weights).items() if float(v) > 0}
        if not weights:
            raise ModelError("an ensemble card needs at least one member with a positive weight")
        if any(not math.isfinite(v) for v in weights.values()):
            raise ModelError("ensemble weights must be finite")
        total = sum(weights.values())
        self.weights = {k: v / total for k, v in weights.items()}
        if not 0.0 < float(self.threshold) < 1.0 or not float(self.temperature) > 0.0:
            raise ModelError(f"ensemble calibration out of range: threshold {self.threshold}, "
                             f"temperature {self.temperature}")
        if self.rule not in RULES:
            raise ModelError(f"ensemble card names unknown rule {self.rule!r}")

    @property
    def members(self) -> list[str]:
        return list(self.weights)

    def face_score(self, calibrated_scores: Mapping[str, float]) -> float:
        """The ensemble's calibrated P(fake) for one face from its members' calibrated scores."""
        return mixed_score(calibrated_scores, self.weights, self.threshold, self.temperature)

    def stale_members(self, sha256_by_name: Mapping[str, str]) -> list[str]:
        """Members missing from the zoo or whose file changed since the weights were fitted."""
        return [name for name in self.members
                if sha256_by_name.get(name) is None
                or sha256_by_name[name] != self.member_sha256.get(name)]

    def to_dict(self) -> dict:
        return {"weights": self.weights, "threshold": self.threshold,
                "temperature": self.temperature, "rule": self.rule,
                "member_sha256": self.member_sha256, "metrics": self.metrics,
                "fitted_on": self.fitted_on, "created": self.created}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic.write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        self.card_path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EnsembleCard":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelError(f"ensemble card {path} is not readable JSON: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
            raise ModelError(f"ensemble card {path} has no weights")
        known = {"weights", "threshold", "temperature", "rule", "member_sha256", "metrics",
                 "fitted_on", "created"}
        try:
            card = cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as error:
            raise ModelError(f"ensemble card {path} is malformed: {error}") from None
        card.card_path = path
        return card


def mixed_score(calibrated_scores: Mapping[str, float], weights: Mapping[str, float],
                threshold: float = 0.5, temperature: float = 1.0) -> float:
    """Weighted mean of members' calibrated P(fake), calibrated with the ensemble's own
    threshold and temperature: one face's ensemble score, at inference and while fitting."""
    mixed = sum(w * float(calibrated_scores[name]) for name, w in weights.items() if w > 0)
    return float(calibrate(mixed, threshold, temperature))


def weights_text(weights: Mapping[str, float]) -> str:
    """Which models count and how much, for a person: "a × 0.75, b × 0.25"."""
    return ", ".join(f"{name} × {weight:.2f}" for name, weight in weights.items())


def load_ensemble(models_dir: str | Path) -> EnsembleCard | None:
    """The folder's fitted ensemble, or None when it has none."""
    path = Path(models_dir) / ENSEMBLE_CARD
    return EnsembleCard.load(path) if path.is_file() else None


@dataclass(frozen=True)
class EnsembleChoice:
    """What the ENSEMBLE score of an analysis is: the fitted card, or the plain mean."""
    weights: dict[str, float]
    card: EnsembleCard | None = None

    @property
    def kind(self) -> str:
        return "fitted" if self.card is not None else "mean"

    def face_score(self, calibrated_scores: Mapping[str, float]) -> float:
        if self.card is not None:
            return self.card.face_score(calibrated_scores)
        return float(np.mean([calibrated_scores[name] for name in self.weights]))


def choose(names: Sequence[str], card: EnsembleCard | None) -> EnsembleChoice:
    """The fitted ensemble when all its members are among `names`, else the mean over `names`."""
    if card is not None and set(card.members) <= set(names):
        return EnsembleChoice(dict(card.weights), card)
    return EnsembleChoice({name: 1.0 / len(names) for name in names})


# --- fitting ---------------------------------------------------------------------------------

@dataclass
class VideoFaces:
    """One analysed, labelled video as fitting needs it: per face (person, frame, calibrated
    member scores)."""
    label: int
    faces: list[tuple[int, int, dict[str, float]]]


def simplex_grid(members: int, steps: int = GRID_STEPS) -> np.ndarray:
    """Every weight vector with entries in multiples of 1/steps summing to 1."""
    rows = []
    for cut in itertools.combinations(range(steps + members - 1), members - 1):
        edges = (-1, *cut, steps + members - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(members)])
    return np.asarray(rows, dtype=np.float64) / steps


def video_scores(videos: Sequence[VideoFaces], members: Sequence[str], weights: np.ndarray,
                 rule: str, threshold: float = 0.5, temperature: float = 1.0) -> np.ndarray:
    """Each video's aggregated ensemble score for one weight vector; no face -> 0.5."""
    by_name = dict(zip(members, weights))
    out = np.full(len(videos), 0.5)
    for v, video in enumerate(videos):
        if not video.faces:
            continue
        per_person: dict[int, dict[int, float]] = {}
        for person, frame, scores in video.faces:
            per_person.setdefault(person, {})[frame] = mixed_score(scores, by_name, threshold,
                                                                   temperature)
        out[v] = aggregate_video(per_person, rule=rule)
    return out


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else math.nan


def video_log_loss(labels, scores) -> float:
    return log_loss(labels, np.clip(np.asarray(scores, dtype=np.float64), *LOG_LOSS_CLIP))


def band_metrics(labels, scores, band: float) -> dict:
    """Share of videos outside the UNCERTAIN band, and the accuracy on those."""
    labels = np.asarray(labels, dtype=int)
    decided = [(label_for(p, band), y) for p, y in zip(scores, labels)]
    sure = [(lab, y) for lab, y in decided if lab != "UNCERTAIN"]
    right = sum((lab == "FAKE") == (y == 1) for lab, y in sure)
    return {"band": band, "decided_share": len(sure) / max(len(decided), 1),
            "decided_accuracy": (right / len(sure)) if sure else None,
            "decided_videos": len(sure), "videos": len(decided)}


def bootstrap_auc_interval(labels, scores, *, resamples: int = 2000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the AUC, videos resampled with replacement; None when
    the set has only one class. Resamples with one class are dropped. All resamples are ranked
    at once (the Mann-Whitney form of the AUC, ties at their mean rank): a per-dataset table of
    a robustness run asks for hundreds of intervals."""
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=np.float64)
    if len(set(y.tolist())) < 2:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(y), size=(resamples, len(y)))
    labels_drawn, scores_drawn = y[picks], s[picks]
    positives = labels_drawn.sum(axis=1)
    negatives = len(y) - positives
    both = (positives > 0) & (negatives > 0)
    ranks = rankdata(scores_drawn[both], axis=1)
    rank_sum = np.where(labels_drawn[both] == 1, ranks, 0.0).sum(axis=1)
    p, n = positives[both], negatives[both]
    values = (rank_sum - p * (p + 1) / 2.0) / (p * n)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def _fit_temperature(videos, members, weights, rule, labels, threshold,
                     min_temperature: float = TEMPERATURE_RANGE[0]) -> float:
    from scipy.optimize import minimize_scalar

    def loss(log_t: float) -> float:
        scores = video_scores(videos, members, weights, rule, threshold, math.exp(log_t))
        return video_log_loss(labels, scores)

    bounds = (math.log(min_temperature), math.log(TEMPERATURE_RANGE[1]))
    found = minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-3})
    return float(math.exp(found.x))


def fit_ensemble(videos: Sequence[VideoFaces], members: Sequence[str], *, rule: str = "confident",
                 band: float = 0.1, steps: int = GRID_STEPS,
                 member_sha256: Mapping[str, str] | None = None,
                 fitted_on: Mapping | None = None,
                 min_temperature: float = TEMPERATURE_RANGE[0],
                 weights: Mapping[str, float] | None = None) -> EnsembleCard:
    """Weights on the simplex grid maximising video AUC (ties: lower log loss, then fewer
    members), then the ensemble's threshold (balanced accuracy) and temperature (video log loss).

    Only members with measurable signal on these videos take part: the lower end of their AUC's
    bootstrap 95 % interval above 0.5. A member at chance would otherwise enter as a near
    constant that merely rescales the others' scores around the aggregation rule's cut-offs,
    a gain of a few videos that says nothing about new clips. The best member alone is always
    a candidate, so on these videos the result is never worse than it by AUC.

    `min_temperature`: the ensemble's temperature is searched from here up. A temperature below 1
    sharpens the members' scores: it makes the verdict surer than its members, which a few dozen
    clips cannot justify.

    `weights`: hold these weights (normalised to sum 1) and fit only the threshold and
    temperature: a setting that changes how faces are scored (the views, say) moves the
    calibration, while a weight search on the same few dozen clips mostly moves the noise."""
    members = list(members)
    labels = np.array([v.label for v in videos], dtype=int)
    if len(set(labels.tolist())) < 2:
        raise ValueError("fitting an ensemble needs real and fake videos")
    singles = {m: video_scores(videos, members, np.eye(len(members))[i], rule)
               for i, m in enumerate(members)}
    single_auc = {m: _auc(labels, s) for m, s in singles.items()}
    intervals = {m: bootstrap_auc_interval(labels, s) for m, s in singles.items()}
    eligible = [m for m in members if intervals[m] is not None and intervals[m][0] > 0.5]
    if not eligible:
        eligible = [max(members, key=lambda m: single_auc[m])]
    if weights is not None:
        unknown = sorted(set(weights) - set(members))
        if unknown or not any(w > 0 for w in weights.values()):
            raise ValueError(f"held weights must name members with a positive weight: {unknown}")
        held = np.array([max(float(weights.get(m, 0.0)), 0.0) for m in members])
        trials = [held / held.sum()]
    else:
        trials = [np.array([grid[eligible.index(m)] if m in eligible else 0.0 for m in members])
                  for grid in simplex_grid(len(eligible), steps)]
    candidates = []
    for trial in trials:
        scores = video_scores(videos, members, trial, rule)
        candidates.append((_auc(labels, scores), -video_log_loss(labels, scores),
                           -int(np.count_nonzero(trial)), tuple(trial)))
    best = max(candidates)
    weights = np.array(best[3])
    raw = video_scores(videos, members, weights, rule)
    threshold = fit_threshold(raw, labels)
    # Calibration is monotonic per face but the rule aggregates after it, so it can reorder
    # videos; it is kept only where it does not cost AUC.
    temperature = _fit_temperature(videos, members, weights, rule, labels, threshold,
                                   min_temperature)
    final = video_scores(videos, members, weights, rule, threshold, temperature)
    if _auc(labels, final) < best[0] - 1e-9:
        threshold, temperature = 0.5, _fit_temperature(videos, members, weights, rule, labels, 0.5,
                                                       min_temperature)
        final = video_scores(videos, members, weights, rule, threshold, temperature)
        if _auc(labels, final) < best[0] - 1e-9:
            threshold, temperature, final = 0.5, 1.0, raw

    interval = bootstrap_auc_interval(labels, final)
    metrics = {
        "val_video_auc": _auc(labels, final),
        "val_video_auc_ci95": list(interval) if interval else None,
        "val_video_log_loss": video_log_loss(labels, final),
        "val_video_accuracy": float(np.mean((final >= 0.5) == (labels == 1))),
        **{f"val_{k}": v for k, v in band_metrics(labels, final, band).items()
           if k in ("decided_share", "decided_accuracy")},
        "band": band,
        "member_val_video_auc": single_auc,
        "member_val_video_auc_ci95": {m: list(i) if i else None for m, i in intervals.items()},
        "eligible_members": eligible,
        "eligible_rule": "lower end of the member's val AUC bootstrap 95% interval above 0.5",
        "candidates": len(candidates),
    }
    kept = {m: float(w) for m, w in zip(members, weights) if w > 0}
    return EnsembleCard(
        weights=kept, threshold=float(threshold), temperature=float(temperature), rule=rule,
        member_sha256={m: (member_sha256 or {}).get(m, "") for m in kept}, metrics=metrics,
        fitted_on=dict(fitted_on or {}),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
