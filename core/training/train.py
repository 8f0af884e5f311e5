"""Training a classifier on extracted faces (core.extract), with the origin project's recipe as the
defaults: Adam, binary cross-entropy, accuracy and AUC, batch 64, 50 epochs. On top of it: early
stopping on the validation split, Self-Blended Images from real faces, optional augmentation and
class weights, resumable checkpoints, a wall-time budget, and calibration of the stored model.

The best epoch is the one with the highest video-level validation AUC (mean face P(fake) per
video), ties going to the lower video log loss: videos, not faces, are what gets judged.

A run folder (--run-dir) holds:
    state.json          config, epoch reached, best epoch and score, history, patience count
    last.keras          the model after the last finished epoch, optimizer state included
    best.weights.h5     the best epoch's weights
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .. import atomic
from ..verdicts.calibration import LOG_LOSS_CLIP
from .augment import AUGMENT_PRESETS, AugmentSettings, augment
from .distill import FEATURE_OUTPUT, classifier_of, load_teacher, with_feature_output
from .faceindex import (describe_indexes, framing_window, load_face,
                        read_face_indexes, row_keypoints)
from .sbi import self_blend
from .teacher_cache import read_teacher_cache

STREAM_ABOVE = 20_000        # train faces held in memory up to this many, else decoded per batch
PROGRESS_EVERY_S = 60.0      # a progress line this often when there is no progress bar
MIN_ZOOM = 0.90              # training crops keep 90..100 % of the saved crop: the face stays centred
MAX_SHIFT = 0.03             # and moves by at most 3 % of the crop side
COSINE_FLOOR = 0.05          # the cosine schedule ends at this share of the initial rate


@dataclass
class TrainConfig:
    backbone: str
    faces: str | list[str]              # one or more face indexes (faces folders or CSVs)
    out: str
    run_dir: str
    weights: str | None = None          # None (random init) or "imagenet" (from the Keras cache)
    depth: str = "full"
    input_size: int | None = None       # None: the backbone's default (224)
    dropout: float = 0.5
    lr: float = 1e-3                    # Keras' Adam default, as the origin project used it
    lr_schedule: str = "constant"       # or "cosine": decays to 5 % of lr over `epochs`
    batch: int = 64
    epochs: int = 50
    patience: int = 5
    sbi_fraction: float = 0.5
    augment: str | None = None          # None or a preset of core.augment.AUGMENT_PRESETS
    class_weights: str | None = None    # None or "balanced"
    mixed_bf16: bool = False
    max_minutes: float | None = None
    val_fraction: float = 0.2           # only when the index has no split == "val" rows
    seed: int = 0
    workers: int = 2                    # batch-building threads
    teacher: str | None = None          # a zoo model (.keras beside its card) to distil from
    teacher_cache: str | None = None    # or a teacher's P(fake) of each face, computed once
    distill_weight: float = 0.5         # share of the teacher's P(fake) in the target
    feature_weight: float = 0.0         # > 0: also learn the teacher's pooled features
    command: str | None = None          # the command line that started the run, for the card
    select: str = "val_auc"             # "val_auc": the best val epoch, early stopping;
                                        # "last": the last epoch, val only reported
    balance: str | None = None          # None, or "dataset": sampling tempered over datasets
    fakes: str = "all"                  # "all", or "sbi": real fakes left out (SBI only)
    init: str | None = None             # a zoo model (.keras beside its card) to start from
    framing: float = 1.0                # share of the pipeline's crop side the model looks at
                                        # (centred); foreign crops are taken as cut at it
    epoch_faces: int | None = None      # faces drawn per epoch (class-balanced, datasets
                                        # tempered and capped); None: every face once
    max_dataset_share: float = 0.5      # with epoch_faces: one dataset's most of a class
    fake_share: float = 0.5             # with epoch_faces: the share drawn from the real
                                        # fakes (the rest are reals, sbi_fraction of them
                                        # self-blended)
    val_faces: int | None = None        # per-epoch validation: at most this many faces per
                                        # dataset (a fixed sample); the export uses all

    def __post_init__(self):
        if isinstance(self.faces, (list, tuple)):
            self.faces = [str(f) for f in self.faces]
            if not self.faces:
                raise ValueError("train needs at least one face index")
            if len(self.faces) == 1:
                self.faces = self.faces[0]
        if not 0.2 <= self.framing <= 1.0:
            raise ValueError("framing must be in [0.2, 1] (the share of the crop kept)")
        if self.epoch_faces is not None and self.epoch_faces < 1:
            raise ValueError("epoch faces must be at least 1")
        if not 0.0 < self.max_dataset_share <= 1.0:
            raise ValueError("max dataset share must be in (0, 1]")
        if not 0.0 < self.fake_share < 1.0:
            raise ValueError("fake share must be in (0, 1)")
        if self.fake_share != 0.5 and self.epoch_faces is None:
            raise ValueError("a fake share other than 0.5 needs --epoch-faces (a drawn mixture)")
        if self.val_faces is not None and self.val_faces < 1:
            raise ValueError("val faces must be at least 1")
        if self.augment is True:            # older run folders stored a flag
            self.augment = "basic"
        elif self.augment is False:
            self.augment = None
        if self.augment is not None and self.augment not in AUGMENT_PRESETS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENT_PRESETS)}, "
                             f"not {self.augment!r}")
        if self.weights not in (None, "imagenet"):
            raise ValueError(f"weights must be imagenet or none, not {self.weights!r}")
        if self.class_weights not in (None, "balanced"):
            raise ValueError(f"class weights must be balanced or none, not {self.class_weights!r}")
        if not 0.0 <= self.sbi_fraction <= 1.0:
            raise ValueError("sbi fraction must be in [0, 1]")
        if self.batch < 1 or self.epochs < 1 or self.patience < 1:
            raise ValueError("batch, epochs and patience must be at least 1")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr schedule must be constant or cosine, not {self.lr_schedule!r}")
        if not self.lr > 0:
            raise ValueError("learning rate must be positive")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError("max minutes must be positive")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError("val fraction must be in (0, 1)")
        if not 0.0 < self.distill_weight <= 1.0:
            raise ValueError("distill weight must be in (0, 1]")
        if self.feature_weight < 0 or (self.feature_weight and not self.teacher):
            raise ValueError("feature weight must be at least 0, and needs a teacher")
        if self.teacher and self.teacher_cache:
            raise ValueError("distil from a teacher or from a teacher cache, not both")
        if self.select not in ("val_auc", "last"):
            raise ValueError(f"select must be val_auc or last, not {self.select!r}")
        if self.balance not in (None, "dataset"):
            raise ValueError(f"balance must be dataset or none, not {self.balance!r}")
        if self.fakes not in ("all", "sbi"):
            raise ValueError(f"fakes must be all or sbi, not {self.fakes!r}")
        if self.fakes == "sbi" and not self.sbi_fraction > 0:
            raise ValueError("training on SBI fakes only needs --sbi-fraction above 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def face_indexes(self) -> list[str]:
        return [self.faces] if isinstance(self.faces, str) else list(self.faces)


# --- data ------------------------------------------------------------------------------------

@dataclass
class FaceSet:
    """Faces: uint8 crops (square, at work size; in memory, or a FaceFiles decoding each on
    demand), keypoints in crop pixels, labels."""
    images: "list[np.ndarray] | FaceFiles"
    keypoints: np.ndarray          # N x 5 x 2, NaN where unknown
    labels: np.ndarray             # N, 1 = fake
    videos: np.ndarray             # N video ids
    video_labels: dict[str, int] = field(default_factory=dict)
    datasets: np.ndarray | None = None   # N dataset names, where the index has them
    soft: np.ndarray | None = None       # N cached teacher P(fake), with --teacher-cache

    def __len__(self) -> int:
        return len(self.images)


def split_rows(rows: list[dict], val_fraction: float = 0.2) -> tuple[list[dict], list[dict], str]:
    """(train rows, val rows, how): the index's own split column when it has val rows, else a
    deterministic split by group (a hash), so faces of one identity never sit on both sides."""
    train = [r for r in rows if r.get("split") == "train"]
    val = [r for r in rows if r.get("split") == "val"]
    if val:
        if not train:
            raise ValueError("the faces index has val rows but no split == 'train' rows")
        return train, val, "index split column"
    usable = [r for r in rows if r.get("split") in ("", "train", None)]

    def in_val(row) -> bool:
        key = row.get("group") or row["video_id"]
        return zlib.crc32(key.encode("utf-8")) % 10_000 < val_fraction * 10_000

    train = [r for r in usable if not in_val(r)]
    val = [r for r in usable if in_val(r)]
    if not train or not val:
        raise ValueError("cannot form both a train and a val split from the faces index; "
                         "add a split column (train/val) to the labels and extract again")
    return train, val, f"by group hash, {val_fraction:.0%} val (the index has no val rows)"


class FaceFiles:
    """The crops of a face set, decoded from their files when a batch asks for them: 95,000
    faces would not fit in memory, and a JPEG or PNG decodes faster than a step trains."""

    def __init__(self, rows: list[dict], work_side: int, framing: float):
        self.rows, self.work_side, self.framing = rows, work_side, framing

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return load_face(self.rows[i], self.work_side, self.framing)[0]


def load_faces(rows: list[dict], work_side: int, threads: int = 2, *, framing: float = 1.0,
               stream: bool = False) -> FaceSet:
    """The faces of `rows` (see load_face), read once into memory, or with `stream` read on
    demand by each batch."""
    if stream:
        images = FaceFiles(rows, work_side, framing)
        keypoints = [_framed_keypoints(row, work_side, framing) for row in rows]
    else:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            loaded = list(pool.map(lambda row: load_face(row, work_side, framing), rows))
        images = [image for image, _ in loaded]
        keypoints = [points for _, points in loaded]
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    videos = np.array([r["video_id"] for r in rows])
    return FaceSet(images=images,
                   keypoints=np.stack(keypoints) if keypoints else np.zeros((0, 5, 2)),
                   labels=labels, videos=videos,
                   video_labels={r["video_id"]: int(r["label"]) for r in rows},
                   datasets=np.array([r.get("dataset") or "" for r in rows]))


def _framed_keypoints(row: dict, work_side: int, framing: float) -> np.ndarray:
    """load_face's keypoints without decoding the image: the side comes from the row (the
    extract's crop_size) or, for foreign crops, from the file's header."""
    points = row_keypoints(row)
    if not np.all(np.isfinite(points)):
        return points
    side = _crop_side(row)
    if framing < 1.0 and row.get("pipeline_framing", True):
        offset, side = framing_window(side, framing)
        points = points - offset
    if side > work_side:
        points = (points + 0.5) * (work_side / side) - 0.5
    return points


def _crop_side(row: dict) -> int:
    side = row.get("crop_size")
    if isinstance(side, (int, float)) and side > 0:
        return int(side)
    from PIL import Image

    with Image.open(row["file"]) as image:
        return int(image.size[0])


def mixture_weights(labels: np.ndarray, datasets: np.ndarray,
                    max_dataset_share: float = 0.5, fake_share: float = 0.5) -> np.ndarray:
    """Per-face sampling probabilities for a mixture of face sets: `fake_share` of every epoch
    from the fakes (half by default), the rest from the reals; within a class each dataset's
    share grows with the square root of its faces and is capped at `max_dataset_share` (what it
    loses goes to the others), so 79,000 DFDC fakes do not drown FF++ and the tools' clips, nor
    its 5:1 fakes its reals; within a dataset, uniform."""
    weights = np.zeros(len(labels), dtype=np.float64)
    class_share = {0: 1.0 - fake_share, 1: fake_share}
    for label in (0, 1):
        in_class = labels == label
        if not np.any(in_class):
            continue
        names, inverse, counts = np.unique(datasets[in_class], return_inverse=True,
                                           return_counts=True)
        shares = capped_shares(np.sqrt(counts.astype(np.float64)), max_dataset_share)
        weights[in_class] = (shares / counts)[inverse] * class_share[label]
    return weights / weights.sum()


def capped_shares(raw: np.ndarray, cap: float) -> np.ndarray:
    """raw / raw.sum(), with no share above `cap` where the others can take the excess."""
    shares = raw / raw.sum()
    if cap * len(shares) < 1.0:
        return shares
    for _ in range(len(shares)):
        over = shares > cap + 1e-12
        if not over.any():
            break
        excess = float(np.sum(shares[over] - cap))
        shares[over] = cap
        under = ~over & (shares < cap)
        shares[under] += excess * shares[under] / shares[under].sum()
    return shares


def dataset_balanced_weights(datasets: np.ndarray) -> np.ndarray:
    """Per-face sampling probabilities that give each dataset a share of every epoch growing with
    the square root of its size rather than its size: a small source (a few DeepFaceLive streams)
    is seen far more often than in proportion, without its few faces being repeated as often as
    the big sources' many."""
    _, inverse, counts = np.unique(datasets, return_inverse=True, return_counts=True)
    weights = 1.0 / np.sqrt(counts[inverse].astype(np.float64))
    return weights / weights.sum()


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The whole saved crop at the input size: the same framing inference uses."""
    if image.shape[0] == size:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interpolation)


def val_sample(faces: FaceSet, per_dataset: int | None, seed: int = 0) -> FaceSet:
    """At most `per_dataset` faces of each dataset, whole videos kept together and drawn at
    random once: the set every epoch is checked on."""
    if per_dataset is None:
        return faces
    rng = np.random.default_rng([seed, 7])
    keep = []
    for name in sorted(set(faces.datasets.tolist())):
        videos = sorted(set(faces.videos[faces.datasets == name].tolist()))
        taken = 0
        for video in rng.permutation(videos):
            members = np.flatnonzero(faces.videos == video)
            if taken and taken + len(members) > per_dataset:
                break
            keep.extend(members.tolist())
            taken += len(members)
    keep = sorted(keep)
    return FaceSet(images=[faces.images[i] for i in keep], keypoints=faces.keypoints[keep],
                   labels=faces.labels[keep], videos=faces.videos[keep],
                   video_labels={v: faces.video_labels[v] for v in faces.videos[keep].tolist()},
                   datasets=faces.datasets[keep])


def describe_mixture(faces: FaceSet) -> str:
    names = sorted(set(faces.datasets.tolist()))
    parts = []
    for name in names:
        of = faces.datasets == name
        parts.append(f"{name or '?'} {int(np.sum(of & (faces.labels == 0)))} real/"
                     f"{int(np.sum(of & (faces.labels == 1)))} fake")
    return ", ".join(parts)


def jittered_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A slightly zoomed and shifted square of the crop, resized to the input size."""
    side = image.shape[0]
    keep = max(1, int(round(side * rng.uniform(MIN_ZOOM, 1.0))))
    slack = side - keep
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2) * side
    left, top = (int(np.clip(round(slack / 2 + s), 0, slack)) for s in shift)
    window = image[top:top + keep, left:left + keep]
    interpolation = cv2.INTER_AREA if keep > size else cv2.INTER_LINEAR
    return cv2.resize(window, (size, size), interpolation=interpolation)


