"""Upload events, moderator labels and dead-letter records."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from detectors.errors import NotAVideoError
from streamer.schemas import (
    EventError,
    ModeratorLabel,
    UploadEvent,
    dead_letter_record,
    guess_video_id,
)


def test_a_full_upload_event_round_trips() -> None:
    raw = json.dumps(
        {
            "video_id": "vid-1",
            "uri": "file:///videos/a.mp4",
            "uploaded_at": "2026-11-25T10:00:00.250Z",
            "policy": "strict",
            "metadata": {"channel": "x"},
        }
    )
    event = UploadEvent.parse(raw.encode())
    assert event.video_id == "vid-1"
    assert event.uploaded_at == datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=UTC)
    assert event.policy == "strict"
    assert UploadEvent.parse(event.to_json()) == event


def test_optional_fields_may_be_left_out() -> None:
    event = UploadEvent.parse(b'{"video_id": "v", "uri": "https://cdn.example/v.mp4"}')
    assert event.uploaded_at is None and event.policy is None and event.metadata == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"uri": "file:///a.mp4"}', "video_id"),
        (b'{"video_id": "", "uri": "file:///a.mp4"}', "video_id"),
        (b'{"video_id": "a b/../c", "uri": "file:///a.mp4"}', "letters"),
        (b'{"video_id": "v"}', "uri"),
        (b'{"video_id": "v", "uri": 5}', "uri"),
        (b'{"video_id": "v", "uri": "x", "uploaded_at": "yesterday"}', "RFC 3339"),
        (b'{"video_id": "v", "uri": "x", "uploaded_at": "2026-11-25T10:00:00"}', "timezone"),
        (b'{"video_id": "v", "uri": "x", "metadata": [1]}', "metadata"),
        (b'{"video_id": "v", "uri": "x", "extra": 1}', "unknown fields"),
        (None, "no value"),
        (b'{"video_id": "v", "uri": "' + b"x" * 70000 + b'"}', "bytes"),
    ],
)
def test_malformed_upload_events_are_refused_with_a_reason(raw: bytes | None, message: str) -> None:
    with pytest.raises(EventError, match=message) as info:
        UploadEvent.parse(raw)
    assert info.value.code == "malformed_event"


def test_moderator_labels_are_validated() -> None:
    label = ModeratorLabel.parse(b'{"video_id": "v", "label": "real", "moderator": "ana"}')
    assert (label.video_id, label.label, label.moderator) == ("v", "real", "ana")
    assert ModeratorLabel.parse(label.to_json()) == label
    with pytest.raises(EventError, match="ai_generated"):
        ModeratorLabel.parse(b'{"video_id": "v", "label": "fake"}')


def test_review_console_labels_carry_who_when_what_they_answer_and_round_trip() -> None:
    raw = (
        b'{"video_id": "v", "label": "cant_tell", "moderator": "ana", "decided_at": "2026-01-02T03:04:05.000Z",'
        b' "answers": "needs_review", "audit": true, "note": "blurry", "schema_version": 2}'
    )
    label = ModeratorLabel.parse(raw)
    assert (label.label, label.answers, label.audit, label.note) == ("cant_tell", "needs_review", True, "blurry")
    assert label.decided_at is not None and label.decided_at.year == 2026 and not label.counts_for_accuracy
    assert ModeratorLabel.parse(label.to_json()) == label
    assert b"schema_version" not in ModeratorLabel(video_id="v", label="real", moderator="m").to_json()
    with pytest.raises(EventError, match="audit"):
        ModeratorLabel.parse(b'{"video_id": "v", "label": "real", "audit": "yes"}')
    with pytest.raises(EventError, match="decided_at 'yesterday' is not an RFC 3339"):
        ModeratorLabel.parse(b'{"video_id": "v", "label": "real", "decided_at": "yesterday"}')


def test_video_id_is_recovered_for_error_verdicts_when_possible() -> None:
    assert guess_video_id(b'{"video_id": "v-9", "uri": 3}', None) == "v-9"
    assert guess_video_id(b"{garbage", b"key-1") == "key-1"
    assert guess_video_id(b"{garbage", None) is None
    assert guess_video_id(b"{garbage", b"\xff") is None


def test_dead_letter_record_keeps_the_original_and_the_reason() -> None:
    record = json.loads(dead_letter_record(b"{garbage", NotAVideoError("text file"), "v", "worker-1"))
    assert record["original"] == "{garbage"
    assert record["reason"] == "not_a_video"
    assert record["message"] == "text file"
    assert record["video_id"] == "v"
    assert record["failed_at"].endswith("Z")
