"""Content Credentials with real signatures: the tests sign ffmpeg-made videos themselves
(see :mod:`tests.c2pa_signing` for the chains and what C2PA requires of them)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
import pytest

import detectors
from detectors.pipeline import Detector, ModelInfo
from detectors.provenance import (
    C2PA_BMFF_UUID,
    TOO_LARGE,
    Provenance,
    ProvenanceConfig,
    ProvenanceReader,
)
from detectors.sampling import FfmpegSampler, SamplingConfig
from detectors.types import AI_LABEL, REAL_LABEL
from detectors.voting import Policy, conclude
from tests.c2pa_signing import AI, CAPTURE, IPTC, Chain, flip_inside_mdat, make_chain, manifest, sign
from tests.videofactory import VideoCache

REPO = Path(__file__).resolve().parents[2]


def manifest_box_offset(data: bytes) -> int:
    """Offset of the C2PA ``uuid`` box's payload (after size, type and uuid)."""
    return data.index(C2PA_BMFF_UUID) + len(C2PA_BMFF_UUID)


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("provenance")


@pytest.fixture(scope="module")
def trusted(work: Path) -> Chain:
    return make_chain(work / "trusted", "MotionGuard Test Trusted")


@pytest.fixture(scope="module")
def stranger(work: Path) -> Chain:
    return make_chain(work / "stranger", "MotionGuard Test Stranger")


@pytest.fixture(scope="module")
def clip(videos: VideoCache) -> Path:
    return videos.video(codec="h264", seconds=1, width=96, height=64, fps=10)


@pytest.fixture(scope="module")
def ai_untrusted(clip: Path, stranger: Chain, work: Path) -> Path:
    return sign(clip, work / "ai-stranger.mp4", stranger, AI)


@pytest.fixture(scope="module")
def ai_trusted(clip: Path, trusted: Chain, work: Path) -> Path:
    return sign(clip, work / "ai-trusted.mp4", trusted, AI)


@pytest.fixture(scope="module")
def capture_trusted(clip: Path, trusted: Chain, work: Path) -> Path:
    return sign(clip, work / "capture-trusted.mp4", trusted, CAPTURE)


@pytest.fixture(scope="module")
def capture_untrusted(clip: Path, stranger: Chain, work: Path) -> Path:
    return sign(clip, work / "capture-stranger.mp4", stranger, CAPTURE)


@pytest.fixture(scope="module")
def anchored(trusted: Chain) -> ProvenanceReader:
    """A reader with the trusted chain's root configured as the only trust anchor."""
    return ProvenanceReader(ProvenanceConfig(trust_anchor_paths=(str(trusted.root_pem),)))


# --- a detector whose content verdict the test chooses -----------------------------------


class ConstantEmbedder:
    """Any frame -> the same unit vector (the classifier below ignores it)."""

    image_size = 32
    untrained = True
    resize_mode = "shortest"

    def describe(self) -> dict[str, object]:
        return {"architecture": "constant"}

    def embed_frames(self, frames: Any) -> Any:
        return np.ones((len(frames), 4), dtype=np.float32) / 2.0

    def embed_texts(self, texts: Any) -> Any:
        return np.ones((len(texts), 4), dtype=np.float32) / 2.0


class ConstantClassifier:
    """Every frame has the same probability of being AI-generated."""

    def __init__(self, p_ai: float) -> None:
        self.p_ai = p_ai
        self.classes_ = np.array([AI_LABEL, REAL_LABEL])

    def predict_proba(self, embeddings: Any) -> Any:
        return np.tile([self.p_ai, 1.0 - self.p_ai], (len(embeddings), 1))


def content_detector(p_ai: float, reader: ProvenanceReader, *, capture_claim_clears: bool = False) -> Detector:
    return Detector(
        sampler=FfmpegSampler(SamplingConfig(frames=4)),
        embedder=ConstantEmbedder(),
        classifier=ConstantClassifier(p_ai),
        model=ModelInfo("constant", "constant@1", "constant", {}, untrained=True),
        policies={"default": Policy(aggregation="mean", capture_claim_clears=capture_claim_clears)},
        provenance=reader,
    )


CONTENT_AI, CONTENT_REVIEW, CONTENT_REAL = 0.9, 0.5, 0.1


