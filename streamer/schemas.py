"""Topic names and the JSON event schemas, defined once.

The chart, the dashboards and the CLI tools all take topic names from
:class:`Topics`.  Added fields raise ``schema_version`` in every record (readers
ignore fields they do not know); a change of meaning of an existing field means
a new topic version (``.v2``), never a silent change on an existing topic.
Version 2 added ``provenance``, ``decided_by`` and ``content_verdict`` to
verdicts; ``verdict`` keeps its meaning (what the platform should do), and
``content_verdict`` is what the content alone says.

* upload event (``video-uploads``, key ``video_id``)::

    {"video_id": str, "uri": str, "uploaded_at": RFC 3339 (optional),
     "policy": str (optional), "metadata": object (optional)}

* verdict (``video-verdicts``, key ``video_id``): the ``scan --json`` object
  (:meth:`detectors.pipeline.ScanResult.to_dict`, the one builder of both) plus
  :data:`WORKER_ONLY_FIELDS`, made by :func:`verdict_record`.  ``source`` is the
  upload's URI, and ``timings_ms`` also has ``fetch``.
* dead-letter record (``video-uploads-dlq``, key ``video_id`` when known)::

    {"original": str (the event as received), "reason": code, "message": str,
     "video_id": str | null, "failed_at": RFC 3339, "worker": str}

* moderator label (``moderator-labels``, key ``video_id``)::

    {"video_id": str, "label": "ai_generated" | "real" | "cant_tell", "moderator": str (optional),
     "decided_at": RFC 3339 (optional), "answers": str (optional: the verdict the decision answers),
     "audit": bool (optional: the item came from the audit sample), "note": str (optional),
     "schema_version": int (optional)}

  ``cant_tell`` (a moderator could not decide) closes a review item but says
  nothing about accuracy: the worker does not count it.  The review console
  writes every field; ``motionguard label`` writes the first three.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from detectors.errors import MotionGuardError
from detectors.pipeline import ScanResult

SCHEMA_VERSION = 2  # 2: verdicts carry provenance, decided_by and content_verdict
MAX_EVENT_BYTES = 64 * 1024
_VIDEO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,199}$")

LabelValue = Literal["ai_generated", "real", "cant_tell"]
LABEL_VALUES: tuple[LabelValue, ...] = ("ai_generated", "real", "cant_tell")
MAX_NOTE_CHARS = 2000


class EventError(MotionGuardError):
    """An incoming event does not match its schema."""

    code = "malformed_event"


@dataclass(frozen=True)
class Topics:
    uploads: str = "video-uploads"
    verdicts: str = "video-verdicts"
    dead_letters: str = "video-uploads-dlq"
    labels: str = "moderator-labels"

    def all(self) -> tuple[str, ...]:
        return (self.uploads, self.verdicts, self.dead_letters, self.labels)


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str, what: str = "uploaded_at") -> datetime:
    """Parse an RFC 3339 time; it must carry a timezone."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as e:
        raise EventError(f"{what} {value!r} is not an RFC 3339 time") from e
    if moment.tzinfo is None:
        raise EventError(f"{what} {value!r} has no timezone (RFC 3339 needs one, e.g. 'Z')")
    return moment


def _decode_object(raw: bytes | str | None, what: str) -> dict[str, Any]:
    if raw is None:
        raise EventError(f"{what} has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError(f"{what} is {len(raw)} bytes, more than the {MAX_EVENT_BYTES} allowed")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EventError(f"{what} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise EventError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def is_valid_video_id(video_id: str) -> bool:
    """Whether ``video_id`` is one the event schemas accept (labels for other ids are refused)."""
    return bool(_VIDEO_ID.match(video_id))


def _video_id(value: dict[str, Any], what: str) -> str:
    video_id = value.get("video_id")
    if not isinstance(video_id, str) or not video_id:
        raise EventError(f"{what} needs a non-empty string 'video_id'")
    if not _VIDEO_ID.match(video_id):
        raise EventError(
            f"{what} video_id {video_id[:50]!r} must be 1-200 characters of letters, digits, '.', '_', ':', '-'"
        )
    return video_id


@dataclass(frozen=True)
class UploadEvent:
    video_id: str
    uri: str
    uploaded_at: datetime | None = None
    policy: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes | str | None) -> UploadEvent:
        value = _decode_object(raw, "upload event")
        video_id = _video_id(value, "upload event")
        unknown = set(value) - {"video_id", "uri", "uploaded_at", "policy", "metadata"}
        if unknown:
            raise EventError(f"upload event has unknown fields: {', '.join(sorted(unknown))}")
        uri = value.get("uri")
        if not isinstance(uri, str) or not uri.strip():
            raise EventError("upload event needs a non-empty string 'uri'")
        uploaded_at = value.get("uploaded_at")
        if uploaded_at is not None and not isinstance(uploaded_at, str):
            raise EventError("upload event 'uploaded_at' must be an RFC 3339 string")
        policy = value.get("policy")
        if policy is not None and not isinstance(policy, str):
            raise EventError("upload event 'policy' must be a string")
        metadata = value.get("metadata", {})
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise EventError("upload event 'metadata' must be a JSON object")
        return cls(
            video_id=video_id,
            uri=uri.strip(),
            uploaded_at=parse_time(uploaded_at) if uploaded_at else None,
            policy=policy,
            metadata=metadata,
        )

    def to_json(self) -> bytes:
        value: dict[str, Any] = {"video_id": self.video_id, "uri": self.uri}
        if self.uploaded_at is not None:
            value["uploaded_at"] = format_time(self.uploaded_at)
        if self.policy is not None:
            value["policy"] = self.policy
        if self.metadata:
            value["metadata"] = self.metadata
        return json.dumps(value).encode()


