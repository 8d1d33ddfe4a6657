"""The review queue: which verdicts wait for a moderator, who holds which, what was decided.

Pure state, no broker: :mod:`streamer.review.feed` feeds it the verdicts and
labels topics from their beginning, so the state after a restart is the state
before it (claims excepted: they only live for their lease, and a restart
returns them to the queue).  The order of verdicts and labels does not matter:
a label that arrives before its verdict closes the item when the verdict comes.

An item enters the queue when its verdict is ``needs_review``, or when its
verdict is ``ai_generated`` or ``real`` and the video id falls in the audit
sample: the first 8 bytes of SHA-256(video id), read as a number below 2^64,
are below ``audit_fraction`` x 2^64.  The choice is reproducible (every
console replica and every restart picks the same videos) and does not depend
on the score, so precision and recall measured on the sample are unbiased.
Error verdicts never enter the queue.

Items are identified in URLs by :func:`item_key` (a hash of the video id), so
an untrusted id never has to be a URL path segment.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from streamer.metrics import label_outcome
from streamer.schemas import LABEL_VALUES, LabelValue, ModeratorLabel, is_valid_video_id

logger = logging.getLogger(__name__)

Origin = Literal["review", "audit"]
ORIGINS: tuple[Origin, ...] = ("review", "audit")
MAX_VIDEO_ID_CHARS = 200


class ReviewError(Exception):
    """A queue operation that cannot be done; ``status`` is the HTTP status it maps to."""

    status = 409

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


def in_audit_sample(video_id: str, fraction: float) -> bool:
    """Whether ``video_id`` is in the audit sample of this size (reproducible, score-blind)."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    number = int.from_bytes(hashlib.sha256(video_id.encode()).digest()[:8], "big")
    return number < int(fraction * 2**64)


def item_key(video_id: str) -> str:
    return hashlib.sha256(video_id.encode()).hexdigest()[:20]


@dataclass
class Claim:
    moderator: str
    expires_at: datetime


@dataclass
class Decision:
    label: LabelValue
    moderator: str | None
    decided_at: datetime | None
    note: str | None

    @classmethod
    def from_label(cls, label: ModeratorLabel) -> Decision:
        return cls(label=label.label, moderator=label.moderator, decided_at=label.decided_at, note=label.note)


@dataclass
class QueueItem:
    video_id: str
    verdict: dict[str, Any]
    origin: Origin
    arrived_at: datetime
    claim: Claim | None = None
    decision: Decision | None = None

    @property
    def key(self) -> str:
        return item_key(self.video_id)

    @property
    def verdict_label(self) -> str:
        return str(self.verdict.get("verdict"))

    @property
    def policy(self) -> str:
        return str(self.verdict.get("policy") or "default")

    @property
    def model_version(self) -> str:
        return str(self.verdict.get("model_version") or (self.verdict.get("model") or {}).get("version") or "")

    def state(self, now: datetime) -> Literal["open", "claimed", "decided"]:
        if self.decision is not None:
            return "decided"
        if self.claim is not None and self.claim.expires_at > now:
            return "claimed"
        return "open"


@dataclass(frozen=True)
class QueueFilter:
    policy: str | None = None
    verdict: str | None = None
    model_version: str | None = None

    def matches(self, item: QueueItem) -> bool:
        return (
            (not self.policy or item.policy == self.policy)
            and (not self.verdict or item.verdict_label == self.verdict)
            and (not self.model_version or item.model_version == self.model_version)
        )


@dataclass
class AuditEntry:
    """One decision as read from the labels topic (any producer: the console or ``motionguard label``)."""

    video_id: str
    label: str
    moderator: str | None
    decided_at: datetime | None
    answers: str | None
    audit: bool | None
    note: str | None
    recorded_at: datetime