# --- reading ------------------------------------------------------------------------------


def test_the_worktree_code_is_tested() -> None:
    assert Path(detectors.__file__).resolve().is_relative_to(REPO)


def test_ai_declared_by_an_untrusted_signer_flags_the_video(ai_untrusted: Path, anchored: ProvenanceReader) -> None:
    provenance = anchored.read(ai_untrusted)
    assert provenance.present and provenance.state == "untrusted"
    assert provenance.ai_declared and provenance.digital_source_type == AI
    assert provenance.issuer == "MotionGuard Test Stranger"
    assert provenance.common_name == "MotionGuard Test Stranger Signer"
    assert provenance.claim_generator == "motionguard-tests/1.0"
    assert provenance.actions == ("c2pa.created",)
    assert "signingCredential.untrusted" in provenance.problems
    assert provenance.signed_at is None  # no timestamp authority
    result = content_detector(CONTENT_REAL, anchored).scan(ai_untrusted)
    assert result.to_dict()["verdict"] == "ai_generated"
    assert result.to_dict()["decided_by"] == "provenance"
    assert result.to_dict()["content_verdict"] == "real"  # the content score is still reported
    assert result.score is not None and result.score.frames_scored == 4


def test_ai_declared_by_a_trusted_signer_is_trusted(ai_trusted: Path, anchored: ProvenanceReader) -> None:
    provenance = anchored.read(ai_trusted)
    assert provenance.state == "trusted" and provenance.ai_declared
    assert provenance.problems == ()
    assert ProvenanceReader().read(ai_trusted).state == "untrusted"  # no anchors by default
    assert content_detector(CONTENT_REAL, anchored).scan(ai_trusted).verdict == "ai_generated"


@pytest.mark.parametrize(("clears", "expected"), [(False, "ai_generated"), (True, "real")])
def test_trusted_capture_claim_clears_a_content_flag_only_when_the_policy_says_so(
    capture_trusted: Path, anchored: ProvenanceReader, clears: bool, expected: str
) -> None:
    provenance = anchored.read(capture_trusted)
    assert provenance.state == "trusted" and not provenance.ai_declared and provenance.capture_declared
    result = content_detector(CONTENT_AI, anchored, capture_claim_clears=clears).scan(capture_trusted).to_dict()
    assert result["verdict"] == expected
    assert result["content_verdict"] == "ai_generated"
    assert result["decided_by"] == ("provenance" if clears else "content")


def test_untrusted_capture_claim_clears_nothing(capture_untrusted: Path, anchored: ProvenanceReader) -> None:
    assert anchored.read(capture_untrusted).state == "untrusted"
    for p_ai, content in ((CONTENT_AI, "ai_generated"), (CONTENT_REVIEW, "needs_review")):
        result = content_detector(p_ai, anchored, capture_claim_clears=True).scan(capture_untrusted)
        assert (result.verdict, result.decided_by) == (content, "content")


def test_bytes_flipped_in_mdat_make_the_manifest_invalid_and_never_real(
    ai_trusted: Path, capture_trusted: Path, anchored: ProvenanceReader, work: Path
) -> None:
    for signed in (ai_trusted, capture_trusted):
        altered = flip_inside_mdat(signed, work / f"altered-{signed.name}")
        provenance = anchored.read(altered)
        assert provenance.state == "invalid", provenance
        assert "assertion.bmffHash.mismatch" in provenance.problems
        for p_ai in (CONTENT_REAL, CONTENT_REVIEW):
            result = content_detector(p_ai, anchored, capture_claim_clears=True).scan(altered)
            assert result.verdict == "needs_review", (signed.name, p_ai)
        assert content_detector(CONTENT_REAL, anchored).scan(altered).decided_by == "provenance"
        assert content_detector(CONTENT_AI, anchored).scan(altered).verdict == "ai_generated"


