"""What travels between the app and its workers: a request (the upload's bytes, the session's
settings, the models chosen; or face crops for Grad-CAM) and a reply (the analysis as its JSON
report, the gallery's images and the annotated copy as raw bytes; heatmaps; or a one-line
error). Headers are JSON and payloads plain
bytes, so nothing a worker sends can run code in the server (no pickle)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import numpy as np

from core.errors import DetectorError, VideoError, first_line
from core.results import AnalysisResult

from .uploads import StoredAnalysis

Blobs = list[bytes]


class WorkerError(DetectorError):
    """The worker could not finish the analysis: it died, stopped answering or failed."""


class WorkerLostError(WorkerError):
    pass


class WorkerTimeoutError(WorkerError):
    pass


@dataclass(frozen=True)
class AnalysisRequest:
    """An upload to analyse (`data`), or, with `path`, a file the worker reads where it is (an
    evaluation over the server's data root): then the reply is the report alone, no images."""
    upload_name: str
    data: bytes = field(repr=False)
    content_hash: str
    settings: dict                 # AnalysisSettings.to_dict(): turned back once, by the worker
    models: tuple[str, ...]
    ensemble: str = "fitted"
    path: str | None = None

    def header(self) -> dict:
        return {"kind": "analyze", "upload_name": self.upload_name,
                "content_hash": self.content_hash, "settings": self.settings,
                "models": list(self.models), "ensemble": self.ensemble, "path": self.path}

    def blobs(self) -> Blobs:
        return [] if self.path else [self.data]

    @classmethod
    def from_message(cls, header: dict, blobs: Blobs) -> "AnalysisRequest":
        return cls(header["upload_name"], blobs[0] if blobs else b"", header["content_hash"],
                   header["settings"], tuple(header["models"]), header["ensemble"],
                   header.get("path"))


def report_reply(result: AnalysisResult) -> tuple[dict, Blobs]:
    return {"kind": "report", "report": result.to_dict()}, []


def result_from_reply(header: dict, blobs: Blobs) -> AnalysisResult:
    _raise_if_error(header)
    return AnalysisResult.from_dict(header["report"])


_DTYPES = {"uint8": np.uint8, "float32": np.float32}


def _array(array: np.ndarray, blobs: Blobs, dtype: str = "uint8") -> dict:
    array = np.ascontiguousarray(array, dtype=_DTYPES[dtype])
    blobs.append(array.tobytes())
    return {"shape": list(array.shape), "blob": len(blobs) - 1, "dtype": dtype}


def _from_array(entry: dict, blobs: Blobs) -> np.ndarray:
    dtype = _DTYPES[entry.get("dtype", "uint8")]      # an allow-list: nothing else is read
    return np.frombuffer(blobs[entry["blob"]], dtype=dtype).reshape(entry["shape"]).copy()


def _optional(data: bytes | None, blobs: Blobs) -> int | None:
    if data is None:
        return None
    blobs.append(data)
    return len(blobs) - 1


def encode_analysis(entry: StoredAnalysis) -> tuple[dict, Blobs]:
    blobs: Blobs = []
    result = entry.result
    header = {
        "kind": "result", "key": entry.key, "upload_name": entry.upload_name,
        "content_hash": entry.content_hash, "report": result.to_dict(),
        "stills": [[index, _array(image, blobs)] for index, image in result.stills.items()],
        "crops": [[frame, person, _array(crop, blobs)]
                  for (frame, person), crop in result.crops.items()],
        "annotated_mp4": _optional(entry.annotated_mp4, blobs),
        "annotated_jpeg": _optional(entry.annotated_jpeg, blobs),
    }
    return header, blobs


def decode_analysis(header: dict, blobs: Blobs) -> StoredAnalysis:
    result = AnalysisResult.from_dict(header["report"])
    result.stills = {int(index): _from_array(image, blobs) for index, image in header["stills"]}
    result.crops = {(int(frame), int(person)): _from_array(crop, blobs)
                    for frame, person, crop in header["crops"]}

    def optional(index):
        return None if index is None else blobs[index]

    return StoredAnalysis(key=header["key"], upload_name=header["upload_name"],
                          content_hash=header["content_hash"], result=result,
                          annotated_mp4=optional(header["annotated_mp4"]),
                          annotated_jpeg=optional(header["annotated_jpeg"]))


def gradcam_request(model: str, crops: list[np.ndarray]) -> tuple[dict, Blobs]:
    """Grad-CAM heatmaps of `model` for face crops (core.models.gradcam), computed where the
    models are."""
    blobs: Blobs = []
    return {"kind": "gradcam", "model": model,
            "crops": [_array(crop, blobs) for crop in crops]}, blobs


def gradcam_crops(header: dict, blobs: Blobs) -> list[np.ndarray]:
    return [_from_array(crop, blobs) for crop in header["crops"]]


def heatmaps_reply(heatmaps: list[np.ndarray]) -> tuple[dict, Blobs]:
    blobs: Blobs = []
    return {"kind": "heatmaps",
            "heatmaps": [_array(h, blobs, "float32") for h in heatmaps]}, blobs


def heatmaps_from_reply(header: dict, blobs: Blobs) -> list[np.ndarray]:
    _raise_if_error(header)
    return [_from_array(h, blobs) for h in header["heatmaps"]]


def _raise_if_error(header: dict) -> None:
    if header["kind"] == "error":
        raise (VideoError if header["error"] == "input" else DetectorError)(header["message"])


def live_frame_request(settings: dict, models: tuple[str, ...], ensemble: str,
                       frame: np.ndarray) -> tuple[dict, Blobs]:
    """One camera frame to score (core.live.FrameScorer) with the session's settings and models;
    no models: faces only."""
    blobs: Blobs = []
    return {"kind": "live", "settings": settings, "models": list(models), "ensemble": ensemble,
            "frame": _array(frame, blobs)}, blobs


def live_frame(header: dict, blobs: Blobs) -> np.ndarray:
    return _from_array(header["frame"], blobs)


def live_faces_reply(scored: tuple) -> tuple[dict, Blobs]:
    faces, scores, view_scores = scored
    return {"kind": "live_faces",
            "faces": [[*map(float, f.box), f.label, float(f.score)] for f in faces],
            "scores": [float(p) for p in scores],
            "view_scores": [[float(v) for v in views] for views in view_scores]}, []


def live_faces_from_reply(header: dict, blobs: Blobs) -> tuple:
    """What FrameScorer returns: (boxes, each face's ensemble score, its score in each view)."""
    from core.media.annotate import FaceBox

    _raise_if_error(header)
    faces = [FaceBox(tuple(face[:4]), face[4], face[5], 0) for face in header["faces"]]
    return faces, list(header["scores"]), [tuple(v) for v in header["view_scores"]]


def error_reply(error: BaseException) -> dict:
    """The one line a person reads for a failed analysis, and whether the input was at fault."""
    if isinstance(error, DetectorError):
        kind, message = ("input" if isinstance(error, VideoError) else "detector"), str(error)
    else:
        kind = "internal"
        said = f": {first_line(error)[:300]}" if str(error).strip() else ""
        message = f"the analysis failed ({type(error).__name__}{said})"
    return {"kind": "error", "error": kind, "message": message}


def entry_from_reply(header: dict, blobs: Blobs) -> StoredAnalysis:
    """The analysis a reply carries; an error reply raises what the analysis raised."""
    _raise_if_error(header)
    return decode_analysis(header, blobs)


def send(connection: Connection, header: dict, blobs: Blobs = ()) -> None:
    connection.send_bytes(json.dumps({**header, "blobs": len(blobs)}).encode())
    for blob in blobs:
        connection.send_bytes(blob)


def receive(connection: Connection) -> tuple[dict, Blobs]:
    header = json.loads(connection.recv_bytes())
    return header, [connection.recv_bytes() for _ in range(header.pop("blobs"))]
