"""Crop-level metrics of zoo models on a face index (`python -m core evaluate-crops`): the DFDC
val crops, one per source video, as each model sees them.

A model whose first layer keeps the central part of its input (backbones.FRAMING_LAYER, a
model trained at a tighter framing than the pipeline's crops) is given a crop of that framing
exactly where that part lies, the border it cuts away left black: the pixels its backbone sees
are the crop's own. Other models get the crop resized to their input. The AUC's 95% interval is
a bootstrap over source groups (a fake and the real it was made from resampled together)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .faceindex import read_face_index
from .framing import read_rgb

BOOTSTRAP_RESAMPLES = 1000


def model_input(crop: np.ndarray, size: int, window: tuple[int, int]) -> np.ndarray:
    offset, side = window
    interpolation = cv2.INTER_AREA if crop.shape[0] > side else cv2.INTER_CUBIC
    inner = cv2.resize(crop, (side, side), interpolation=interpolation)
    if side == size:
        return inner
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[offset:offset + side, offset:offset + side] = inner
    return canvas


def grouped_auc_interval(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                         resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[float] | None:
    """Bootstrap 95% interval of the AUC, resampling whole groups."""
    from sklearn.metrics import roc_auc_score

    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(resamples):
        picked = np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
        y = labels[picked]
        if 0 < y.sum() < len(y):
            aucs.append(roc_auc_score(y, scores[picked]))
    if not aucs:
        return None
    return [round(float(v), 4) for v in np.percentile(aucs, [2.5, 97.5])]


def evaluate_crops(index, cards, split: str | None = "val", limit: int | None = None,
                   whole: bool = False, ensemble=None) -> dict:
    """Per model: crops, AUC with its interval, log loss and accuracy of the calibrated P(fake).
    `whole`: every model gets the crop resized to its whole input (as if it were a pipeline
    crop), the comparison that shows what the framing layer changes. `ensemble`: a fitted
    EnsembleCard whose members are all among `cards` adds the row "ensemble", each crop scored
    as the pipeline scores a face (its members' calibrated P mixed by the card)."""
    from ..models.backbones import input_window
    from ..models.model_store import load_classifier
    from ..verdicts.calibration import calibrated

    rows = [r for r in read_face_index(index) if split is None or r["split"] == split]
    if limit:
        rows = rows[:limit]
    if not rows:
        raise ValueError(f"no {split or ''} rows in {index}")
    labels = np.array([r["label"] for r in rows])
    groups = np.array([r["group"] for r in rows])
    crops = [read_rgb(r["file"]) for r in rows]
    report = {"index": str(Path(index)), "split": split, "crops": len(rows),
              "real": int(np.sum(labels == 0)), "fake": int(np.sum(labels == 1)),
              "groups": int(len(set(groups.tolist()))), "framing": "whole" if whole else "model",
              "models": {}}
    probabilities: dict[str, np.ndarray] = {}
    for card in cards:
        classifier = load_classifier(card.card_path)
        size = classifier.input_size
        window = (0, size) if whole else input_window(classifier.model)
        scores = np.concatenate([
            classifier.predict(np.stack([model_input(c, size, window)
                                         for c in crops[start:start + 256]]))
            for start in range(0, len(crops), 256)])
        p = calibrated(scores, card.threshold, card.temperature)
        probabilities[card.name] = p
        report["models"][card.name] = {"input": size, "backbone_sees": window[1],
                                       **_crop_metrics(labels, scores, p, groups)}
    if ensemble is not None and set(ensemble.members) <= set(probabilities):
        mixed = np.array([ensemble.face_score({m: probabilities[m][i] for m in ensemble.members})
                          for i in range(len(rows))])
        report["models"]["ensemble"] = {"input": None, "backbone_sees": None,
                                        "members": ensemble.weights,
                                        **_crop_metrics(labels, mixed, mixed, groups)}
    return report


def _crop_metrics(labels: np.ndarray, scores: np.ndarray, p: np.ndarray, groups: np.ndarray
                  ) -> dict:
    """AUC of the scores (with its interval by source group); log loss and accuracy of P."""
    from sklearn.metrics import log_loss, roc_auc_score

    from ..verdicts.calibration import LOG_LOSS_CLIP

    both = 0 < labels.sum() < len(labels)
    return {
        "auc": round(float(roc_auc_score(labels, scores)), 4) if both else None,
        "auc_ci95": grouped_auc_interval(labels, scores, groups) if both else None,
        "log_loss": round(float(log_loss(labels, np.clip(p, *LOG_LOSS_CLIP), labels=[0, 1])), 4),
        "accuracy": round(float(np.mean((p >= 0.5) == (labels == 1))), 4),
    }


def format_crop_report(report: dict) -> str:
    from ..verdicts.ensemble import weights_text

    lines = [f"{report['crops']} crops ({report['real']} real, {report['fake']} fake, "
             f"{report['groups']} source groups) from {report['index']}, split "
             f"{report['split'] or 'all'}, framing: {report['framing']}",
             "| model | input | backbone sees | crop AUC [95% interval] | log loss | accuracy |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, m in report["models"].items():
        ci = m["auc_ci95"]
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}" + (
            f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        if name == "ensemble":
            lines.append(f"| ensemble ({weights_text(m['members'])}) | | | {auc} | "
                         f"{m['log_loss']:.3f} | {m['accuracy']:.3f} |")
            continue
        lines.append(f"| {name} | {m['input']} | {m['backbone_sees']} | {auc} | "
                     f"{m['log_loss']:.3f} | {m['accuracy']:.3f} |")
    return "\n".join(lines)
