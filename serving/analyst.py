"""The worker's side of an analysis: the scan's `VideoScanner` (the detector and the models
loaded once) for the models a session chose, and the upload analysed in a temporary folder that
is gone before the reply is sent.

A request's settings cross from the app as one value, `AnalysisSettings.to_dict()`; `_turn_back`
makes them an `AnalysisSettings` again, once per request, with the `ScannerConfig` they need,
and both go down to the scanner and the pipeline unchanged."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from core.scan.scanner import ScannerConfig, VideoScanner
from core.settings import AnalysisSettings

from .protocol import (AnalysisRequest, Blobs, encode_analysis, gradcam_crops,
                       heatmaps_reply, live_faces_reply, live_frame, report_reply)
from .uploads import StoredAnalysis, Upload, analyze_upload

# Model selections kept loaded at once: the default pair and, say, Compare's all-models run.
KEPT_SELECTIONS = 2


class Analyst:
    def __init__(self, models_dir: str | None = None):
        self.models_dir = models_dir
        self._scanners: OrderedDict[ScannerConfig, VideoScanner] = OrderedDict()
        self._classifiers: dict[tuple, object] = {}   # Grad-CAM's models not in a scanner
        self._scorers: dict[tuple, object] = {}         # live frame scorers by their settings
        self._detectors: dict[AnalysisSettings, object] = {}
        self._keys: dict[ScannerConfig, tuple[int, tuple]] = {}   # config -> (zoo version, key)

    def _turn_back(self, settings: dict, models: tuple[str, ...], ensemble: str
                   ) -> tuple[AnalysisSettings, ScannerConfig]:
        """A request's settings as they crossed (AnalysisSettings.to_dict()), turned back: the
        one place a worker does so. With them, the config of the scanner the request needs: its
        models and ensemble, and the detector's part of the settings (the rest is per request,
        so a loaded scanner serves every request that differs only in those)."""
        analysis = AnalysisSettings.from_dict(settings)
        return analysis, ScannerConfig(models=",".join(models) or "default",
                                       models_dir=self.models_dir, ensemble=ensemble,
                                       settings=analysis.detector_part())

    def _zoo(self) -> Path:
        from core.models.zoo import DEFAULT_MODELS_DIR

        return Path(self.models_dir or DEFAULT_MODELS_DIR)

    def _key(self, config: ScannerConfig) -> tuple:
        """A loaded selection is reused while its models' files and the fitted ensemble are the
        ones it was loaded from: a model re-imported or retrained under the same name, or a
        refitted ensemble, is loaded afresh. The cards are read again only when the zoo folder
        changed (reading them took 5 ms, on every live frame)."""
        from core.verdicts.ensemble import ENSEMBLE_CARD
        from core.models.zoo import folder_version, resolve_selection

        version = folder_version(self._zoo())
        known = self._keys.get(config)
        if known is not None and known[0] == version:
            return known[1]
        cards = resolve_selection(config.models, self._zoo())
        try:
            fitted = (self._zoo() / ENSEMBLE_CARD).stat().st_mtime_ns
        except OSError:
            fitted = None
        key = config, tuple(card.sha256 for card in cards), fitted
        self._keys[config] = (version, key)
        return key

    def _scanner(self, config: ScannerConfig) -> tuple[tuple, VideoScanner]:
        key = self._key(config)
        if key not in self._scanners:
            while len(self._scanners) >= KEPT_SELECTIONS:
                self._scanners.popitem(last=False)
            self._scanners[key] = VideoScanner(config)
        self._scanners.move_to_end(key)
        return key, self._scanners[key]

    def classifier(self, name: str):
        """The named model: one a scanner already holds, else loaded (sha256 checked) once per
        version of its file."""
        from core.models.model_store import load_classifier
        from core.models.zoo import resolve_selection

        [card] = resolve_selection([name], self._zoo())
        for scanner in self._scanners.values():
            for classifier in scanner.classifiers:
                if classifier.name == name and classifier.card.sha256 == card.sha256:
                    return classifier
        key = (name, card.sha256)
        if key not in self._classifiers:
            self._classifiers[key] = load_classifier(card.card_path)
        return self._classifiers[key]

    def gradcam(self, model: str, crops: list) -> list:
        """Grad-CAM heatmaps (core.models.gradcam) of the named model for each face crop."""
        from core.models.gradcam import gradcam

        classifier = self.classifier(model)
        return [gradcam(classifier, crop) for crop in crops]

    def live_frame(self, settings: dict, models: tuple[str, ...], ensemble: str, frame):
        """One camera frame scored (core.live.FrameScorer) with a live session's settings and
        models (none: faces only)."""
        analysis, config = self._turn_back(settings, models, ensemble)
        return self._live_scorer(analysis, config if models else None)(frame)

    def _live_scorer(self, settings: AnalysisSettings, config: ScannerConfig | None):
        """The FrameScorer for a live session's settings, built on the scanner's detector and
        models for `config` (None: the detector alone), kept for the next frame."""
        from core.live import FrameScorer

        scanner_key = scanner = None
        if config is not None:
            scanner_key, scanner = self._scanner(config)
        key = (settings, scanner_key)
        if key not in self._scorers:
            if len(self._scorers) >= 8:         # settings changed often: keep the recent ones
                self._scorers.pop(next(iter(self._scorers)))
            if scanner is not None:
                detector, classifiers, mix = (scanner.detector, scanner.classifiers,
                                              scanner.ensemble)
            else:
                detector, classifiers, mix = self._detector(settings), [], None
            self._scorers[key] = FrameScorer(detector, classifiers, settings.band,
                                             margin=settings.margin, ensemble=mix,
                                             views=settings.views,
                                             views_per_face=settings.views_per_face)
        return self._scorers[key]

    def _detector(self, settings: AnalysisSettings):
        from core.pipeline import make_detector

        key = settings.detector_part()
        if key not in self._detectors:
            self._detectors[key] = make_detector(key)
        return self._detectors[key]

    def answer(self, header: dict, blobs: Blobs,
               progress: Callable[[str, float], None] | None = None) -> tuple[dict, Blobs]:
        """The reply to any request a worker receives (an analysis or Grad-CAM)."""
        if header["kind"] == "gradcam":
            return heatmaps_reply(self.gradcam(header["model"], gradcam_crops(header, blobs)))
        if header["kind"] == "live":
            return live_faces_reply(self.live_frame(header["settings"], tuple(header["models"]),
                                                    header["ensemble"], live_frame(header, blobs)))
        request = AnalysisRequest.from_message(header, blobs)
        if request.path:
            return report_reply(self.analyze_in_place(request))
        return self.analyze(request, progress)

    def analyze_in_place(self, request: AnalysisRequest):
        """The AnalysisResult of the file at request.path, read where it is; no images."""
        settings, config = self._turn_back(request.settings, request.models, request.ensemble)
        return self._scanner(config)[1].analyze(request.path, settings, keep_images=False)

    def analyze(self, request: AnalysisRequest,
                progress: Callable[[str, float], None] | None = None) -> tuple[dict, Blobs]:
        """The reply for one request: the analysis encoded (protocol.encode_analysis).
        Raises what the analysis raises."""
        return encode_analysis(self.analyze_entry(request, progress))

    def analyze_entry(self, request: AnalysisRequest,
                      progress: Callable[[str, float], None] | None = None
                      ) -> StoredAnalysis:
        """The analysis of one request as the app stores it."""
        settings, config = self._turn_back(request.settings, request.models, request.ensemble)
        if progress is not None and self._key(config) not in self._scanners:
            progress("load", 0.0)
        scanner = self._scanner(config)[1]
        upload = Upload(request.upload_name, request.data, request.content_hash)

        def analyze(path, **options):
            return scanner.analyze(path, settings, **options)

        return analyze_upload(upload, analyze, settings, scanner.model_names, progress,
                              ensemble=request.ensemble)
