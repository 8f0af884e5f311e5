"""`python -m core average`: one model whose weights are the weighted mean of several fine-tunes of
the same network (a "model soup", Wortsman et al. 2022), calibrated on labelled val faces.

Two fine-tunes that started from the same weights and moved little sit in one basin of the loss,
so the mean of their weights scores about as their ensemble does, at the cost of one model: the
pipeline's mirrored and re-encoded views then run one network instead of two. Models that did
not start from one another (other architectures, or independent trainings) have no such basin
and are refused where the structure differs; where it matches, only the evaluation can tell."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models.model_store import ModelCard, load_checked_model, save_model
from .faceindex import describe_indexes, read_face_indexes
from .train import (calibrate_on_faces, load_faces, machine_description, predict_faces,
                    validation_metrics)


@dataclass(frozen=True)
class AveragedModel:
    card: ModelCard
    val_video_auc: float
    member_val_video_auc: dict[str, float]


def parse_weights(text: str | None, count: int) -> list[float]:
    """The members' shares, normalised to sum 1 (equal shares when none are given)."""
    if text is None:
        return [1.0 / count] * count
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--weights must be numbers separated by commas, not {text!r}") from None
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} models")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be non-negative and not all zero")
    total = sum(weights)
    return [w / total for w in weights]


def averaged_weights(weight_lists: list[list[np.ndarray]], shares: list[float]) -> list[np.ndarray]:
    """The shares' weighted mean of each variable (batch-norm statistics included), in float64
    and cast back to each variable's own dtype."""
    first = weight_lists[0]
    for other in weight_lists[1:]:
        if len(other) != len(first) or any(a.shape != b.shape for a, b in zip(first, other)):
            raise ValueError("the models do not have the same variables: only fine-tunes of one "
                             "network can be averaged")
    return [sum(share * np.asarray(ws[i], dtype=np.float64)
                for share, ws in zip(shares, weight_lists)).astype(first[i].dtype)
            for i in range(len(first))]


def _same_structure(models) -> None:
    layouts = [[(type(layer).__name__, layer.name) for layer in m.layers] for m in models]
    shapes = [tuple(m.input_shape) for m in models]
    if any(layout != layouts[0] for layout in layouts[1:]) or len(set(shapes)) != 1:
        raise ValueError("the models are not one network (their layers or input sizes differ): "
                         "only fine-tunes of one network can be averaged")


def val_faces(sources) -> tuple[list[dict], list[str]]:
    """The val rows of the face indexes (their split column), for calibration."""
    rows = read_face_indexes(sources)
    val = [r for r in rows if r.get("split") == "val"]
    if not val:
        raise ValueError("the face indexes have no split == 'val' rows to calibrate on; "
                         "give the faces of the val videos (python -m core extract --split val)")
    return val, [str(s) for s in sources]


def average_models(paths: list[str | Path], out: str | Path, faces: list[str | Path], *,
                   weights: str | None = None, command: str | None = None,
                   threads: int = 2) -> AveragedModel:
    """Average the models' weights, calibrate the result on the faces' val rows as `train` does
    (threshold on the video means, temperature on the faces) and save it with its card."""
    started = time.monotonic()
    if len(paths) < 2:
        raise ValueError("give at least two models to average")
    out = Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"--out must end in .keras: {out}")
    loaded = [load_checked_model(p) for p in paths]
    models = [m for m, _ in loaded]
    cards = [c for _, c in loaded]
    if out.stem in {c.name for c in cards}:
        raise ValueError(f"{out.name} would overwrite one of the models averaged")
    _same_structure(models)
    shares = parse_weights(weights, len(models))

    rows, sources = val_faces(faces)
    side = int(models[0].input_shape[1])
    # Whole pipeline crops at the model's input: a framed model cuts its window in its own graph.
    val_set = load_faces(rows, side, threads=threads)
    inputs = np.stack(val_set.images)
    member_auc = {c.name: validation_metrics(predict_faces(m, inputs), val_set)["video_auc"]
                  for m, c in zip(models, cards)}

    out.parent.mkdir(parents=True, exist_ok=True)
    averaged = models[0]
    averaged.set_weights(averaged_weights([m.get_weights() for m in models], shares))
    face_scores = predict_faces(averaged, inputs)
    calibration, video = calibrate_on_faces(face_scores, val_set)
    auc = validation_metrics(face_scores, val_set)["video_auc"]
    metrics = {"val_video_auc": auc, "val_video_log_loss": video["log_loss"],
               "val_video_accuracy": video["accuracy"],
               "member_val_video_auc": member_auc}
    first = cards[0]
    training = {
        **({"command": command} if command else {}),
        "method": "weight average of fine-tunes of one network (model soup); no training step",
        "backbone": first.backbone,
        "depth": first.depth,
        # The side the backbone sees and the share of the crop it keeps, as the members had them.
        "input_size": (first.training or {}).get("input_size", first.input_size),
        "framing": (first.training or {}).get("framing", {"share_kept": 1.0,
                                                          "model_input": first.input_size,
                                                          "how": "the whole crop"}),
        "members": [{"model": c.name, "sha256": c.sha256, "share": round(s, 6),
                     "training": c.training} for c, s in zip(cards, shares)],
        "weights": (first.training or {}).get("weights", "none"),
        "data": {"calibration_faces": describe_indexes(sources), "val_faces": len(val_set),
                 "val_videos": len(val_set.video_labels)},
        "calibration": {"threshold_on": "val video mean of face P(fake), max balanced accuracy",
                        "temperature_on": "val faces, min log loss"},
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": machine_description(),
    }
    card = save_model(averaged, out, backbone=first.backbone, depth=first.depth,
                      preprocessing=first.preprocessing, threshold=calibration.threshold,
                      temperature=calibration.temperature, metrics=metrics, training=training)
    return AveragedModel(card=card, val_video_auc=auc, member_val_video_auc=member_auc)