@dataclass
class Confusion:
    """Moderator labels joined with verdicts, for one origin (review queue or audit sample)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def ratio(self, numerator: str, other: str) -> float | None:
        hits = self.counts.get(numerator, 0)
        total = hits + self.counts.get(other, 0)
        return hits / total if total else None

    @property
    def precision(self) -> float | None:
        return self.ratio("true_positive", "false_positive")

    @property
    def recall(self) -> float | None:
        return self.ratio("true_positive", "false_negative")


class ReviewQueue:
    """Items, claims and decisions; thread-safe (the feed thread writes, requests read and claim)."""

    def __init__(self, audit_fraction: float, claim_seconds: float) -> None:
        self.audit_fraction = audit_fraction
        self.claim = timedelta(seconds=claim_seconds)
        self._items: dict[str, QueueItem] = {}  # video_id -> item
        self._by_key: dict[str, str] = {}  # item key -> video_id
        self._labels: dict[str, ModeratorLabel] = {}  # video_id -> newest label (any order w.r.t. verdicts)
        self._audit_log: list[AuditEntry] = []
        self._lock = threading.RLock()

    # -- feeding -------------------------------------------------------------------------

    def add_verdict(self, record: Mapping[str, Any], recorded_at: datetime) -> QueueItem | None:
        """Take one verdict record; return the item when it belongs in the queue."""
        video_id = record.get("video_id")
        if not isinstance(video_id, str) or not video_id or len(video_id) > MAX_VIDEO_ID_CHARS:
            logger.warning("ignoring a verdict without a usable video_id")
            return None
        verdict = record.get("verdict")
        if verdict == "needs_review":
            origin: Origin = "review"
        elif verdict in ("ai_generated", "real") and in_audit_sample(video_id, self.audit_fraction):
            origin = "audit"
        else:
            return None
        with self._lock:
            item = self._items.get(video_id)
            if item is not None:
                if item.decision is None:
                    item.verdict = dict(record)  # a repeated verdict (redelivery): keep its place in line
                return item
            item = QueueItem(video_id=video_id, verdict=dict(record), origin=origin, arrived_at=recorded_at)
            label = self._labels.get(video_id)
            if label is not None:
                item.decision = Decision.from_label(label)
            self._items[video_id] = item
            self._by_key[item.key] = video_id
            return item

    def add_label(self, label: ModeratorLabel, recorded_at: datetime) -> None:
        with self._lock:
            self._labels[label.video_id] = label
            self._audit_log.append(
                AuditEntry(
                    video_id=label.video_id,
                    label=label.label,
                    moderator=label.moderator,
                    decided_at=label.decided_at,
                    answers=label.answers,
                    audit=label.audit,
                    note=label.note,
                    recorded_at=recorded_at,
                )
            )
            item = self._items.get(label.video_id)
            if item is not None:
                item.decision = Decision.from_label(label)
                item.claim = None

    # -- reading ----------------------------------------------------------------------------

    def get(self, key: str) -> QueueItem:
        with self._lock:
            video_id = self._by_key.get(key)
            if video_id is None:
                raise ReviewError("no such item in the review queue", status=404)
            return self._items[video_id]

    def items(
        self, now: datetime, states: Iterable[str] = ("open", "claimed"), where: QueueFilter | None = None
    ) -> list[QueueItem]:
        """Items in these states, oldest first."""
        wanted = set(states)
        where = where or QueueFilter()
        with self._lock:
            chosen = [i for i in self._items.values() if i.state(now) in wanted and where.matches(i)]
        return sorted(chosen, key=lambda i: (i.arrived_at, i.video_id))

    def counts(self, now: datetime) -> dict[Origin, dict[str, int]]:
        """``{origin: {state: n}}``."""
        result = {origin: {"open": 0, "claimed": 0, "decided": 0} for origin in ORIGINS}
        with self._lock:
            for item in self._items.values():
                result[item.origin][item.state(now)] += 1
        return result

    def choices(self) -> dict[str, list[str]]:
        """Values the filters can take."""
        with self._lock:
            items = list(self._items.values())
        return {
            "policy": sorted({i.policy for i in items}),
            "verdict": sorted({i.verdict_label for i in items}),
            "model_version": sorted({i.model_version for i in items if i.model_version}),
        }

    def audit_log(self) -> list[AuditEntry]:
        """Decisions, newest first."""
        with self._lock:
            return list(reversed(self._audit_log))

    def confusion(self) -> dict[Origin, Confusion]:
        """Labels (ai_generated / real) joined with the verdicts of decided items, per origin."""
        result: dict[Origin, Confusion] = {origin: Confusion() for origin in ORIGINS}
        with self._lock:
            for item in self._items.values():
                if item.decision is not None and item.decision.label != "cant_tell":
                    result[item.origin].add(label_outcome(item.verdict_label, item.decision.label))
        return result

    # -- claims and decisions ---------------------------------------------------------------

    def claim_item(self, key: str, moderator: str, now: datetime) -> QueueItem:
        """Hold an item for ``moderator`` for the lease; refused while someone else holds it."""
        with self._lock:
            item = self.get(key)
            state = item.state(now)
            if state == "decided":
                raise ReviewError("this item has already been decided")
            if state == "claimed" and item.claim is not None and item.claim.moderator != moderator:
                raise ReviewError(f"this item is being reviewed by {item.claim.moderator}")
            item.claim = Claim(moderator=moderator, expires_at=now + self.claim)
            return item

    def claim_next(self, moderator: str, now: datetime, where: QueueFilter | None = None) -> QueueItem | None:
        """The item ``moderator`` already holds, else the oldest open one (claimed for them); None when empty."""
        with self._lock:
            held = [i for i in self.items(now, ("claimed",), where) if i.claim and i.claim.moderator == moderator]
            if held:
                return held[0]
            for item in self.items(now, ("open",), where):
                return self.claim_item(item.key, moderator, now)
        return None

    def release(self, key: str, moderator: str, now: datetime) -> None:
        with self._lock:
            item = self.get(key)
            if item.state(now) == "claimed" and item.claim is not None and item.claim.moderator == moderator:
                item.claim = None

    def decide(
        self, key: str, moderator: str, label: str, note: str | None, now: datetime
    ) -> tuple[QueueItem, ModeratorLabel]:
        """Close an item ``moderator`` holds; return the label event to publish.

        The item is closed at once (a second click or a second moderator finds it
        decided); :meth:`undo_decision` reopens it if the label cannot be published.
        """
        if label not in LABEL_VALUES:
            raise ReviewError(f"decision must be one of {', '.join(LABEL_VALUES)}", status=400)
        with self._lock:
            item = self.get(key)
            state = item.state(now)
            if state == "decided":
                raise ReviewError("this item has already been decided")
            if state != "claimed" or item.claim is None or item.claim.moderator != moderator:
                raise ReviewError("open the item first: your claim on it is missing or has expired")
            if not is_valid_video_id(item.video_id):
                # A label for it would be refused by every reader (the worker, a restarted console).
                raise ReviewError("this video id is not a valid id (see the event schema): it cannot be labelled", 422)
            event = ModeratorLabel(
                video_id=item.video_id,
                label=label,  # checked against LABEL_VALUES above
                moderator=moderator,
                decided_at=now,
                answers=item.verdict_label,
                audit=item.origin == "audit",
                note=note.strip() or None if note else None,
            )
            item.decision = Decision.from_label(event)
            item.claim = None
            return item, event

    def undo_decision(self, key: str, moderator: str, now: datetime) -> None:
        """Reopen an item whose label could not be published (held again by the same moderator)."""
        with self._lock:
            item = self.get(key)
            if item.video_id not in self._labels:
                item.decision = None
                item.claim = Claim(moderator=moderator, expires_at=now + self.claim)
