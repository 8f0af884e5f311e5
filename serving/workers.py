"""What the app asks of its workers (an upload's analysis, a server file's report, Grad-CAM
heatmaps, a camera frame's faces and scores), each one exchange of a request for a reply, which every kind of worker pool (local
processes, Ray actors) implements in `_exchange`."""
from __future__ import annotations

from collections.abc import Callable

from .protocol import (AnalysisRequest, Blobs, entry_from_reply, gradcam_request,
                       heatmaps_from_reply, live_faces_from_reply, live_frame_request,
                       result_from_reply)
from .uploads import StoredAnalysis

Progress = Callable[[str, float], None]
# A fresh worker imports TensorFlow before it can answer at all: seconds on an idle machine,
# many more on a busy one. Every kind of worker is allowed this long before its first word.
STARTUP_SECONDS = 180.0


class Workers:
    def _exchange(self, header: dict, blobs: Blobs, what: str, again: str,
                  progress: Progress | None = None) -> tuple[dict, Blobs]:
        """The reply to one request from a free worker. `what` names the work and `again` what
        to do, in the one-line message of a worker that died or stopped answering meanwhile."""
        raise NotImplementedError

    def analyze(self, request: AnalysisRequest, progress: Progress | None = None
                ) -> StoredAnalysis:
        return entry_from_reply(*self._exchange(
            request.header(), request.blobs(), f"analysing {request.upload_name}",
            "upload the file again", progress))

    def report(self, request: AnalysisRequest):
        """The AnalysisResult (no images) of a file the worker reads where it is
        (request.path)."""
        return result_from_reply(*self._exchange(
            request.header(), request.blobs(), f"analysing {request.upload_name}",
            "start the evaluation again"))

    def gradcam(self, model: str, crops: list) -> list:
        """Grad-CAM heatmaps of `model` for the face crops, computed in a worker."""
        return heatmaps_from_reply(*self._exchange(
            *gradcam_request(model, crops), f"computing Grad-CAM heatmaps of {model}",
            "choose the model again"))

    def live_frame(self, settings: dict, models: tuple[str, ...], ensemble: str, frame):
        """One camera frame scored by a worker, as core.live.FrameScorer returns it."""
        return live_faces_from_reply(*self._exchange(
            *live_frame_request(settings, models, ensemble, frame), "scoring a camera frame",
            "the next frame is tried"))
