"""How far each uploads partition may be committed: the finished prefix (no Kafka here).

An uploads offset may be committed only when every event before it has its
outcome (a verdict, or an error verdict plus a dead letter) on Kafka;
otherwise a crash loses the events in between.  The uploads consumer
(:mod:`streamer.uploads`) takes the records of a partition in offset order,
as aiokafka returns them, and events finish in any order.  This tracker
records both and answers: what may be committed now (up to the first event
taken but not finished), and how many events are in flight (taken and not
yet covered by a commit: what a crash would process a second time).

Offsets between two taken records hold no record a consumer sees (a
transaction marker, a compacted or aborted record): aiokafka returns every
record of a partition in order, so a commit may pass them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

Partition = Hashable  # an aiokafka TopicPartition; anything hashable in tests


@dataclass
class _Partition:
    taken: dict[int, bool] = field(default_factory=dict)  # offset -> finished, in offset order
    last_taken: int = -1
    commit_point: int | None = None  # every taken offset below has its outcome
    committed: int | None = None  # the last commit known to have succeeded
    awaiting_commit: list[int] = field(default_factory=list)  # finished offsets below commit_point, not committed


class UploadOffsets:
    """Per uploads partition: which taken events have their outcome, and what to commit."""

    def __init__(self) -> None:
        self._partitions: dict[Partition, _Partition] = {}

    def take(self, tp: Partition, offset: int) -> bool:
        """An event is handed to processing; ``False`` (and nothing recorded) if it was taken before.

        A record at or below the partition's last taken offset is one fetched
        again (a reset of the fetch position): it is in flight or answered
        already, and needs no processing.
        """
        state = self._partitions.setdefault(tp, _Partition())
        if offset <= state.last_taken:
            return False
        state.taken[offset] = False
        state.last_taken = offset
        return True

    def finish(self, tp: Partition, offset: int) -> None:
        """The event at ``offset`` has its outcome on Kafka (ignored if the partition was revoked since)."""
        state = self._partitions.get(tp)
        if state is None or offset not in state.taken:
            return
        state.taken[offset] = True
        for taken, finished in list(state.taken.items()):  # in offset order
            if not finished:
                break
            del state.taken[taken]
            state.awaiting_commit.append(taken)
            state.commit_point = taken + 1

    def frontier(self, tp: Partition) -> int | None:
        """The first offset of ``tp`` that a restart would process (``None``: nothing taken since assignment)."""
        state = self._partitions.get(tp)
        if state is None:
            return None
        for offset in state.taken:
            return offset
        return state.commit_point

    def commits(self) -> dict[Partition, int]:
        """Offsets to commit now: partitions whose finished prefix moved past their last commit."""
        return {
            tp: state.commit_point
            for tp, state in self._partitions.items()
            if state.commit_point is not None and state.commit_point != state.committed
        }

    def committed(self, tp: Partition, offset: int) -> None:
        """A commit of ``offset`` for ``tp`` succeeded: the events below it are no longer in flight."""
        state = self._partitions.get(tp)
        if state is None:
            return
        state.committed = offset
        state.awaiting_commit = [o for o in state.awaiting_commit if o >= offset]

    def unfinished(self, tps: set[Partition] | None = None) -> int:
        """Events taken and not finished, of ``tps`` (default: every partition)."""
        return sum(
            sum(not finished for finished in state.taken.values())
            for tp, state in self._partitions.items()
            if tps is None or tp in tps
        )

    def in_flight(self) -> int:
        """Events taken and not covered by a successful commit: those a crash now would process again."""
        return sum(len(state.taken) + len(state.awaiting_commit) for state in self._partitions.values())

    def revoke(self, tp: Partition) -> None:
        """Forget ``tp``: it belongs to another consumer now (finishes of its events are ignored)."""
        self._partitions.pop(tp, None)
