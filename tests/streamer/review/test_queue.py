"""The review queue's logic, without a broker: sampling, claims, decisions, rebuilds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamer.review.queue import QueueFilter, ReviewError, ReviewQueue, in_audit_sample, item_key
from streamer.schemas import ModeratorLabel

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def verdict(video_id: str, label: str = "needs_review", **extra: object) -> dict[str, object]:
    return {"video_id": video_id, "verdict": label, "score": 0.5, "policy": "default", "model_version": "v1", **extra}


def test_audit_sample_is_reproducible_and_near_its_fraction() -> None:
    ids = [f"video-{i}" for i in range(20000)]
    chosen = [v for v in ids if in_audit_sample(v, 0.05)]
    assert chosen == [v for v in ids if in_audit_sample(v, 0.05)]
    assert 0.04 < len(chosen) / len(ids) < 0.06
    assert set(chosen) <= {v for v in ids if in_audit_sample(v, 0.2)}  # a bigger sample contains a smaller one
    assert not any(in_audit_sample(v, 0.0) for v in ids[:100])
    assert all(in_audit_sample(v, 1.0) for v in ids[:100])


def test_needs_review_and_sampled_verdicts_are_queued_errors_never() -> None:
    queue = ReviewQueue(audit_fraction=0.5, claim_seconds=60)
    sampled = next(f"v{i}" for i in range(100) if in_audit_sample(f"v{i}", 0.5))
    skipped = next(f"v{i}" for i in range(100) if not in_audit_sample(f"v{i}", 0.5))
    assert queue.add_verdict(verdict("review-me"), T0) is not None
    assert queue.add_verdict(verdict(sampled, "real"), T0).origin == "audit"  # type: ignore[union-attr]
    assert queue.add_verdict(verdict(skipped, "ai_generated"), T0) is None
    assert queue.add_verdict(verdict("broken", "error"), T0) is None
    assert queue.add_verdict({"verdict": "needs_review"}, T0) is None
    assert [i.video_id for i in queue.items(T0)] == ["review-me", sampled]


def test_oldest_first_and_filters() -> None:
    queue = ReviewQueue(audit_fraction=0.0, claim_seconds=60)
    queue.add_verdict(verdict("late", policy="strict"), T0 + timedelta(seconds=5))
    queue.add_verdict(verdict("early", model_version="v2"), T0)
    assert [i.video_id for i in queue.items(T0)] == ["early", "late"]
    assert [i.video_id for i in queue.items(T0, where=QueueFilter(policy="strict"))] == ["late"]
    assert [i.video_id for i in queue.items(T0, where=QueueFilter(model_version="v2"))] == ["early"]
    assert queue.items(T0, where=QueueFilter(verdict="real")) == []


def test_two_moderators_never_get_the_same_item_and_an_expired_claim_returns() -> None:
    queue = ReviewQueue(audit_fraction=0.0, claim_seconds=60)
    queue.add_verdict(verdict("a"), T0)
    queue.add_verdict(verdict("b"), T0 + timedelta(seconds=1))
    first = queue.claim_next("ann", T0)
    second = queue.claim_next("bob", T0)
    assert first is not None and second is not None and first.video_id != second.video_id
    assert queue.claim_next("carl", T0) is None
    assert queue.claim_next("ann", T0) is first  # ann gets her own item back
    with pytest.raises(ReviewError, match="being reviewed by ann"):
        queue.claim_item(first.key, "bob", T0)
    later = T0 + timedelta(seconds=61)
    assert queue.claim_next("carl", later) is first  # ann's lease ran out
    with pytest.raises(ReviewError, match="claim"):
        queue.decide(first.key, "ann", "real", None, later)


def test_decide_once_and_the_label_event_says_who_what_and_which_verdict() -> None:
    queue = ReviewQueue(audit_fraction=1.0, claim_seconds=60)
    queue.add_verdict(verdict("x", "ai_generated"), T0)
    item = queue.claim_next("ann", T0)
    assert item is not None
    with pytest.raises(ReviewError):
        queue.decide(item.key, "ann", "maybe", None, T0)
    _, event = queue.decide(item.key, "ann", "real", "  looks filmed ", T0)
    parsed = ModeratorLabel.parse(event.to_json())
    assert (parsed.video_id, parsed.label, parsed.moderator) == ("x", "real", "ann")
    assert (parsed.answers, parsed.audit, parsed.note, parsed.decided_at) == ("ai_generated", True, "looks filmed", T0)
    with pytest.raises(ReviewError, match="already been decided"):
        queue.decide(item.key, "ann", "real", None, T0)
    with pytest.raises(ReviewError, match="already been decided"):
        queue.claim_item(item.key, "bob", T0)
    assert queue.confusion()["audit"].counts == {"false_positive": 1}


def test_undo_reopens_an_item_whose_label_was_not_published() -> None:
    queue = ReviewQueue(audit_fraction=0.0, claim_seconds=60)
    queue.add_verdict(verdict("x"), T0)
    item = queue.claim_next("ann", T0)
    assert item is not None
    queue.decide(item.key, "ann", "ai_generated", None, T0)
    queue.undo_decision(item.key, "ann", T0)
    assert item.state(T0) == "claimed"
    queue.decide(item.key, "ann", "ai_generated", None, T0)


def test_rebuilt_state_does_not_depend_on_the_order_of_verdicts_and_labels() -> None:
    label = ModeratorLabel(video_id="x", label="ai_generated", moderator="ann")
    label_first = ReviewQueue(audit_fraction=0.0, claim_seconds=60)
    label_first.add_label(label, T0)
    label_first.add_verdict(verdict("x"), T0)
    verdict_first = ReviewQueue(audit_fraction=0.0, claim_seconds=60)
    verdict_first.add_verdict(verdict("x"), T0)
    verdict_first.add_label(label, T0)
    for queue in (label_first, verdict_first):
        assert queue.items(T0) == []
        assert queue.counts(T0)["review"] == {"open": 0, "claimed": 0, "decided": 1}
        assert queue.get(item_key("x")).decision.moderator == "ann"  # type: ignore[union-attr]
        assert queue.claim_next("bob", T0) is None
        assert [e.moderator for e in queue.audit_log()] == ["ann"]


def test_precision_and_recall_are_kept_apart_per_origin() -> None:
    queue = ReviewQueue(audit_fraction=1.0, claim_seconds=60)
    for video_id, label, truth in (("a", "ai_generated", "ai_generated"), ("b", "ai_generated", "real"),
                                   ("c", "real", "ai_generated"), ("d", "needs_review", "ai_generated"),
                                   ("e", "real", "cant_tell")):  # fmt: skip
        queue.add_verdict(verdict(video_id, label), T0)
        queue.add_label(ModeratorLabel(video_id=video_id, label=truth), T0)  # type: ignore[arg-type]
    audit, review = queue.confusion()["audit"], queue.confusion()["review"]
    assert audit.precision == 0.5 and audit.recall == 0.5
    assert review.counts == {"false_negative": 1} and review.precision is None and review.recall == 0.0


def test_an_id_the_label_schema_refuses_is_shown_but_cannot_be_labelled() -> None:
    queue = ReviewQueue(audit_fraction=0.0, claim_seconds=60)
    queue.add_verdict(verdict("<script>x</script>"), T0)
    item = queue.claim_next("ann", T0)
    assert item is not None
    with pytest.raises(ReviewError, match="cannot be labelled"):
        queue.decide(item.key, "ann", "real", None, T0)
