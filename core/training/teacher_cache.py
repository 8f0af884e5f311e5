"""A teacher's P(fake) for every training face, computed once (`python -m core teacher-cache`)
and read by `train --teacher-cache`: a student then learns from the teacher's graded view of
95,000 crops without the teacher running beside it every epoch (online distillation doubles a
small student's step on this CPU; a cached P costs nothing after the first pass).

The cache is a CSV (file, teacher_p) beside a JSON header naming the teacher (its sha256, input
size, calibration) and the framing its faces were seen at. Faces are scored in a seeded random
order and each batch is appended as it finishes, so a run stopped early (or by --max-minutes)
leaves a uniform sample of the index, and running the same command again continues it.

The teacher sees each face clean (no SBI, no augmentation), at the framing the student trains
at: a pipeline crop cut to its central share, a foreign crop taken whole, placed where the
teacher's own framing layer looks (crop_metrics.model_input). The trainer applies the cached P
only to faces it did not turn into self-blended fakes.

The teacher may also be a fitted ensemble card (`models/ensemble.json`, its members beside it)
and may score each face's views (`--views flip,jpeg`) as the pipeline does: each member's raw
P(fake) averaged over the face and its views, calibrated by the member's card, mixed by the
ensemble's weights and calibrated once more. A student taught that P learns what the default
verdict says of a face after six network passes, from one."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from .faceindex import describe_indexes, load_face, read_face_indexes

BATCH = 128
COLUMNS = ["file", "teacher_p"]


def header_path(cache: str | Path) -> Path:
    return Path(cache).with_suffix(".json")


def read_teacher_cache(cache: str | Path) -> tuple[dict, dict[str, float]]:
    """(header, {absolute face file: calibrated teacher P(fake)}). A last line cut short by a
    killed run is skipped (the next run scores that face again)."""
    cache = Path(cache)
    if not cache.is_file() or not header_path(cache).is_file():
        raise ValueError(f"no teacher cache at {cache} (and its {header_path(cache).name}); "
                         "run python -m core teacher-cache first")
    header = json.loads(header_path(cache).read_text())
    scores: dict[str, float] = {}
    with cache.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                p = float(row["teacher_p"])
            except (TypeError, ValueError):
                continue
            if row.get("file") and 0.0 <= p <= 1.0:
                scores[row["file"]] = p
    return header, scores


def _teacher_inputs(rows: list[dict], size: int, window: tuple[int, int], framing: float
                    ) -> np.ndarray:
    from .crop_metrics import model_input

    return np.stack([model_input(load_face(row, window[1], framing)[0], size, window)
                     for row in rows])


class CachedTeacher:
    """One model, or a fitted ensemble's members, scoring clean faces as the pipeline does:
    `probabilities(rows)` is the calibrated P(fake) the analysis would give each face."""

    def __init__(self, teacher: str | Path, views: tuple[str, ...] = ()):
        from ..models.backbones import input_window
        from ..models.model_store import ModelCard, load_classifier
        from ..verdicts.ensemble import EnsembleCard, weights_text

        teacher = Path(teacher)
        self.views = tuple(views)
        if teacher.suffix == ".json" and _is_ensemble_card(teacher):
            self.ensemble = EnsembleCard.load(teacher)
            cards = [ModelCard.load(teacher.parent / f"{name}.json")
                     for name in self.ensemble.members]
            stale = self.ensemble.stale_members({c.name: c.sha256 for c in cards})
            if stale:
                raise ValueError(f"the ensemble {teacher} is stale: {', '.join(stale)} changed "
                                 "since its weights were fitted")
            self.name = f"ensemble ({weights_text(self.ensemble.weights)})"
            fitted = {k: self.ensemble.to_dict()[k]
                      for k in ("weights", "threshold", "temperature", "member_sha256")}
            self.sha256 = hashlib.sha256(json.dumps(fitted, sort_keys=True).encode()).hexdigest()
        else:
            self.ensemble = None
            cards = [ModelCard.load(teacher.with_suffix(".json"))]
            self.name, self.sha256 = cards[0].name, cards[0].sha256
        self.classifiers = [load_classifier(card.card_path) for card in cards]  # sha256, safe_mode
        self.windows = [input_window(c.model) for c in self.classifiers]
        final = self.ensemble if self.ensemble is not None else cards[0]  # the last calibration
        self.header = {"teacher": self.name, "teacher_sha256": self.sha256,
                       "teacher_input_size": int(self.classifiers[0].input_size),
                       "threshold": float(final.threshold),
                       "temperature": float(final.temperature), "views": list(self.views)}
        if self.ensemble is not None:
            self.header["members"] = dict(self.ensemble.member_sha256)

    def probabilities(self, rows: list[dict], framing: float) -> np.ndarray:
        from ..verdicts.calibration import calibrated
        from ..verdicts.views import predict_views

        inputs: dict[tuple, np.ndarray] = {}
        member_p: dict[str, np.ndarray] = {}
        for classifier, window in zip(self.classifiers, self.windows):
            key = (classifier.input_size, window)
            if key not in inputs:
                inputs[key] = _teacher_inputs(rows, classifier.input_size, window, framing)
            raw = predict_views(classifier, inputs[key], self.views).mean(axis=0)
            card = classifier.card
            member_p[classifier.name] = np.atleast_1d(
                calibrated(raw, card.threshold, card.temperature))
        if self.ensemble is None:
            return next(iter(member_p.values()))
        return np.array([self.ensemble.face_score({n: float(p[i]) for n, p in member_p.items()})
                         for i in range(len(rows))])


def _is_ensemble_card(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("weights"), dict)


def build_teacher_cache(indexes, teacher: str | Path, out: str | Path, *, split: str = "train",
                        framing: float = 1.0, views: tuple[str, ...] = (),
                        limit: int | None = None, max_minutes: float | None = None,
                        seed: int = 0, progress: bool = True) -> dict:
    """Score the `split` faces of the indexes with the teacher (a model calibrated by its card,
    or a fitted ensemble card; each face with its `views`) into `out`, continuing a cache of the
    same teacher, views and framing. Returns a summary."""
    if not 0.2 <= framing <= 1.0:
        raise ValueError("framing must be in [0.2, 1]")
    out = Path(out)
    scorer = CachedTeacher(teacher, views)
    header = {**scorer.header, "framing": framing, "split": split, "seed": seed,
              "p": "the teacher's calibrated P(fake) of the clean face"
                   + (f" (the mean over it and its views: {', '.join(views)})" if views else ""),
              "indexes": describe_indexes(indexes)}
    done: dict[str, float] = {}
    if out.exists():
        previous, done = read_teacher_cache(out)
        keys = ("teacher_sha256", "framing", "split", "seed", "views")
        same = {k: previous.get(k, [] if k == "views" else None) for k in keys}
        if same != {k: header[k] for k in keys}:
            raise ValueError(f"{out} was made with another teacher, views, framing, split or seed "
                             f"({same}); choose another --out")
    rows = [r for r in read_face_indexes(indexes) if not split or r["split"] == split]
    if not rows:
        raise ValueError(f"no {split} faces in {', '.join(map(str, indexes))}")
    order = np.random.default_rng(seed).permutation(len(rows))
    todo = [rows[i] for i in order if rows[i]["file"] not in done]
    if limit is not None:
        todo = todo[:max(0, limit - len(done))]
    out.parent.mkdir(parents=True, exist_ok=True)
    header_path(out).write_text(json.dumps(header, indent=2) + "\n")

    started, scored = time.monotonic(), 0
    fresh = not out.exists() or out.stat().st_size == 0
    with out.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if fresh:
            writer.writerow(COLUMNS)
        for start in range(0, len(todo), BATCH):
            if max_minutes is not None and time.monotonic() - started > max_minutes * 60:
                break
            batch = todo[start:start + BATCH]
            p = scorer.probabilities(batch, framing)
            writer.writerows([r["file"], f"{v:.5f}"] for r, v in zip(batch, p))
            handle.flush()
            scored += len(batch)
            if progress:
                rate = scored / max(time.monotonic() - started, 1e-6)
                left = (len(todo) - scored) / rate
                print(f"teacher-cache: {len(done) + scored}/{len(done) + len(todo)} faces, "
                      f"{rate:.0f} faces/s, {math.ceil(left / 60)} min left", flush=True)
    return {"cache": str(out), "teacher": scorer.name, "faces": len(done) + scored,
            "of": len(rows), "scored_now": scored,
            "seconds": round(time.monotonic() - started, 1)}
