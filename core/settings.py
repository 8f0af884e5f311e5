"""Analysis settings shared by the CLI, the app's sidebar and evaluation."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .verdicts.verdict import RULES

# The settings a face detector is built with (core.pipeline.make_detector); the others apply to
# each analysis, so one loaded detector serves analyses that differ only in those.
DETECTOR_FIELDS = ("min_confidence", "detect_long_side", "min_face_size")
VIEWS_ON = ("verdict", "all")
VIEWS_PER_FACE = ("all", "one")


@dataclass(frozen=True)
class AnalysisSettings:
    frames: int = 32                 # frames sampled evenly over the clip
    rule: str = "confident"          # how face scores become person and video scores
    # |P - 0.5| below this is UNCERTAIN. 0.11: what `python -m core robustness --choose-band` chose
    # for the default verdict, each face seen one way (views_per_face), on the val clips and their
    # 12 re-encodes (models/README.md): every narrower band calls more real clips FAKE on some
    # re-encode.
    band: float = 0.11
    min_confidence: float = 0.95     # MTCNN face confidence (the origin project used 0.95)
    margin: float = 0.2              # crop margin around the face box, as a fraction of its size
    detect_long_side: int = 640      # MTCNN runs on a copy downscaled to this long side
    min_face_size: int = 40          # smallest face MTCNN looks for, in detection-image pixels
    annotated_long_side: int = 1280  # the annotated MP4 is downscaled to this long side (0 = full)
    # Each face is also scored as these views (core.verdicts.views); its P(fake) is the mean over
    # them, and where they lead to different verdicts the verdict is UNCERTAIN. "" scores the crop
    # alone.
    views: str = "flip,jpeg"
    # Which models score those views: "verdict", the models whose scores make the primary
    # verdict (the fitted ensemble's members, or every model where the verdict is their mean);
    # "all", every model. The views are for the verdict a person acts on; the models compared
    # beside it are read on the crops as found, at a third of the cost (models/README.md).
    views_on: str = "verdict"
    # Which views each face of a clip is seen in: "all", as found and in every view; "one", in
    # one of them, in turn along each person's faces (as found, mirrored, re-encoded, as found,
    # ...): every view still reads the clip, from a share of its faces, at one network pass a
    # face instead of one a view (models/README.md). A photo's face is seen every way.
    views_per_face: str = "one"
    # Faces narrower than this in the video's own pixels carry too little detail to judge: when
    # most faces of a clip are, its verdict is UNCERTAIN.
    small_face_px: int = 60
    # What a video may claim before anything is decoded: memory per frame grows with its pixels
    # (8K UHD, 33 megapixels, fits), and a clip's claimed length decides how it is sampled.
    max_frame_pixels: int = 36_000_000
    max_duration_s: float = 4 * 3600.0
    # A photo's pixels, read from its header before decoding: 50 megapixels takes a 48 MP phone
    # photo and refuses a decompression bomb (a few kB of PNG claiming gigapixels).
    max_image_pixels: int = 50_000_000

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError("frames must be at least 1")
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}; choose one of {', '.join(RULES)}")
        if not 0 <= self.band < 0.5:
            raise ValueError("band must be in [0, 0.5)")
        if not 0 < self.min_confidence <= 1:
            raise ValueError("min_confidence must be in (0, 1]")
        from .verdicts.views import parse_views

        parse_views(self.views)
        if self.views_on not in VIEWS_ON:
            raise ValueError(f"unknown views_on {self.views_on!r}; choose one of "
                             f"{', '.join(VIEWS_ON)}")
        if self.views_per_face not in VIEWS_PER_FACE:
            raise ValueError(f"unknown views_per_face {self.views_per_face!r}; choose one of "
                             f"{', '.join(VIEWS_PER_FACE)}")
        if self.max_frame_pixels < 1 or self.max_image_pixels < 1 or not self.max_duration_s > 0:
            raise ValueError("max_frame_pixels, max_image_pixels and max_duration_s must be "
                             "positive")

    def to_dict(self) -> dict:
        return asdict(self)

    def detector_part(self) -> "AnalysisSettings":
        """The defaults with these settings' DETECTOR_FIELDS: equal for every analysis one loaded
        detector serves."""
        kept = {name: getattr(self, name) for name in DETECTOR_FIELDS}
        return replace(AnalysisSettings(), **kept)

    @classmethod
    def from_dict(cls, values: dict) -> "AnalysisSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