def test_a_remux_strips_the_manifest(ai_trusted: Path, anchored: ProvenanceReader, work: Path) -> None:
    remuxed = work / "remuxed.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(ai_trusted), "-c", "copy", str(remuxed)],
        check=True,
    )
    assert anchored.read(remuxed) == Provenance()
    result = content_detector(CONTENT_AI, anchored).scan(remuxed).to_dict()
    assert result["provenance"]["present"] is False and result["provenance"]["state"] == "none"
    assert (result["verdict"], result["decided_by"]) == ("ai_generated", "content")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_broken_manifest_box_is_unreadable_and_the_content_decides(
    ai_trusted: Path, anchored: ProvenanceReader, work: Path, damage: str
) -> None:
    data = bytearray(ai_trusted.read_bytes())
    payload = manifest_box_offset(data)
    box_start = payload - 24
    box_size = int.from_bytes(data[box_start : box_start + 4], "big")
    if damage == "garbage":
        start, stop = payload + 100, box_start + box_size - 16
        data[start:stop] = b"\xa5" * (stop - start)
    else:  # cut the JUMBF short; a ``free`` box fills the rest, so the video's offsets stay valid
        cut = box_size // 2
        data[box_start : box_start + 4] = cut.to_bytes(4, "big")
        data[box_start + cut : box_start + cut + 8] = (box_size - cut).to_bytes(4, "big") + b"free"
    broken = work / f"{damage}.mp4"
    broken.write_bytes(data)
    provenance = anchored.read(broken)
    assert provenance.present and provenance.state == "unreadable", provenance
    assert provenance.problems and not provenance.ai_declared
    for p_ai, content in ((CONTENT_AI, "ai_generated"), (CONTENT_REAL, "real")):
        result = content_detector(p_ai, anchored).scan(broken)
        assert result.ok and result.score is not None  # never an error verdict
        assert (result.verdict, result.decided_by) == (content, "content")


def test_with_several_manifests_the_active_one_wins(
    capture_trusted: Path, trusted: Chain, anchored: ProvenanceReader, work: Path
) -> None:
    """A capture claim edited with generative AI: the active (last) manifest declares it."""
    edited = sign(
        capture_trusted,
        work / "edited.mp4",
        trusted,
        IPTC + "compositeWithTrainedAlgorithmicMedia",
        edit_of_parent=True,
    )
    with open(edited, "rb") as stream, c2pa.Reader("video/mp4", stream) as reader:
        assert len(json.loads(reader.json())["manifests"]) == 2
    provenance = anchored.read(edited)
    assert provenance.state == "trusted" and provenance.ai_declared
    assert provenance.actions == ("c2pa.opened", "c2pa.edited")
    assert provenance.digital_source_type == IPTC + "compositeWithTrainedAlgorithmicMedia"
    assert content_detector(CONTENT_REAL, anchored, capture_claim_clears=True).scan(edited).verdict == "ai_generated"


def test_a_hostile_huge_manifest_box_is_not_handed_to_the_library(
    clip: Path, anchored: ProvenanceReader, work: Path
) -> None:
    """A 64 MiB C2PA box (its declared size is what is refused) and one that lies about its size."""
    huge = work / "huge.mp4"
    size = 64 * 1024 * 1024
    with open(huge, "wb") as f:
        f.write(clip.read_bytes())
        f.write((size).to_bytes(4, "big") + b"uuid" + C2PA_BMFF_UUID)
        f.truncate(f.tell() + size - 24)  # sparse: the test writes no 64 MiB
    lying = work / "lying.mp4"
    lying.write_bytes(clip.read_bytes() + (2**32 - 1).to_bytes(4, "big") + b"uuid" + C2PA_BMFF_UUID + b"\0" * 64)
    for path in (huge, lying):
        provenance = anchored.read(path)
        assert (provenance.state, provenance.problems) == ("unreadable", (TOO_LARGE,)), path
    small_limit = ProvenanceReader(ProvenanceConfig(max_manifest_bytes=1024))
    signed = sign(clip, work / "small-limit.mp4", make_chain(work / "limit", "Limit"), AI)
    assert small_limit.read(signed).problems == (TOO_LARGE,)
    assert ProvenanceReader(ProvenanceConfig(max_manifest_bytes=64 * 1024)).read(signed).ai_declared


def test_containers_without_manifest_support_read_as_none(videos: VideoCache, anchored: ProvenanceReader) -> None:
    webm = videos.video(codec="vp9", seconds=1, width=64, height=64)
    assert anchored.read(webm) == Provenance()