def effective_class_weights(labels: np.ndarray, sbi_fraction: float,
                            drawn_fake_share: float | None = None) -> dict[int, float]:
    """Balanced weights for the labels the network actually sees, SBI fakes counted as fakes.
    With `drawn_fake_share` the classes are drawn at that share (a mixture: 0 when the real
    fakes are left out), not in the proportion the labels hold."""
    if drawn_fake_share is None:
        real_drawn, fake_drawn = float(np.sum(labels == 0)), float(np.sum(labels == 1))
    else:
        real_drawn, fake_drawn = 1.0 - drawn_fake_share, drawn_fake_share
    real = real_drawn * (1.0 - sbi_fraction)
    fake = fake_drawn + real_drawn * sbi_fraction
    total = real + fake
    if real == 0 or fake == 0:
        return {0: 1.0, 1: 1.0}
    return {0: total / (2.0 * real), 1: total / (2.0 * fake)}


def make_batch(faces: FaceSet, indices, input_size: int, rng: np.random.Generator, *,
               sbi_fraction: float, augmentation: AugmentSettings | None,
               teacher_size: int | None = None):
    """(x float32 N x S x S x 3 in [0, 255], y float32 N, teacher x or None): SBI on a share of
    the real faces, jittered crop, then augmentation. With teacher_size, the face is cropped and
    augmented at the larger of the two sizes and resized for each, so both see the same face."""
    work = max(input_size, teacher_size or 0)
    x = np.empty((len(indices), input_size, input_size, 3), dtype=np.float32)
    y = np.empty((len(indices),), dtype=np.float32)
    x_teacher = (np.empty((len(indices), teacher_size, teacher_size, 3), dtype=np.float32)
                 if teacher_size else None)
    for row, j in enumerate(indices):
        image, label = faces.images[j], int(faces.labels[j])
        if label == 0 and sbi_fraction > 0 and rng.random() < sbi_fraction \
                and np.all(np.isfinite(faces.keypoints[j])):
            image, _ = self_blend(image, faces.keypoints[j], rng)
            label = 1
        image = jittered_crop(image, work, rng)
        if augmentation is not None:
            image = augment(image, rng, augmentation)
        x[row] = centre_crop(image, input_size)
        if x_teacher is not None:
            x_teacher[row] = centre_crop(image, teacher_size)
        y[row] = label
    return x, y, x_teacher