@dataclass(frozen=True)
class ModeratorLabel:
    video_id: str
    label: LabelValue
    moderator: str | None = None
    decided_at: datetime | None = None
    answers: str | None = None
    audit: bool | None = None
    note: str | None = None

    @property
    def counts_for_accuracy(self) -> bool:
        return self.label != "cant_tell"

    @classmethod
    def parse(cls, raw: bytes | str | None) -> ModeratorLabel:
        value = _decode_object(raw, "moderator label")
        video_id = _video_id(value, "moderator label")
        label = value.get("label")
        if label not in LABEL_VALUES:
            raise EventError(f"moderator label must be one of {', '.join(LABEL_VALUES)}, got {label!r}")
        for name in ("moderator", "answers", "note", "decided_at"):
            if value.get(name) is not None and not isinstance(value[name], str):
                raise EventError(f"moderator label {name!r} must be a string")
        audit = value.get("audit")
        if audit is not None and not isinstance(audit, bool):
            raise EventError("moderator label 'audit' must be true or false")
        decided_at = value.get("decided_at")
        return cls(
            video_id=video_id,
            label=label,
            moderator=value.get("moderator"),
            decided_at=parse_time(decided_at, "decided_at") if decided_at else None,
            answers=value.get("answers"),
            audit=audit,
            note=value.get("note"),
        )

    def to_json(self) -> bytes:
        value: dict[str, Any] = {"video_id": self.video_id, "label": self.label}
        if self.moderator is not None:
            value["moderator"] = self.moderator
        if self.decided_at is not None:
            value["decided_at"] = format_time(self.decided_at)
        if self.answers is not None:
            value["answers"] = self.answers
        if self.audit is not None:
            value["audit"] = self.audit
        if self.note is not None:
            value["note"] = self.note[:MAX_NOTE_CHARS]
        if len(value) > 3:
            value["schema_version"] = SCHEMA_VERSION
        return json.dumps(value).encode()


def guess_video_id(raw: bytes | str | None, key: bytes | None) -> str | None:
    """Best-effort id for an event that failed validation (for the error verdict)."""
    try:
        value = json.loads(raw) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        value = None
    if isinstance(value, dict) and isinstance(value.get("video_id"), str):
        candidate = value["video_id"]
        if _VIDEO_ID.match(candidate):
            return str(candidate)
    if key:
        try:
            text = key.decode()
        except UnicodeDecodeError:
            return None
        if _VIDEO_ID.match(text):
            return text
    return None


WORKER_ONLY_FIELDS = (
    "video_id",
    "model_version",
    "uploaded_at",
    "received_at",
    "decided_at",
    "processing_seconds",
    "upload_to_verdict_seconds",
    "worker",
    "schema_version",
)
"""What a verdict on the topic has beyond the ``scan --json`` object of the same video."""


@dataclass(frozen=True)
class VerdictContext:
    """Where and when the worker decided one upload: the fields of :data:`WORKER_ONLY_FIELDS`."""

    video_id: str | None
    model_version: str
    uploaded_at: datetime | None
    received_at: datetime
    decided_at: datetime
    processing_seconds: float
    worker: str

    @property
    def upload_to_verdict_seconds(self) -> float | None:
        if self.uploaded_at is None:
            return None
        return max(0.0, (self.decided_at - self.uploaded_at).total_seconds())


def verdict_record(result: ScanResult, context: VerdictContext) -> dict[str, Any]:
    """The verdict the worker publishes: ``result.to_dict()`` (what ``scan --json`` prints) plus the context."""
    to_verdict = context.upload_to_verdict_seconds
    record: dict[str, Any] = {"video_id": context.video_id, **result.to_dict()}
    record.update(
        model_version=context.model_version,
        uploaded_at=format_time(context.uploaded_at) if context.uploaded_at else None,
        received_at=format_time(context.received_at),
        decided_at=format_time(context.decided_at),
        processing_seconds=round(context.processing_seconds, 4),
        upload_to_verdict_seconds=None if to_verdict is None else round(to_verdict, 4),
        worker=context.worker,
        schema_version=SCHEMA_VERSION,
    )
    return record


def dead_letter_record(raw: bytes | str | None, error: MotionGuardError, video_id: str | None, worker: str) -> bytes:
    original = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw or ""
    return json.dumps(
        {
            "original": original,
            "reason": error.code,
            "message": error.message,
            "video_id": video_id,
            "failed_at": format_time(utc_now()),
            "worker": worker,
            "schema_version": SCHEMA_VERSION,
        }
    ).encode()
