"""One exception hierarchy for everything MotionGuard reports about its inputs.

Every error a *bad input* can cause derives from :class:`MotionGuardError` and
carries a stable machine-readable ``code`` (used in verdicts, dead-letter
records and metric labels) and a message written for a person.  Programming
errors (``TypeError``, ``AssertionError`` ...) are deliberately *not* wrapped:
they must still crash loudly.
"""

from __future__ import annotations


class MotionGuardError(Exception):
    """Root of every error MotionGuard raises on purpose."""

    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """The ``{"code": ..., "message": ...}`` object used in verdicts."""
        return {"code": self.code, "message": self.message}


# --- video input -----------------------------------------------------------------


class VideoError(MotionGuardError):
    """The input cannot be turned into frames."""

    code = "video_error"


class VideoNotFoundError(VideoError):
    code = "not_found"


class EmptyFileError(VideoError):
    code = "empty_file"


class NotAVideoError(VideoError):
    code = "not_a_video"


class NoVideoStreamError(VideoError):
    code = "no_video_stream"


class CorruptVideoError(VideoError):
    code = "corrupt_video"


class UnsupportedVideoError(VideoError):
    """Probe succeeded but the stream is outside what we accept (e.g. absurd size)."""

    code = "unsupported_video"


class VideoTooLargeError(VideoError):
    """File size, duration or frame size exceeds a configured limit."""

    code = "too_large"


class DecodeTimeoutError(VideoError):
    """ffmpeg or ffprobe ran past the configured timeout and was killed."""

    code = "decode_timeout"


class FfmpegNotFoundError(MotionGuardError):
    """The ffmpeg/ffprobe executables are missing: an installation problem."""

    code = "ffmpeg_missing"


# --- models and bundles ----------------------------------------------------------


class ModelError(MotionGuardError):
    code = "model_error"


class UnknownModelError(ModelError):
    code = "unknown_model"


class ModelUnavailableError(ModelError):
    """The model exists but its weights cannot be had (offline, missing file)."""

    code = "model_unavailable"


class BundleError(ModelError):
    """A model bundle is missing a part, has a tampered part or an unexpected type."""

    code = "bundle_error"


# --- sources (URIs) --------------------------------------------------------------


class SourceError(MotionGuardError):
    code = "source_error"


class ForbiddenSourceError(SourceError):
    code = "forbidden_uri"


class SourceUnavailableError(SourceError):
    """Fetching failed in a way that may succeed later (timeouts, HTTP 5xx)."""

    code = "source_unavailable"


class ProvenanceConfigError(MotionGuardError):
    """A configured trust anchor or allowed-list file cannot be read as PEM."""

    code = "provenance_config"


class DatasetError(MotionGuardError):
    code = "dataset_error"


class InternalError(MotionGuardError):
    """An unexpected failure while processing one input (a bug or a runtime fault).

    The worker turns it into an error verdict and a dead-letter record, so the
    event can be replayed once the cause is fixed, instead of stalling its
    partition.
    """

    code = "internal_error"