def steps_per_epoch(faces: int, batch: int) -> int:
    return math.ceil(faces / batch)


def _py_dataset_class():
    import keras

    class FaceBatches(keras.utils.PyDataset):
        """Training batches, reshuffled every epoch; each batch's randomness comes from
        (seed, epoch, batch), so batches built on different threads stay reproducible."""

        def __init__(self, faces: FaceSet, input_size: int, batch: int, *, sbi_fraction: float,
                     augmentation: AugmentSettings | None, class_weight: dict | None, seed: int,
                     epoch: int = 0, workers: int = 2, teacher=None, balance: str | None = None,
                     epoch_faces: int | None = None, max_dataset_share: float = 0.5,
                     fake_share: float = 0.5, soft_weight: float = 0.0):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
            self.faces, self.input_size, self.batch = faces, input_size, batch
            self.teacher, self.soft_weight = teacher, soft_weight
            self.epoch_faces = epoch_faces or len(faces)
            if epoch_faces:
                self.sampling = mixture_weights(faces.labels, faces.datasets, max_dataset_share,
                                                fake_share)
            elif balance == "dataset":
                self.sampling = dataset_balanced_weights(faces.datasets)
            else:
                self.sampling = None
            self.sbi_fraction, self.augmentation = sbi_fraction, augmentation
            self.class_weight, self.seed = class_weight, seed
            self.epoch = epoch
            self._order = self._shuffled()

        def _shuffled(self) -> np.ndarray:
            rng = np.random.default_rng([self.seed, self.epoch])
            if self.sampling is None:
                return rng.permutation(len(self.faces))
            return rng.choice(len(self.faces), size=self.epoch_faces, p=self.sampling)

        def __len__(self) -> int:
            return steps_per_epoch(self.epoch_faces, self.batch)

        def __getitem__(self, i):
            chosen = self._order[i * self.batch:(i + 1) * self.batch]
            rng = np.random.default_rng([self.seed, self.epoch, i])
            x, y, x_teacher = make_batch(
                self.faces, chosen, self.input_size, rng, sbi_fraction=self.sbi_fraction,
                augmentation=self.augmentation,
                teacher_size=self.teacher.input_size if self.teacher else None)
            target = y if self.teacher is None else self.teacher.targets(y, x_teacher)
            if self.faces.soft is not None:
                # A self-blended face is not the face the teacher scored: its label stands.
                natural = y == self.faces.labels[chosen]
                mixed = self.soft_weight * self.faces.soft[chosen] + (1 - self.soft_weight) * y
                target = np.where(natural, mixed, y).astype(np.float32)
            if self.class_weight is None:
                return x, target
            # Weighted by the face's own label: the teacher softens targets, not class balance.
            weights = np.where(y > 0.5, self.class_weight[1], self.class_weight[0])
            weights = weights.astype(np.float32)
            if isinstance(target, dict):      # the teacher's features are matched unweighted
                weights = {name: (weights if name != FEATURE_OUTPUT else np.ones_like(weights))
                           for name in target}
            return x, target, weights

        def on_epoch_end(self):
            self.epoch += 1
            self._order = self._shuffled()

    return FaceBatches


