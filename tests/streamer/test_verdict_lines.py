"""``motionguard verdicts`` prints one line per verdict; provenance shows when there is any."""

from __future__ import annotations

import json

from detectors.provenance import Provenance
from streamer.events_cli import _table_line


def test_a_verdict_decided_by_provenance_says_so() -> None:
    provenance = Provenance(present=True, state="untrusted", ai_declared=True, issuer="Google LLC")
    record = {"video_id": "v1", "verdict": "ai_generated", "score": 0.2, "frames_scored": 8}
    line = _table_line(json.dumps({**record, "decided_by": "provenance", "provenance": provenance.to_dict()}), False)
    assert "C2PA untrusted AI (Google LLC) (decided by provenance)" in line
    unsigned = _table_line(json.dumps({**record, "decided_by": "content", "provenance": Provenance().to_dict()}), False)
    assert "C2PA" not in unsigned