def test_config_rejects_a_trust_anchor_that_is_not_pem(work: Path) -> None:
    from detectors.errors import ProvenanceConfigError

    bad = work / "not-a-cert.pem"
    bad.write_text("hello")
    with pytest.raises(ProvenanceConfigError):
        ProvenanceReader(ProvenanceConfig(trust_anchor_paths=(str(bad),)))


def test_conclude_policy_table() -> None:
    policy, clears = Policy(), Policy(capture_claim_clears=True)
    ai = Provenance(present=True, state="untrusted", ai_declared=True, digital_source_type=AI)
    broken_ai = Provenance(present=True, state="invalid", ai_declared=True, digital_source_type=AI)
    capture = Provenance(present=True, state="trusted", digital_source_type=CAPTURE)
    assert conclude("real", ai, policy).verdict == "ai_generated"
    assert conclude("real", broken_ai, policy).verdict == "needs_review"
    assert conclude("ai_generated", broken_ai, policy).verdict == "ai_generated"
    assert conclude("needs_review", capture, clears).verdict == "real"
    assert conclude("needs_review", capture, policy).verdict == "needs_review"
    assert conclude("real", Provenance(present=True, state="unreadable"), policy).decided_by == "content"


# --- no network ------------------------------------------------------------------------------


@pytest.fixture()
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 that records every connection it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    hits: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    hits.append(conn.recv(4096))
                except OSError:
                    hits.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], hits
    finally:
        server.close()
        thread.join(timeout=5)


def _network_bait(clip: Path, work: Path, port: int) -> tuple[Path, Path]:
    """A signed clip whose signer names an OCSP responder, and a clip whose manifest is remote,
    both on the test's listener."""
    chain = make_chain(work / f"ocsp-{port}", "OCSP", ocsp_url=f"http://127.0.0.1:{port}/ocsp")
    embedded = sign(clip, work / f"ocsp-{port}.mp4", chain, AI)
    remote = work / f"remote-{port}.mp4"
    with c2pa.Builder(manifest(AI)) as builder, chain.signer() as signer:
        builder.set_no_embed()
        builder.set_remote_url(f"http://127.0.0.1:{port}/manifest.c2pa")
        with open(clip, "rb") as src, open(remote, "w+b") as dst:
            builder.sign(signer, "video/mp4", src, dst)
    return embedded, remote


def test_reading_attempts_no_connection(clip: Path, work: Path, listener: tuple[int, list[bytes]]) -> None:
    """c2pa-rs does its HTTP in Rust, so patching Python's socket module would prove nothing.

    Instead the files point the library at a real listener (an OCSP responder in
    the signer's certificate, a remote manifest URL): a connection attempt from
    any code path, Python or Rust, reaches it.  The control read with the
    library's default settings shows the bait works (it connects); our reader
    must not.
    """
    port, hits = listener
    embedded, remote = _network_bait(clip, work, port)
    reader = ProvenanceReader()
    assert reader.read(embedded).ai_declared
    remote_provenance = reader.read(remote)
    assert remote_provenance.state == "unreadable" and remote_provenance.problems == ("c2pa.Remote",)
    assert hits == []
    with pytest.raises(c2pa.C2paError), open(remote, "rb") as stream:
        c2pa.Reader("video/mp4", stream)  # default settings fetch remote manifests
    assert hits and hits[0].startswith(b"GET /manifest.c2pa")


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to watch the connect(2) system call")
def test_reading_makes_no_connect_system_call(clip: Path, work: Path, listener: tuple[int, list[bytes]]) -> None:
    """Any socket connection, to any address and from any language, is a ``connect(2)`` call.

    The reads run in a child process under ``strace -f -e trace=connect``; the
    same child with the library's default settings is the control that shows a
    fetch would be seen.
    """
    port, _ = listener
    embedded, remote = _network_bait(clip, work, port)
    ours = (
        "from detectors.provenance import ProvenanceReader\n"
        f"r = ProvenanceReader()\nprint(r.read({str(embedded)!r}).state, r.read({str(remote)!r}).state)\n"
    )
    control = (
        "import c2pa\n"
        f"try:\n    c2pa.Reader('video/mp4', open({str(remote)!r}, 'rb'))\nexcept c2pa.C2paError as e:\n    print(e)\n"
    )

    def connects(code: str) -> list[str]:
        trace = work / f"strace-{len(code)}-{port}.txt"
        subprocess.run(
            ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace), sys.executable, "-c", code],
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=120,
        )
        return [line for line in trace.read_text().splitlines() if "AF_INET" in line]

    assert connects(ours) == []
    assert any(f"htons({port})" in line for line in connects(control))