# --- validation ------------------------------------------------------------------------------

def video_means(scores: np.ndarray, videos: np.ndarray) -> tuple[list[str], np.ndarray]:
    order = sorted(set(videos.tolist()))
    return order, np.array([float(np.mean(scores[videos == v])) for v in order])


def validation_metrics(face_scores: np.ndarray, faces: FaceSet) -> dict:
    """Face AUC and video-level AUC, log loss and accuracy (at 0.5) of raw P(fake)."""
    from sklearn.metrics import log_loss, roc_auc_score

    ids, video_scores = video_means(face_scores, faces.videos)
    video_labels = np.array([faces.video_labels[v] for v in ids])

    def auc(labels, scores) -> float:
        return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else math.nan

    return {
        "face_auc": auc(faces.labels, face_scores),
        "video_auc": auc(video_labels, video_scores),
        "video_log_loss": float(log_loss(video_labels, np.clip(video_scores, *LOG_LOSS_CLIP),
                                         labels=[0, 1])),
        "video_accuracy": float(np.mean((video_scores >= 0.5) == (video_labels == 1))),
    }


def dataset_aucs(face_scores: np.ndarray, faces: FaceSet) -> dict[str, float | None]:
    """Video-level AUC per dataset (None where a dataset has one class only)."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for name in sorted(set(faces.datasets.tolist())):
        of = faces.datasets == name
        ids, scores = video_means(face_scores[of], faces.videos[of])
        labels = [faces.video_labels[v] for v in ids]
        out[name or "?"] = (float(roc_auc_score(labels, scores)) if len(set(labels)) == 2
                            else None)
    return out


def progress_line(epochs: int, epochs_done: int, batches: int, steps: int, faces_per_s: float,
                  epoch_seconds: float, run_seconds: float, max_minutes: float | None,
                  logs: dict | None) -> str:
    """One line for a log: where the run is, how fast, and how long until it stops (the end of
    its epochs or of its time budget, whichever comes first)."""
    per_step = epoch_seconds / max(batches, 1)
    left = (steps - batches) * per_step + (epochs - epochs_done - 1) * steps * per_step
    if max_minutes is not None:
        left = min(left, max(0.0, max_minutes * 60.0 - run_seconds))
    loss = float((logs or {}).get("loss", math.nan))
    return (f"epoch {epochs_done + 1}/{epochs} step {batches}/{steps}: loss {loss:.4f}, "
            f"{faces_per_s:.1f} faces/s, {left / 60.0:.1f} min left")


def is_better(candidate: dict, best: dict | None) -> bool:
    """Higher video AUC wins; equal AUC (or none, with one class) goes to the lower log loss."""
    if best is None:
        return True
    auc, best_auc = candidate["video_auc"], best["video_auc"]
    auc = -1.0 if math.isnan(auc) else auc
    best_auc = -1.0 if math.isnan(best_auc) else best_auc
    if not math.isclose(auc, best_auc, abs_tol=1e-9):
        return auc > best_auc
    return candidate["video_log_loss"] < best["video_log_loss"]


def predict_faces(model, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    """P(fake) per face; inputs stay uint8 in memory and become float32 one batch at a time."""
    out = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch].astype(np.float32)
        out.append(np.asarray(model.predict_on_batch(chunk), dtype=np.float64).reshape(-1))
    return np.concatenate(out) if out else np.zeros((0,))


# --- the run ---------------------------------------------------------------------------------

def _set_policy(mixed_bf16: bool) -> None:
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed_bf16 else "float32")


def _build(config: TrainConfig, weights: str | None, *, framed: bool = False):
    """The classifier trained (on faces already at its framing), or with `framed` the one
    stored: the same weights behind a first layer that cuts the pipeline's crop to it."""
    from ..models.backbones import build_classifier

    return build_classifier(config.backbone, weights=weights, depth=config.depth,
                            input_size=config.input_size, dropout=config.dropout,
                            framing=config.framing if framed else 1.0)


