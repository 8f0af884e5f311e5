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
only to faces it did not turn into self-blended fakes."""
from __future__ import annotations

import csv
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


def build_teacher_cache(indexes, teacher: str | Path, out: str | Path, *, split: str = "train",
                        framing: float = 1.0, limit: int | None = None,
                        max_minutes: float | None = None, seed: int = 0,
                        progress: bool = True) -> dict:
    """Score the `split` faces of the indexes with the teacher (calibrated by its card) into
    `out`, continuing a cache of the same teacher and framing. Returns a summary."""
    from ..models.backbones import input_window
    from ..models.model_store import ModelCard, load_classifier
    from ..verdicts.calibration import calibrated

    if not 0.2 <= framing <= 1.0:
        raise ValueError("framing must be in [0.2, 1]")
    out = Path(out)
    card = ModelCard.load(Path(teacher).with_suffix(".json"))
    header = {"teacher": card.name, "teacher_sha256": card.sha256,
              "teacher_input_size": int(card.input_size), "threshold": float(card.threshold),
              "temperature": float(card.temperature), "framing": framing, "split": split,
              "seed": seed, "p": "the teacher's calibrated P(fake) of the clean face",
              "indexes": describe_indexes(indexes)}
    done: dict[str, float] = {}
    if out.exists():
        previous, done = read_teacher_cache(out)
        same = {k: previous.get(k) for k in ("teacher_sha256", "framing", "split", "seed")}
        if same != {k: header[k] for k in same}:
            raise ValueError(f"{out} was made with another teacher, framing, split or seed "
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

    classifier = load_classifier(card.card_path)   # sha256 checked, safe_mode
    size = classifier.input_size
    window = input_window(classifier.model)
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
            raw = classifier.predict(_teacher_inputs(batch, size, window, framing))
            p = np.atleast_1d(calibrated(np.asarray(raw), card.threshold, card.temperature))
            writer.writerows([r["file"], f"{v:.5f}"] for r, v in zip(batch, p))
            handle.flush()
            scored += len(batch)
            if progress:
                rate = scored / max(time.monotonic() - started, 1e-6)
                left = (len(todo) - scored) / rate
                print(f"teacher-cache: {len(done) + scored}/{len(done) + len(todo)} faces, "
                      f"{rate:.0f} faces/s, {math.ceil(left / 60)} min left", flush=True)
    return {"cache": str(out), "teacher": card.name, "faces": len(done) + scored,
            "of": len(rows), "scored_now": scored,
            "seconds": round(time.monotonic() - started, 1)}
