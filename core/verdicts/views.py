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


def predict_views(classifier, crops: np.ndarray, views: tuple[str, ...]) -> np.ndarray:
    """Raw P(fake) of each face (columns) in each view (rows: the crops as they are, then each
    of `views`), from one predict call."""
    return classifier.predict(all_views(crops, views)).reshape(1 + len(views), len(crops))


def disagreement(label: str, view_probabilities: dict[str, float], band: float) -> str | None:
    """Why a REAL or FAKE verdict is UNCERTAIN: the sentence naming what each view says, when
    any view's own verdict at this band differs from `label`; else None."""
    from .verdict import label_for

    view_labels = {v: label_for(p, band) for v, p in view_probabilities.items()}
    if all(lab == label for lab in view_labels.values()):
        return None
    return "the views of the faces disagree: " + "; ".join(
        f"{VIEW_TEXT[v]} say {view_labels[v]} ({p:.2f})" for v, p in view_probabilities.items())
