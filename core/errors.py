"""Typed errors. Each message is one line a person can act on; the CLI prints it and exits 2,
the app shows it in the page."""


def first_line(error: BaseException) -> str:
    """An exception's message as one line a person can read: its first non-empty line, or its
    type's name when it says nothing."""
    lines = (line.strip() for line in str(error).splitlines())
    return next((line for line in lines if line), type(error).__name__)


class DetectorError(Exception):
    """Base of every error the core raises on purpose."""


class VideoError(DetectorError):
    """The input is not a video or photo we can analyse."""


class EmptyFileError(VideoError):
    pass


class NotAVideoError(VideoError):
    pass


class NoVideoStreamError(VideoError):
    pass


class CorruptVideoError(VideoError):
    """Container opens but frames cannot be decoded (truncated or damaged)."""


class TooFewFramesError(VideoError):
    pass


class VideoLimitError(VideoError):
    """The video is beyond a size or duration limit (a setting), checked before decoding it."""


class ImageError(VideoError):
    """A photo that cannot be analysed: not an image, damaged, or too small to hold a face."""


class ImageLimitError(ImageError):
    """A photo beyond the pixel limit (a setting), checked from its header before decoding."""


class NoVideosFoundError(DetectorError):
    pass


class ModelError(DetectorError):
    pass


class ChecksumMismatchError(ModelError):
    pass


class ModelNotFoundError(ModelError):
    pass


class ImageNetWeightsUnavailableError(ModelError):
    pass


class H5ImportError(ModelError):
    pass


class LabelsError(DetectorError):
    """A labels CSV or DFDC folder that cannot be read."""