def _compiled_model(config: TrainConfig, teacher, steps: int):
    """The model to fit: the classifier, or with a feature weight the classifier with the
    teacher-features output (its loss scaled by the feature size, since the mean squared error
    of unit vectors is their squared distance divided by it)."""
    import keras

    from ..models.backbones import HEAD_LAYER

    classifier = _build(config, config.weights)
    if config.init:
        _start_from(classifier, config.init)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate(config, steps))
    metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    if teacher is None or not teacher.feature_weight:
        classifier.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=metrics)
        return classifier
    model = with_feature_output(classifier, teacher.feature_size)
    model.compile(optimizer=optimizer,
                  loss={HEAD_LAYER: "binary_crossentropy", FEATURE_OUTPUT: "mean_squared_error"},
                  loss_weights={HEAD_LAYER: 1.0,
                                FEATURE_OUTPUT: teacher.feature_weight * teacher.feature_size},
                  metrics={HEAD_LAYER: metrics})
    return model


def _start_from(classifier, path: str) -> None:
    """Copy a trained model's weights (checked against its card, loaded with safe_mode) into
    the freshly built classifier: a further fine-tune of a shipped model on other data, or a
    shallower cut of the same family taking every layer it shares with the deeper one (its head
    fresh, since the features it pools are others)."""
    from ..models.backbones import HEAD_LAYER
    from ..models.model_store import load_checked_model

    source, card = load_checked_model(path)
    mine, theirs = classifier.get_weights(), source.get_weights()
    if len(mine) == len(theirs) and all(a.shape == b.shape for a, b in zip(mine, theirs)):
        classifier.set_weights(theirs)
        return
    source_layers = _layers_by_build_key(source)
    pairs = []
    for key, layer in _layers_by_build_key(classifier).items():
        if layer.name == HEAD_LAYER or not layer.weights:
            continue
        match = source_layers.get(key)
        if match is None or type(match) is not type(layer) or [
                w.shape for w in match.weights] != [w.shape for w in layer.weights]:
            raise ValueError(f"--init {card.name} is a different architecture "
                             f"({card.backbone}, {card.depth}, {card.input_size} px): no layer "
                             f"like {layer.name!r} of {classifier.name}")
        pairs.append((layer, match))
    for layer, match in pairs:
        layer.set_weights(match.get_weights())


def _layers_by_build_key(model) -> dict:
    """Each layer under a key that is the same in every build of one keras.applications family:
    its own name where the family names it, else (its class's auto name, its place among the
    layers so named), since auto names carry a process-wide counter (conv2d_7 in one build may
    be conv2d_211 in the next) but keep the order in which the family builds its layers. A
    shallower cut is built as a prefix of that order, so its keys are a subset of a deeper one's."""
    from keras.src.utils.naming import to_snake_case  # how keras names a layer left unnamed

    auto = re.compile(r"^(?P<base>[a-z0-9_]+?)(?:_(?P<n>\d+))?$")
    keyed, numbered = {}, {}
    for layer in model.layers:
        base = to_snake_case(type(layer).__name__)
        found = auto.match(layer.name)
        if found and found["base"] == base:
            numbered.setdefault(base, []).append((int(found["n"] or 0), layer))
        else:
            keyed[layer.name] = layer
    for base, layers in numbered.items():
        for place, (_, layer) in enumerate(sorted(layers, key=lambda pair: pair[0])):
            keyed[(base, place)] = layer
    return keyed


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """A float for a constant rate; for cosine, a schedule over all planned steps, so the rate
    is small by the last epochs and the best-epoch choice is not a coin toss between jumps."""
    if config.lr_schedule == "constant":
        return config.lr
    import keras

    return keras.optimizers.schedules.CosineDecay(
        config.lr, decay_steps=max(1, config.epochs * steps_per_epoch), alpha=COSINE_FLOOR)


