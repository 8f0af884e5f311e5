"""Distillation: a trained zoo model (the teacher) labels every training face as it is built,
after SBI, cropping and augmentation, and its calibrated P(fake) is mixed into the target:

    target = weight * teacher P(fake) + (1 - weight) * label

so a small student learns from a pretrained detector's graded view of each face (how fake this
blend, this compression, this real face looks) and not only from 80 real identities' hard labels.
The teacher sees the same augmented face as the student, at its own input size."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREDICT_BATCH = 32


@dataclass
class Teacher:
    model: object                   # keras.Model, on whichever backend trains
    name: str
    sha256: str
    input_size: int
    threshold: float
    temperature: float
    weight: float

    def __post_init__(self):
        if not 0.0 < self.weight <= 1.0:
            raise ValueError(f"distill weight must be in (0, 1], got {self.weight}")
        self._lock = threading.Lock()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Calibrated P(fake) (the teacher's card threshold lands on 0.5) of N x S x S x 3 faces."""
        from ..verdict import calibrate

        out = []
        with self._lock:       # batches are built on several threads; one predict at a time
            for start in range(0, len(images), PREDICT_BATCH):
                chunk = np.asarray(images[start:start + PREDICT_BATCH], dtype=np.float32)
                out.append(np.asarray(self.model.predict_on_batch(chunk), np.float64).reshape(-1))
        raw = np.concatenate(out) if out else np.zeros((0,))
        return np.atleast_1d(calibrate(raw, self.threshold, self.temperature))

    def targets(self, labels: np.ndarray, teacher_images: np.ndarray) -> np.ndarray:
        soft = self.probabilities(teacher_images)
        return (self.weight * soft + (1.0 - self.weight) * labels).astype(np.float32)

    def describe(self) -> dict:
        return {"teacher": self.name, "teacher_sha256": self.sha256,
                "teacher_input_size": self.input_size, "weight": self.weight,
                "target": "weight * calibrated teacher P(fake) + (1 - weight) * label, on the "
                          "same SBI/cropped/augmented face"}


def load_teacher(path: str | Path, weight: float) -> Teacher:
    """The teacher model beside its card, checked against the card's sha256, safe_mode."""
    from ..model_store import load_checked_model

    model, card = load_checked_model(path)
    return Teacher(model=model, name=card.name, sha256=card.sha256,
                   input_size=int(card.input_size), threshold=float(card.threshold),
                   temperature=float(card.temperature), weight=float(weight))