# --- scan --json end to end --------------------------------------------------------------------


def test_scan_json_reports_provenance(ai_untrusted: Path, clip: Path, work: Path) -> None:
    altered = flip_inside_mdat(ai_untrusted, work / "scan-altered.mp4")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "streamer", "scan", "--model", "ViT-B-32", "--pretrained", "none"),
            *("--frames", "2", "--json", str(ai_untrusted), str(altered), str(clip)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    signed, broken, unsigned = (json.loads(line) for line in result.stdout.splitlines())
    assert signed["provenance"]["present"] is True and signed["provenance"]["ai_declared"] is True
    assert signed["provenance"]["issuer"] == "MotionGuard Test Stranger"
    assert signed["provenance"]["state"] == "untrusted"
    assert (signed["decided_by"], signed["verdict"]) == ("provenance", "ai_generated")
    assert signed["content_verdict"] in ("ai_generated", "needs_review", "real") and 0 <= signed["score"] <= 1
    assert broken["provenance"]["state"] == "invalid" and broken["verdict"] != "real"
    assert "assertion.bmffHash.mismatch" in broken["provenance"]["problems"]
    assert unsigned["provenance"]["present"] is False and unsigned["decided_by"] == "content"
    assert unsigned["verdict"] == unsigned["content_verdict"]


def test_the_table_view_shows_provenance(ai_untrusted: Path) -> None:
    from detectors.cli import provenance_summary

    provenance = ProvenanceReader().read(ai_untrusted).to_dict()
    assert provenance_summary(provenance) == "untrusted AI (MotionGuard Test Stranger)"
    assert provenance_summary(Provenance().to_dict()) == ""
    broken = Provenance(present=True, state="invalid", problems=("assertion.bmffHash.mismatch",))
    assert provenance_summary(broken.to_dict()) == "invalid: assertion.bmffHash.mismatch"


def test_evaluate_keeps_provenance_decisions_apart(ai_untrusted: Path, clip: Path) -> None:
    """A signed AI clip the content misses is counted under provenance, not in the content's accuracy."""
    from types import SimpleNamespace

    from detectors.training.evaluate import provenance_split

    videos = [SimpleNamespace(item=SimpleNamespace(path=str(p))) for p in (ai_untrusted, clip, clip)]
    pred = SimpleNamespace(
        data=SimpleNamespace(videos=videos),
        video_is_ai=np.array([True, False, True]),
        video_pred_ai=lambda: np.array([False, False, False]),
    )
    split = provenance_split(pred, ProvenanceReader(), Policy())  # type: ignore[arg-type]
    assert split["states"]["untrusted"] == 1 and split["states"]["none"] == 2
    assert split["decided_by_provenance"] == {"videos": 1, "flagged": 1, "accuracy": 1.0}
    assert split["decided_by_content"] == {"videos": 2, "flagged": 0, "accuracy": 0.5}


def test_avi_carries_a_manifest_and_its_riff_chunk_is_bounded(videos: VideoCache, work: Path) -> None:
    avi = videos.video(codec="h264", container="avi", seconds=1, width=64, height=64, fps=10)
    chain = make_chain(work / "avi", "AVI")
    signed = work / "signed.avi"
    with (
        c2pa.Builder(manifest(AI)) as builder,
        chain.signer() as signer,
        open(avi, "rb") as src,
        open(signed, "w+b") as dst,
    ):
        builder.sign(signer, "video/x-msvideo", src, dst)
    provenance = ProvenanceReader().read(signed)
    assert provenance.state == "untrusted" and provenance.ai_declared
    assert ProvenanceReader(ProvenanceConfig(max_manifest_bytes=1024)).read(signed).problems == (TOO_LARGE,)


def test_a_large_file_of_another_container_is_not_read(videos: VideoCache) -> None:
    webm = videos.video(codec="vp9", seconds=1, width=64, height=64)
    assert webm.stat().st_size > 1024
    assert ProvenanceReader(ProvenanceConfig(max_manifest_bytes=1024)).read(webm) == Provenance()