def _callbacks(config: TrainConfig, state: dict, run_dir: Path, val: FaceSet, val_inputs,
               started: float, progress: bool, steps: int):
    import keras
    from tqdm import tqdm

    class EpochEnd(keras.callbacks.Callback):
        """Validation, best-epoch bookkeeping, early stopping, checkpoint, wall-time budget."""

        def __init__(self):
            super().__init__()
            self.bar = None
            self.out_of_time = False
            self.epoch_started = self.last_line = time.monotonic()
            self.batches = 0

        def _over_budget(self) -> bool:
            return (config.max_minutes is not None
                    and time.monotonic() - started > config.max_minutes * 60.0)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = self.last_line = time.monotonic()
            self.batches = 0
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                            disable=not progress, leave=False)

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            now = time.monotonic()
            elapsed = max(now - self.epoch_started, 1e-6)
            faces_per_s = self.batches * config.batch / elapsed
            if progress:
                self.bar.update(1)
                if logs:
                    self.bar.set_postfix(loss=f"{float(logs.get('loss', math.nan)):.4f}",
                                         faces_s=f"{faces_per_s:.1f}")
            elif now - self.last_line >= PROGRESS_EVERY_S:
                self.last_line = now
                print(progress_line(self.params.get("epochs", config.epochs), state["epoch"],
                                    self.batches, steps, faces_per_s, elapsed, now - started,
                                    config.max_minutes, logs), flush=True)
            if self._over_budget():
                # Keras ends the epoch here; it is still validated and checkpointed below.
                self.out_of_time = True
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if self.bar is not None:
                self.bar.close()
            classifier = classifier_of(self.model)
            scores = predict_faces(classifier, val_inputs)
            metrics = validation_metrics(scores, val)
            by_dataset = dataset_aucs(scores, val)
            logs = logs if logs is not None else {}
            logs.update({f"val_{k}": v for k, v in metrics.items()})
            entry = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
                     "val_video_auc_by_dataset": by_dataset, "partial": self.out_of_time}
            state["history"].append(entry)
            if config.select == "last" or is_better(metrics, state["best"]):
                state["best"], state["best_epoch"], state["wait"] = metrics, epoch + 1, 0
                with atomic.atomic_path(run_dir / "best.weights.h5", suffix=".weights.h5") as tmp:
                    classifier.save_weights(tmp, overwrite=True)
            else:
                state["wait"] += 1
            state["epoch"] = epoch + 1
            state["seconds"] = state["seconds_before"] + time.monotonic() - started
            with atomic.atomic_path(run_dir / "last.keras") as tmp:
                self.model.save(tmp)
            atomic.write_text(run_dir / "state.json", json.dumps(state, indent=2))
            print(f"epoch {epoch + 1}: loss {logs.get('loss', math.nan):.4f} "
                  f"val face AUC {metrics['face_auc']:.4f} video AUC {metrics['video_auc']:.4f} "
                  f"video log loss {metrics['video_log_loss']:.4f}"
                  + (" (best)" if state["best_epoch"] == epoch + 1 else "")
                  + "; by dataset " + ", ".join(f"{k} {v:.3f}" for k, v in by_dataset.items()
                                                if v is not None), flush=True)
            if state["wait"] >= config.patience and config.select == "val_auc":
                print(f"early stop: no better video AUC for {config.patience} epochs", flush=True)
                state["stopped"] = "early stopping"
                self.model.stop_training = True
            elif self.out_of_time or self._over_budget():
                print(f"stopping: the {config.max_minutes:g} minute budget is spent", flush=True)
                state["stopped"] = "time budget"
                self.model.stop_training = True

    return [EpochEnd()]


