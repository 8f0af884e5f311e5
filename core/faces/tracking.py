"""Linking face detections across sampled frames into persons.

Frames are sampled sparsely (e.g. 32 over a whole clip), so a face may move a lot between two
samples. Linking is greedy: first by box overlap (IoU) with where each track was last seen or is
predicted to be (constant velocity from its last two detections), then, for what is left, by
centre distance relative to the face size, which catches fast motion where boxes no longer
overlap. Each track takes at most one detection per frame.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from core.faces.detector import Detection


@dataclass
class Track:
    id: int
    detections: dict[int, Detection] = field(default_factory=dict)   # frame_index -> Detection

    @property
    def frames(self) -> list[int]:
        return sorted(self.detections)

    @property
    def first_frame(self) -> int:
        return min(self.detections)

    @property
    def last_frame(self) -> int:
        return max(self.detections)

    def default_max_gap(self) -> int:
        """Half the median gap between detections: how long an end box is held past the ends."""
        frames = self.frames
        if len(frames) < 2:
            return 0
        return int(np.median(np.diff(frames)) // 2)

    def box_at(self, frame_index: int, max_gap: int | None = None) -> tuple | None:
        """The box at any frame: exact where detected, linearly interpolated between the nearest
        detections before and after, the end box held for up to `max_gap` frames beyond the
        first / last detection (default: `default_max_gap()`), else None."""
        if not self.detections:
            return None
        if frame_index in self.detections:
            return tuple(float(v) for v in self.detections[frame_index].box)
        frames = self.frames
        if max_gap is None:
            max_gap = self.default_max_gap()
        if frame_index < frames[0]:
            if frames[0] - frame_index <= max_gap:
                return tuple(float(v) for v in self.detections[frames[0]].box)
            return None
        if frame_index > frames[-1]:
            if frame_index - frames[-1] <= max_gap:
                return tuple(float(v) for v in self.detections[frames[-1]].box)
            return None
        after = bisect.bisect_right(frames, frame_index)
        before_frame, after_frame = frames[after - 1], frames[after]
        weight = (frame_index - before_frame) / (after_frame - before_frame)
        start = np.asarray(self.detections[before_frame].box, dtype=float)
        end = np.asarray(self.detections[after_frame].box, dtype=float)
        return tuple(float(v) for v in start + weight * (end - start))

    def _predicted_box(self, frame_index: int) -> np.ndarray:
        frames = self.frames
        last = np.asarray(self.detections[frames[-1]].box, dtype=float)
        if len(frames) < 2:
            return last
        previous = np.asarray(self.detections[frames[-2]].box, dtype=float)
        velocity = (last - previous) / (frames[-1] - frames[-2])
        return last + velocity * (frame_index - frames[-1])


def iou(a, b) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _center_distance(a, b) -> float:
    """Distance between box centres in units of the larger box's mean side."""
    ca = ((a[0] + a[2]) / 2.0, (a[1] + a[3]) / 2.0)
    cb = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)
    size = max((a[2] - a[0] + a[3] - a[1]) / 2.0, (b[2] - b[0] + b[3] - b[1]) / 2.0, 1e-9)
    return float(np.hypot(ca[0] - cb[0], ca[1] - cb[1]) / size)


def _size_ratio(a, b) -> float:
    side_a = max((a[2] - a[0] + a[3] - a[1]) / 2.0, 1e-9)
    side_b = max((b[2] - b[0] + b[3] - b[1]) / 2.0, 1e-9)
    return max(side_a, side_b) / min(side_a, side_b)


def link_tracks(frames: list[tuple[int, list[Detection]]], iou_threshold: float = 0.3,
                min_hits: int = 2, *, max_center_distance: float = 1.5,
                max_size_ratio: float = 1.6) -> list[Track]:
    """Persons from per-frame detections.

    frames: (frame_index, detections) per sampled frame, in any order.
    iou_threshold: least IoU with a track's last or predicted box to link by overlap.
    min_hits: tracks with fewer detections are dropped (strays seen once), unless only one frame
        was sampled, where every detection is a person.
    max_center_distance: fallback link when boxes do not overlap enough: centres at most this
        many face sizes apart (a face's size is the mean of its box's width and height) ...
    max_size_ratio: ... and face sizes within this ratio of each other.

    Returns tracks renumbered 0..k-1 by first appearance, ties broken left to right.
    """
    ordered = sorted(frames, key=lambda item: item[0])
    tracks: list[Track] = []
    for frame_index, detections in ordered:
        unmatched_tracks = [t for t in tracks if frame_index not in t.detections]
        unmatched_detections = list(range(len(detections)))
        references = {id(t): (np.asarray(t.detections[t.last_frame].box, dtype=float),
                              t._predicted_box(frame_index)) for t in unmatched_tracks}

        pairs = []
        for track in unmatched_tracks:
            last, predicted = references[id(track)]
            for d, detection in enumerate(detections):
                overlap = max(iou(last, detection.box), iou(predicted, detection.box))
                if overlap >= iou_threshold:
                    pairs.append((-overlap, track.last_frame, d, track))
        _assign(sorted(pairs, key=lambda p: (p[0], -p[1], p[2])), frame_index, detections,
                unmatched_tracks, unmatched_detections)

        pairs = []
        for track in unmatched_tracks:
            last, predicted = references[id(track)]
            for d in unmatched_detections:
                box = detections[d].box
                if _size_ratio(last, box) > max_size_ratio:
                    continue
                distance = min(_center_distance(last, box), _center_distance(predicted, box))
                if distance <= max_center_distance:
                    pairs.append((distance, track.last_frame, d, track))
        _assign(sorted(pairs, key=lambda p: (p[0], -p[1], p[2])), frame_index, detections,
                unmatched_tracks, unmatched_detections)

        for d in unmatched_detections:
            tracks.append(Track(id=len(tracks), detections={frame_index: detections[d]}))

    if len(ordered) > 1:
        tracks = [t for t in tracks if len(t.detections) >= min_hits]
    tracks.sort(key=lambda t: (t.first_frame, t.detections[t.first_frame].box[0]))
    for new_id, track in enumerate(tracks):
        track.id = new_id
    return tracks


def _assign(pairs, frame_index, detections, unmatched_tracks, unmatched_detections):
    """Greedy one-to-one assignment, best pair first; updates both unmatched lists in place."""
    for _, _, d, track in pairs:
        if d not in unmatched_detections or frame_index in track.detections:
            continue
        track.detections[frame_index] = detections[d]
        unmatched_detections.remove(d)
        unmatched_tracks[:] = [t for t in unmatched_tracks if t is not track]
