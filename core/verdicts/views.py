"""Other views of each face crop, scored beside the crop itself: its mirror image and a JPEG
re-encode. A face's P(fake) is the mean over its views; where the views lead to different
verdicts, the verdict is UNCERTAIN and says so. A manipulation shows in a face and in its mirror
alike and survives a mild re-encode; a verdict that one of them turns around rests on the
particular pixels (an encoder's blocks, which way the light falls), not on the face."""
from __future__ import annotations

import cv2
import numpy as np

ORIGINAL = "original"
VIEW_QUALITY = 60            # the re-encoded view's JPEG quality: a messenger's, not a ruin
VIEW_NAMES = ("flip", "jpeg")
VIEW_TEXT = {ORIGINAL: "the faces as found", "flip": "their mirror images",
             "jpeg": "the faces re-encoded (JPEG quality 60)"}


def jpeg_recompress(image: np.ndarray, quality: int) -> np.ndarray:
    """An H x W x 3 uint8 RGB image through JPEG at this quality and back."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a face crop")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def parse_views(text: str) -> tuple[str, ...]:
    """"flip,jpeg" -> ("flip", "jpeg"); "" or "none" -> (): the crop alone."""
    names = tuple(v.strip() for v in str(text).split(",") if v.strip() and v.strip() != "none")
    unknown = [v for v in names if v not in VIEW_NAMES]
    if unknown:
        raise ValueError(f"unknown view {', '.join(unknown)}; choose from {', '.join(VIEW_NAMES)}")
    return names


def view_batch(crops: np.ndarray, view: str) -> np.ndarray:
    """N x S x S x 3 uint8 crops seen another way."""
    if view == "flip":
        return np.ascontiguousarray(crops[:, :, ::-1])
    if view == "jpeg":
        return np.stack([jpeg_recompress(c, VIEW_QUALITY) for c in crops])
    raise ValueError(f"unknown view {view!r}")


def all_views(crops: np.ndarray, views: tuple[str, ...]) -> np.ndarray:
    """The crops followed by each view of them: (1 + len(views)) * N crops, one predict call."""
    if not views:
        return crops
    return np.concatenate([crops, *(view_batch(crops, v) for v in views)])


def predict_views(classifier, crops: np.ndarray, views: tuple[str, ...],
                  turns: np.ndarray | None = None) -> np.ndarray:
    """Raw P(fake) of each face (columns) in each view (rows: the crops as they are, then each
    of `views`), from one predict call. With `turns` (each face's row), a face is scored in that
    one view only and its other cells are NaN."""
    if turns is None or not views:
        return classifier.predict(all_views(crops, views)).reshape(1 + len(views), len(crops))
    turns = np.asarray(turns)
    rows = [np.flatnonzero(turns == k) for k in range(1 + len(views))]
    batch = np.concatenate([crops[faces] if view == ORIGINAL else view_batch(crops[faces], view)
                            for faces, view in zip(rows, (ORIGINAL, *views)) if len(faces)])
    scores = np.asarray(classifier.predict(batch), dtype=np.float64).reshape(-1)
    raw = np.full((1 + len(views), len(crops)), np.nan)
    start = 0
    for k, faces in enumerate(rows):
        raw[k, faces] = scores[start:start + len(faces)]
        start += len(faces)
    return raw


def view_turns(track_positions, views: tuple[str, ...]) -> np.ndarray | None:
    """Each face's one view, as a row of predict_views, when each face is seen one way: the
    views in turn along a person's faces, the face as found first (as found, mirrored,
    re-encoded, as found, ...); None where there is no other view."""
    if not views:
        return None
    return np.asarray(track_positions, dtype=int) % (1 + len(views))


def disagreement(label: str, view_probabilities: dict[str, float], band: float) -> str | None:
    """Why a REAL or FAKE verdict is UNCERTAIN: the sentence naming what each view says, when
    any view's own verdict at this band differs from `label`; else None."""
    from .verdict import label_for

    view_labels = {v: label_for(p, band) for v, p in view_probabilities.items()}
    if all(lab == label for lab in view_labels.values()):
        return None
    return "the views of the faces disagree: " + "; ".join(
        f"{VIEW_TEXT[v]} say {view_labels[v]} ({p:.2f})" for v, p in view_probabilities.items())