def machine_description() -> dict:
    """Where the run trained: its wall time means little without it."""
    import keras

    backend, accelerator = keras.backend.backend(), "cpu"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            accelerator = torch.cuda.get_device_name(0)
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            accelerator = device.device_kind
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            accelerator = tf.config.experimental.get_device_details(gpus[0]).get(
                "device_name", gpus[0].name)
    return {"keras_backend": backend, "accelerator": accelerator, "cpus": os.cpu_count()}


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True):
    """Train (or resume) and write config.out with its card; returns the ModelCard."""
    from ..models.backbones import get_spec, imagenet_weights_path

    started = time.monotonic()
    spec = get_spec(config.backbone)
    if config.weights == "imagenet":
        imagenet_weights_path(config.backbone)   # offline: fail now, with the clear message
    input_size = int(config.input_size or spec.input_size)
    config = dataclasses.replace(config, input_size=input_size)
    run_dir = Path(config.run_dir)
    state_path = run_dir / "state.json"
    if state_path.is_file() and not resume:
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it "
                         "or choose another --run-dir")
    if resume and not state_path.is_file():
        raise ValueError(f"nothing to resume in {run_dir} (no state.json)")

    rows = read_face_indexes(config.face_indexes)
    train_rows, val_rows, split_how = split_rows(rows, config.val_fraction)
    if config.fakes == "sbi":
        train_rows = [r for r in train_rows if int(r["label"]) == 0]
    cached = _cached_teacher(config, train_rows) if config.teacher_cache else None
    if cached is not None:
        train_rows = cached["rows"]
    work_side = max(input_size, int(math.ceil(input_size / MIN_ZOOM)))
    # Streamed from the files when there are more faces than memory comfortably holds.
    stream = config.epoch_faces is not None or len(train_rows) > STREAM_ABOVE
    train_set = load_faces(train_rows, work_side, threads=config.workers,
                           framing=config.framing, stream=stream)
    if cached is not None:
        train_set.soft = cached["soft"]
    val_set = load_faces(val_rows, input_size, threads=config.workers, framing=config.framing)
    val_inputs = np.stack([centre_crop(im, input_size) for im in val_set.images])
    epoch_val = val_sample(val_set, config.val_faces, config.seed)
    print(f"faces: {len(train_set)} train ({len(train_set.video_labels)} videos), "
          f"{len(val_set)} val ({len(val_set.video_labels)} videos; {len(epoch_val)} checked "
          f"each epoch); split {split_how}; {describe_mixture(train_set)}", flush=True)

    import keras

    _set_policy(config.mixed_bf16)
    teacher = (load_teacher(config.teacher, config.distill_weight, config.feature_weight)
               if config.teacher else None)
    if teacher is not None:
        print(f"distilling from {teacher.name} ({teacher.input_size} px), weight "
              f"{teacher.weight:g}" + (f", its {teacher.feature_size} pooled features with "
                                       f"weight {teacher.feature_weight:g}"
                                       if teacher.feature_weight else ""), flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        state = json.loads(state_path.read_text())
        trained_framing = float(state["config"].get("framing", 1.0))
        if config.framing != trained_framing and int(state["epoch"]) < config.epochs:
            raise ValueError(f"the run was trained at framing {trained_framing:g}; another "
                             "framing can only be exported (--epochs at most the epochs run)")
        model = keras.models.load_model(run_dir / "last.keras", safe_mode=True)
        initial_epoch = int(state["epoch"])
        state["seconds_before"] = float(state.get("seconds", 0.0))
        state["stopped"] = None
        print(f"resuming {run_dir} after epoch {initial_epoch} (best so far: epoch "
              f"{state['best_epoch']}; optimizer at step {int(model.optimizer.iterations)})",
              flush=True)
    else:
        model = _compiled_model(config, teacher,
                                steps_per_epoch(config.epoch_faces or len(train_set), config.batch))
        initial_epoch = 0
        state = {"config": config.to_dict(), "epoch": 0, "best": None, "best_epoch": 0, "wait": 0,
                 "history": [], "seconds": 0.0, "seconds_before": 0.0, "stopped": None}

    # A mixture draws the classes at its fake share (none when the real fakes are left out);
    # the weights offset that and the SBI share.
    drawn_fake_share = ((0.0 if config.fakes == "sbi" else config.fake_share)
                        if config.epoch_faces else None)
    class_weight = (effective_class_weights(train_set.labels, config.sbi_fraction,
                                            drawn_fake_share)
                    if config.class_weights == "balanced" else None)
    augmentation = AUGMENT_PRESETS[config.augment] if config.augment else None
    batches = _py_dataset_class()(
        train_set, input_size, config.batch, sbi_fraction=config.sbi_fraction,
        augmentation=augmentation, class_weight=class_weight, seed=config.seed,
        epoch=initial_epoch, workers=config.workers, teacher=teacher, balance=config.balance,
        epoch_faces=config.epoch_faces, max_dataset_share=config.max_dataset_share,
        fake_share=config.fake_share, soft_weight=config.distill_weight if cached is not None else 0.0)
    already_stopped = (resume and state["wait"] >= config.patience
                       and config.select == "val_auc")
    if initial_epoch < config.epochs and not already_stopped:
        callbacks = _callbacks(config, state, run_dir, epoch_val,
                               np.stack([centre_crop(im, input_size) for im in epoch_val.images]),
                               started, progress, len(batches))
        model.fit(batches, epochs=config.epochs, initial_epoch=initial_epoch, verbose=0,
                  callbacks=callbacks)
    if state["best_epoch"] == 0:
        raise ValueError("training ended before any epoch finished; nothing to save")

    return _export(config, state, run_dir, train_set, val_set, val_inputs, class_weight,
                   augmentation, split_how, started, teacher,
                   cached["record"] if cached is not None else None)


def calibrate_on_faces(face_scores: np.ndarray, faces: FaceSet):
    """(calibration, calibrated video metrics) of raw face scores on labelled val faces: the
    threshold on the video means of face P (max balanced accuracy), the temperature on the faces
    (min log loss)."""
    from ..evaluation.evaluate import video_metrics
    from ..verdicts.calibration import calibrated, fit_calibration

    ids, video_scores = video_means(face_scores, faces.videos)
    video_labels = np.array([faces.video_labels[v] for v in ids])
    calibration = fit_calibration(video_scores, video_labels, face_scores, faces.labels)
    face_probabilities = calibrated(face_scores, calibration.threshold, calibration.temperature)
    _, video_probabilities = video_means(face_probabilities, faces.videos)
    return calibration, video_metrics(video_labels, video_probabilities)


def _export(config, state, run_dir, train_set, val_set, val_inputs, class_weight, augmentation,
            split_how, started, teacher=None, cached_teacher=None):
    """The best epoch's weights in a plain float32 model (no optimizer, no bf16 policy), calibrated
    on the validation split, saved with its card."""
    from ..models.model_store import save_model

    _set_policy(False)
    trained = _build(config, None)
    trained.load_weights(run_dir / "best.weights.h5")
    face_scores = predict_faces(trained, val_inputs)
    model = _build(config, None, framed=True)
    model.set_weights(trained.get_weights())
    calibration, video = calibrate_on_faces(face_scores, val_set)
    raw = validation_metrics(face_scores, val_set)
    metrics = {
        "val_face_auc": raw["face_auc"],
        # The selection criterion itself: calibration is monotonic, so only clipping could move it.
        "val_video_auc": raw["video_auc"],
        "val_video_log_loss": video["log_loss"],
        "val_video_accuracy": video["accuracy"],
    }
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    wall = state["seconds_before"] + time.monotonic() - started
    started_from = _init_record(config.init, config)
    training = {
        **({"command": config.command} if config.command else {}),
        "backbone": config.backbone,
        "depth": config.depth,
        "input_size": config.input_size,
        "framing": {
            "share_kept": config.framing,
            "model_input": int(model.input_shape[1]),
            "how": ("the model's first layer keeps the central share of the pipeline's crop; "
                    "pipeline crops were cut so in training, foreign crops taken whole"
                    if config.framing < 1.0 else "the whole crop"),
        },
        # With --init, the chain's first weights (what the init model itself started from).
        "weights": config.weights or (started_from or {}).get("weights") or "none",
        "data": {
            "faces": describe_indexes(config.face_indexes),
            "split": split_how,
            "train_videos": len(train_set.video_labels),
            "train_faces": len(train_set),
            "val_videos": len(val_set.video_labels),
            "val_faces": len(val_set),
            "sbi_fraction": config.sbi_fraction,
            "extract": next((e for e in map(_extract_settings, config.face_indexes) if e), None),
            "train_by_dataset": describe_mixture(train_set),
            "val_by_dataset": describe_mixture(val_set),
            "sampling": ({"faces_per_epoch": config.epoch_faces,
                          "max_dataset_share": config.max_dataset_share,
                          "fake_share": config.fake_share}
                         if config.epoch_faces else None),
        },
        "recipe": {
            "optimizer": "adam",
            "loss": "binary_crossentropy",
            "lr": config.lr,
            "lr_schedule": config.lr_schedule,
            "batch": config.batch,
            "epochs_max": config.epochs,
            "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"],
            "patience": config.patience,
            "stopped": state.get("stopped") or "epochs done",
            "augmentation": ({"preset": config.augment, **augmentation.to_dict()}
                             if augmentation else None),
            "class_weights": ({str(k): round(v, 4) for k, v in class_weight.items()}
                              if class_weight else None),
            "mixed_precision": "mixed_bfloat16" if config.mixed_bf16 else "float32",
            "dropout": config.dropout,
            "crop_jitter": {"min_zoom": MIN_ZOOM, "max_shift": MAX_SHIFT},
            "seed": config.seed,
            "epoch_chosen_by": ("the best val video AUC" if config.select == "val_auc"
                                else "none: the last epoch (val only reported)"),
            "sampling": (f"{1 - config.fake_share:.0%} real, {config.fake_share:.0%} real fakes "
                         "(before the SBI share of the reals); within each, datasets by the "
                         f"square root of their faces, none above {config.max_dataset_share:.0%}"
                         if config.epoch_faces else
                         "tempered over datasets (1/sqrt of each dataset's faces)"
                         if config.balance == "dataset" else "uniform over faces"),
            "fakes": ("SBI fakes only (the real fakes left out)" if config.fakes == "sbi"
                      else "real fakes and SBI fakes"),
        },
        "calibration": {"threshold_on": "val video mean of face P(fake), max balanced accuracy",
                        "temperature_on": "val faces, min log loss"},
        "distillation": (teacher.describe() if teacher is not None else cached_teacher),
        "started_from": started_from,
        "wall_seconds": round(wall, 1),
        "machine": machine_description(),
    }
    card = save_model(model, config.out, threshold=calibration.threshold,
                      temperature=calibration.temperature, metrics=metrics, training=training)
    print(f"wrote {config.out}: best epoch {state['best_epoch']} of {state['epoch']}, "
          f"val video AUC {metrics['val_video_auc']}, threshold {calibration.threshold:.4f}, "
          f"temperature {calibration.temperature:.3f}", flush=True)
    return card


