"""Distillation: a trained zoo model (the teacher) labels every training face as it is built,
after SBI, cropping and augmentation, and its calibrated P(fake) is mixed into the target:

    target = weight * teacher P(fake) + (1 - weight) * label

so a small student learns from a pretrained detector's graded view of each face (how fake this
blend, this compression, this real face looks) and not only from 80 real identities' hard labels.
The teacher sees the same augmented face as the student, at its own input size.

With a feature weight, the student also learns the teacher's view of the face itself: a
projection of its pooled features is pulled towards the teacher's pooled features (both made
unit length), as in FitNets. One P(fake) per face says little; the teacher's 1,280 pooled
features carry what its ImageNet pretraining sees in the face, which a student trained from
scratch on 80 real identities cannot learn by itself."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREDICT_BATCH = 32
POOL_LAYER = "head_pool"             # the pooled features before every zoo model's head
FEATURE_OUTPUT = "teacher_features"  # the student's extra output while it trains


@dataclass
class Teacher:
    model: object                   # keras.Model, on whichever backend trains
    name: str
    sha256: str
    input_size: int
    threshold: float
    temperature: float
    weight: float
    feature_weight: float = 0.0

    def __post_init__(self):
        import keras

        if not 0.0 < self.weight <= 1.0:
            raise ValueError(f"distill weight must be in (0, 1], got {self.weight}")
        if self.feature_weight < 0:
            raise ValueError(f"feature weight must be at least 0, got {self.feature_weight}")
        self._lock = threading.Lock()
        pooled = self.model.get_layer(POOL_LAYER).output
        self.feature_size = int(pooled.shape[-1])
        self._both = keras.Model(self.model.inputs, [self.model.output, pooled])

    def _predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated P(fake) (the teacher's card threshold lands on 0.5) and unit-length pooled
        features of N x S x S x 3 faces."""
        from ..verdicts.verdict import calibrate

        raw, features = [], []
        with self._lock:       # batches are built on several threads; one predict at a time
            for start in range(0, len(images), PREDICT_BATCH):
                chunk = np.asarray(images[start:start + PREDICT_BATCH], dtype=np.float32)
                p, f = self._both.predict_on_batch(chunk)
                raw.append(np.asarray(p, np.float64).reshape(-1))
                features.append(np.asarray(f, np.float32))
        raw_all = np.concatenate(raw) if raw else np.zeros((0,))
        pooled = (np.concatenate(features) if features
                  else np.zeros((0, self.feature_size), np.float32))
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-6)
        return np.atleast_1d(calibrate(raw_all, self.threshold, self.temperature)), pooled

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self._predict(images)[0]

    def targets(self, labels: np.ndarray, teacher_images: np.ndarray):
        """The student's target: the mixed P(fake), and with a feature weight also the
        teacher's features, as {HEAD_LAYER: ..., FEATURE_OUTPUT: ...}."""
        from ..models.backbones import HEAD_LAYER

        soft, features = self._predict(teacher_images)
        mixed = (self.weight * soft + (1.0 - self.weight) * labels).astype(np.float32)
        if not self.feature_weight:
            return mixed
        return {HEAD_LAYER: mixed, FEATURE_OUTPUT: features}

    def describe(self) -> dict:
        described = {"teacher": self.name, "teacher_sha256": self.sha256,
                     "teacher_input_size": self.input_size, "weight": self.weight,
                     "target": "weight * calibrated teacher P(fake) + (1 - weight) * label, on "
                               "the same SBI/cropped/augmented face"}
        if self.feature_weight:
            described.update({
                "feature_weight": self.feature_weight,
                "features": f"the student's pooled features, projected by a Dense layer to the "
                            f"teacher's {self.feature_size} pooled features, both unit length, "
                            "squared distance times feature_weight added to the loss while "
                            "training; the projection is dropped from the exported model"})
        return described


def load_teacher(path: str | Path, weight: float, feature_weight: float = 0.0) -> Teacher:
    """The teacher model beside its card, checked against the card's sha256, safe_mode."""
    from ..models.model_store import load_checked_model

    model, card = load_checked_model(path)
    return Teacher(model=model, name=card.name, sha256=card.sha256,
                   input_size=int(card.input_size), threshold=float(card.threshold),
                   temperature=float(card.temperature), weight=float(weight),
                   feature_weight=float(feature_weight))


def with_feature_output(classifier, feature_size: int):
    """The classifier with a second output for training: its pooled features projected to the
    teacher's feature size, unit length. Shares every layer with `classifier`."""
    import keras

    from ..models.backbones import HEAD_LAYER

    pooled = classifier.get_layer(POOL_LAYER).output
    projected = keras.layers.Dense(feature_size, name="teacher_feature_projection")(pooled)
    unit = keras.layers.UnitNormalization(name=FEATURE_OUTPUT, dtype="float32")(projected)
    return keras.Model(classifier.inputs, {HEAD_LAYER: classifier.output, FEATURE_OUTPUT: unit},
                       name=f"{classifier.name}_with_teacher_features")


def classifier_of(model):
    """The P(fake) path of a training model: the model itself, or, when it carries the
    feature output, the classifier inside it (the same layers and weights)."""
    import keras

    from ..models.backbones import HEAD_LAYER

    if not any(layer.name == FEATURE_OUTPUT for layer in model.layers):
        return model
    return keras.Model(model.inputs, model.get_layer(HEAD_LAYER).output)