def _cached_teacher(config: TrainConfig, rows: list[dict]) -> dict:
    """The train rows the cache scored, their cached P(fake), and the card's record of it."""
    from ..models.model_store import file_sha256

    header, scores = read_teacher_cache(config.teacher_cache)
    if abs(float(header.get("framing", 1.0)) - config.framing) > 1e-9:
        raise ValueError(f"the teacher cache saw faces at framing {header.get('framing')}; "
                         f"this run trains at {config.framing:g}")
    kept = [r for r in rows if r["file"] in scores]
    if not kept:
        raise ValueError(f"the teacher cache {config.teacher_cache} holds none of the train faces")
    print(f"teacher cache: {header['teacher']}'s P(fake) for {len(kept)} of {len(rows)} train "
          f"faces; training on those", flush=True)
    record = {"teacher": header["teacher"], "teacher_sha256": header["teacher_sha256"],
              "teacher_input_size": header.get("teacher_input_size"),
              "weight": config.distill_weight,
              "cache": str(config.teacher_cache),
              "cache_sha256": file_sha256(config.teacher_cache),
              "faces_with_teacher_p": len(kept), "train_faces": len(rows),
              "target": "weight * the teacher's calibrated P(fake) of the clean face (computed "
                        "once, python -m core teacher-cache) + (1 - weight) * label; "
                        "self-blended fakes keep their label"}
    return {"rows": kept, "soft": np.array([scores[r["file"]] for r in kept], np.float32),
            "record": record}


def _init_record(path: str | None, config: TrainConfig) -> dict | None:
    """The model a --init run started from, what of it was taken, the weights its own chain
    began with, and how it was trained (its card's record, itself holding the model it started
    from): a fine-tune's card says the whole chain."""
    if not path:
        return None
    from ..models.model_store import ModelCard

    card = ModelCard.load(Path(path).with_suffix(".json"))
    taken = ("every weight" if card.depth == config.depth else
             f"every layer up to {config.depth} (a shallower cut of its {card.depth}); "
             "the head started fresh")
    return {"model": card.name, "sha256": card.sha256, "taken": taken,
            "weights": card.training.get("weights"), "training": card.training}


def _extract_settings(faces_dir: str) -> dict | None:
    """How the faces were cut (the extract.json `python -m core extract` writes), for the card."""
    path = Path(faces_dir) / "extract.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def resume_config(run_dir: str | Path, **overrides) -> TrainConfig:
    """The config a run was started with, with the given fields (e.g. epochs, max_minutes)
    replaced; the data, model and recipe stay as they were, so the checkpoint fits."""
    state_path = Path(run_dir) / "state.json"
    if not state_path.is_file():
        raise ValueError(f"nothing to resume in {run_dir} (no state.json)")
    saved = json.loads(state_path.read_text())["config"]
    allowed = {"epochs", "max_minutes", "patience", "workers", "out", "framing"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))} when resuming")
    saved.update({k: v for k, v in overrides.items() if v is not None})
    # A time budget belongs to one invocation, not to the run.
    saved["max_minutes"] = overrides.get("max_minutes")
    return TrainConfig(**saved)
