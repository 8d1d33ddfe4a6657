"""Content Credentials (C2PA): read and verify a video's manifest store, offline.

Generators increasingly sign what they make with a C2PA manifest whose
``c2pa.actions`` assertion names the IPTC *digital source type* of the content.
:class:`ProvenanceReader` reads the manifest store of a file with
`c2pa-python <https://github.com/contentauth/c2pa-python>`_ (the Content
Authenticity Initiative's binding of c2pa-rs), the only C2PA parser used here,
and condenses the library's report into a :class:`Provenance`.

Containers.  The library reads manifests embedded in ISO BMFF files (MP4, MOV,
M4V: a top-level ``uuid`` box), RIFF (AVI, WAV), and image formats (GIF among
the inputs the sampler accepts).  Matroska/WebM cannot carry a manifest: the
library reports "type is unsupported" and the state is ``none``.

Offline.  Reading never touches the network: remote manifest fetching and OCSP
are off, and the library's network allow-list is empty
(``core.allowed_network_hosts: []``).  ``tests/detectors/test_provenance.py``
proves that no connection is attempted, with a listener the manifest points to.

Bounded.  A hostile file could carry a huge manifest box, or one whose header
claims a huge size.  In BMFF files the top-level box headers are walked (8 or
16 bytes each, at most :data:`MAX_TOP_LEVEL_BOXES` of them; no JUMBF or CBOR is
parsed here), in RIFF files the top-level chunk headers, and a C2PA box or
chunk larger than ``max_manifest_bytes`` (8 MiB) is refused before the library
sees the file: state ``unreadable`` with problem ``motionguard.manifestTooLarge``.
Files of other containers go to the library only when the whole file is within
``max_manifest_bytes``; larger ones are not read (state ``none``): WebM and
Matroska cannot carry a manifest, and a GIF's store cannot be measured without
parsing it.  Whatever
is not read leaves the verdict to the content, which is the safe direction.
Apart from the manifest, the library hashes the content the manifest binds
(linear in the file size, which the sampler's limits already bound).

States.  ``none`` (no manifest), ``trusted`` (intact, and the signer chains to a
configured trust anchor), ``untrusted`` (intact, but the signer is not trusted
or its certificate expired), ``invalid`` (a content binding or signature
fails), ``unreadable`` (the library cannot parse the manifest store).  No
trust anchor ships by default: every intact manifest is ``untrusted`` until an
operator configures anchors (e.g. the C2PA trust list, see the README).
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import c2pa

from detectors.errors import ProvenanceConfigError

logger = logging.getLogger(__name__)

ProvenanceState = Literal["none", "trusted", "untrusted", "invalid", "unreadable"]
PROVENANCE_STATES: tuple[ProvenanceState, ...] = ("none", "trusted", "untrusted", "invalid", "unreadable")

IPTC_DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/"

#: IPTC digital source types that declare generated content (IPTC NewsCodes
#: "Digital Source Type" vocabulary, https://cv.iptc.org/newscodes/digitalsourcetype/):
#:
#: * ``trainedAlgorithmicMedia``: created by a model trained on sampled content
#:   (generative AI: text-to-video, text-to-image);
#: * ``compositeWithTrainedAlgorithmicMedia``: a mix of captured or human-made
#:   content with generative AI output (e.g. generative fill, inpainting);
#: * ``algorithmicMedia``: created purely by an algorithm not based on sampled
#:   training data (procedural, fractal or rendered synthetic content);
#: * ``compositeSynthetic``: a composite that includes synthetic elements.
#:
#: Not counted: ``algorithmicallyEnhanced`` (capture improved by an algorithm,
#: e.g. denoising), ``digitalCreation`` (made by a person with software),
#: ``dataDrivenMedia``, ``composite``, ``humanEdits`` and the capture types.
GENERATIVE_SOURCE_TYPES = frozenset(
    {
        "trainedAlgorithmicMedia",
        "compositeWithTrainedAlgorithmicMedia",
        "algorithmicMedia",
        "compositeSynthetic",
    }
)
#: Digital source types that claim a camera capture.
CAPTURE_SOURCE_TYPES = frozenset({"digitalCapture", "computationalCapture"})

#: Failure codes that say only that the signing credential is not trusted (or
#: no longer valid): the manifest itself is intact, so the state is ``untrusted``.
CREDENTIAL_ONLY_FAILURES = frozenset(
    {
        "signingCredential.untrusted",
        "signingCredential.expired",
        "signingCredential.ocsp.unknown",
    }
)

#: The ``uuid`` of the top-level BMFF box that holds a C2PA manifest store.
C2PA_BMFF_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
#: At most this many top-level BMFF boxes are looked at (a real MP4 has < 10).
MAX_TOP_LEVEL_BOXES = 4096
#: Actions listed in a verdict (the first ones of the active manifest).
MAX_LISTED_ACTIONS = 8

TOO_LARGE = "motionguard.manifestTooLarge"
UNREADABLE = "motionguard.unreadable"


@dataclass(frozen=True)
class ProvenanceConfig:
    """How manifests are verified.

    ``trust_anchor_paths``: PEM files of root (or intermediate) certificates; a
    signer that chains to one is ``trusted``.  ``allowed_list_paths``: PEM files
    of end-entity certificates trusted as they are.  ``max_manifest_bytes``
    bounds the manifest store handed to the library.  ``enabled=False`` skips
    reading (every verdict says ``present: false``).
    """

    trust_anchor_paths: tuple[str, ...] = ()
    allowed_list_paths: tuple[str, ...] = ()
    max_manifest_bytes: int = 8 * 1024 * 1024
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.max_manifest_bytes < 1:
            raise ValueError(f"max_manifest_bytes must be >= 1, got {self.max_manifest_bytes}")


@dataclass(frozen=True)
class Provenance:
    """What a file's Content Credentials say, as it appears in every verdict."""

    present: bool = False
    state: ProvenanceState = "none"
    ai_declared: bool = False
    digital_source_type: str | None = None
    issuer: str | None = None
    common_name: str | None = None
    claim_generator: str | None = None
    signed_at: str | None = None
    actions: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def intact(self) -> bool:
        """The manifest verifies (signature and content binding), trusted or not."""
        return self.state in ("trusted", "untrusted")

    @property
    def capture_declared(self) -> bool:
        """The active manifest claims a camera capture (and declares no AI)."""
        return not self.ai_declared and source_type_name(self.digital_source_type) in CAPTURE_SOURCE_TYPES

    def to_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "state": self.state,
            "ai_declared": self.ai_declared,
            "digital_source_type": self.digital_source_type,
            "issuer": self.issuer,
            "common_name": self.common_name,
            "claim_generator": self.claim_generator,
            "signed_at": self.signed_at,
            "actions": list(self.actions),
            "problems": list(self.problems),
        }


class ProvenanceSource(Protocol):
    """Anything that says what a file's Content Credentials declare."""

    def read(self, path: str | os.PathLike[str]) -> Provenance: ...


def source_type_name(value: str | None) -> str | None:
    """``http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia`` -> ``trainedAlgorithmicMedia``."""
    if not value:
        return None
    return value.rstrip("/").rsplit("/", 1)[-1]


def _read_pem_files(paths: Iterable[str], what: str) -> str:
    texts = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise ProvenanceConfigError(f"cannot read {what} {path}: {e}") from e
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ProvenanceConfigError(f"{what} {path} holds no PEM certificate")
        texts.append(text.strip() + "\n")
    return "".join(texts)


def library_settings(config: ProvenanceConfig) -> dict[str, Any]:
    """The c2pa-rs settings used for every read: verification on, network off."""
    settings: dict[str, Any] = {
        "verify": {
            "verify_after_reading": True,
            "verify_trust": True,
            "verify_timestamp_trust": True,
            "remote_manifest_fetch": False,
            "ocsp_fetch": False,
        },
        "core": {"allowed_network_hosts": []},
    }
    trust: dict[str, str] = {}
    anchors = _read_pem_files(config.trust_anchor_paths, "trust anchor")
    if anchors:
        trust["trust_anchors"] = anchors
    allowed = _read_pem_files(config.allowed_list_paths, "allowed certificate")
    if allowed:
        trust["allowed_list"] = allowed
    if trust:
        settings["trust"] = trust
    return settings


class ProvenanceReader:
    """Reads Content Credentials with c2pa-python; never raises for a bad file.

    Safe to share between threads: the library settings are built once and each
    read gets its own library context.
    """

    def __init__(self, config: ProvenanceConfig | None = None) -> None:
        self.config = config or ProvenanceConfig()
        self.settings_json = json.dumps(library_settings(self.config))

    def read(self, path: str | os.PathLike[str]) -> Provenance:
        """The provenance of the file at ``path`` (``state: none`` when it has none)."""
        if not self.config.enabled:
            return Provenance()
        try:
            refused = self._refuse_oversized(path)
        except OSError as e:
            logger.debug("provenance: cannot open %s: %s", path, e)
            return Provenance()
        if refused is not None:
            return refused
        try:
            with c2pa.Context.from_json(self.settings_json) as context, open(path, "rb") as stream:
                reader = c2pa.Reader.try_create(None, stream, None, context)
                if reader is None:
                    return Provenance()
                with reader:
                    report = json.loads(reader.json())
        except c2pa.C2paError.NotSupported:
            return Provenance()  # a container that cannot carry a manifest (e.g. WebM)
        except c2pa.C2paError as e:
            logger.info("provenance: unreadable manifest in %s: %s", path, e)
            return Provenance(present=True, state="unreadable", problems=(_error_code(e),))
        except (OSError, ValueError) as e:
            logger.info("provenance: cannot read %s: %s", path, e)
            return Provenance(present=True, state="unreadable", problems=(UNREADABLE,))
        return summarize(report)

    def _refuse_oversized(self, path: str | os.PathLike[str]) -> Provenance | None:
        """A verdict without the library when the manifest store could be too large to read."""
        limit = self.config.max_manifest_bytes
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) >= 8 and head[4:8] == b"ftyp":
                store = c2pa_box_size(f, size)
            elif head[:4] == b"RIFF":
                store = c2pa_riff_chunk_size(f, size)
            elif size <= limit:
                return None
            else:
                # Neither BMFF nor RIFF: a video container the library cannot read (WebM,
                # Matroska: state none), or a GIF/image whose store cannot be measured without
                # parsing it.  Not read: the content decides, as it does for ``none``.
                logger.info("provenance: %s is larger than %d bytes and cannot be measured, not read", path, limit)
                return Provenance()
        if store is None or store <= limit:
            return None
        logger.info("provenance: manifest store of %s exceeds %d bytes, not read", path, limit)
        return Provenance(present=True, state="unreadable", problems=(TOO_LARGE,))


def c2pa_box_size(f: Any, file_size: int) -> int | None:
    """Size in bytes of the largest top-level C2PA ``uuid`` box of a BMFF file, if any.

    Only box headers are read.  A header that points past the end of the file
    counts as a box of that declared size (so a lying header is refused too).
    """
    offset = 0
    found: int | None = None
    for _ in range(MAX_TOP_LEVEL_BOXES):
        if offset + 8 > file_size:
            break
        f.seek(offset)
        header = f.read(8)
        if len(header) < 8:
            break
        size, kind = struct.unpack(">I4s", header)
        header_size = 8
        if size == 1:
            large = f.read(8)
            if len(large) < 8:
                break
            (size,) = struct.unpack(">Q", large)
            header_size = 16
        elif size == 0:
            size = file_size - offset
        if size < header_size:
            break
        if kind == b"uuid" and f.read(16) == C2PA_BMFF_UUID:
            found = max(found or 0, size)
        offset += size
    return found


def c2pa_riff_chunk_size(f: Any, file_size: int) -> int | None:
    """Size in bytes of the largest ``C2PA`` chunk of a RIFF file (AVI, WAV), if any.

    Walks the chunk headers of the top-level RIFF form only (8 bytes each).
    """
    offset = 12  # "RIFF", size, form type
    found: int | None = None
    for _ in range(MAX_TOP_LEVEL_BOXES):
        if offset + 8 > file_size:
            break
        f.seek(offset)
        header = f.read(8)
        if len(header) < 8:
            break
        kind, size = struct.unpack("<4sI", header)
        if kind == b"C2PA":
            found = max(found or 0, size)
        offset += 8 + size + (size & 1)
    return found


def _error_code(error: Exception) -> str:
    """A problem code for a library error, e.g. ``c2pa.Verify`` for ``C2paError.Verify``."""
    message = str(error)
    kind = message.split(":", 1)[0].strip() if ":" in message else ""
    return f"c2pa.{kind}" if kind.isidentifier() else UNREADABLE


def summarize(report: Mapping[str, Any]) -> Provenance:
    """Condense the library's JSON report (``Reader.json()``) into a :class:`Provenance`."""
    manifests = report.get("manifests") or {}
    active = manifests.get(report.get("active_manifest") or "")
    problems = tuple(
        dict.fromkeys(
            str(status["code"])
            for status in report.get("validation_status") or ()
            if isinstance(status, Mapping) and status.get("code")
        )
    )
    if not isinstance(active, Mapping):
        return Provenance(present=True, state="unreadable", problems=problems or (UNREADABLE,))
    state = _state(str(report.get("validation_state") or ""), problems)
    actions = list(_actions(active))
    generative = [t for _, t in actions if source_type_name(t) in GENERATIVE_SOURCE_TYPES]
    declared = [t for _, t in actions if t]
    signature = active.get("signature_info") or {}
    return Provenance(
        present=True,
        state=state,
        ai_declared=bool(generative),
        digital_source_type=(generative or declared or [None])[0],
        issuer=_text(signature.get("issuer")),
        common_name=_text(signature.get("common_name")),
        claim_generator=_claim_generator(active),
        signed_at=_text(signature.get("time")),
        actions=tuple(name for name, _ in actions[:MAX_LISTED_ACTIONS]),
        problems=problems,
    )


def _state(validation_state: str, problems: Sequence[str]) -> ProvenanceState:
    if validation_state == "Trusted":
        return "trusted"
    if validation_state == "Valid":
        return "untrusted"
    if problems and all(code in CREDENTIAL_ONLY_FAILURES for code in problems):
        return "untrusted"
    return "invalid"


def _actions(manifest: Mapping[str, Any]) -> Iterable[tuple[str, str | None]]:
    for assertion in manifest.get("assertions") or ():
        if not isinstance(assertion, Mapping) or not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        data = assertion.get("data") or {}
        for action in data.get("actions") or () if isinstance(data, Mapping) else ():
            if isinstance(action, Mapping):
                yield str(action.get("action", "")), _text(action.get("digitalSourceType"))


def _claim_generator(manifest: Mapping[str, Any]) -> str | None:
    infos = manifest.get("claim_generator_info")
    if isinstance(infos, list) and infos and isinstance(infos[0], Mapping):
        name = _text(infos[0].get("name"))
        version = _text(infos[0].get("version"))
        return f"{name}/{version}" if name and version else name
    return _text(manifest.get("claim_generator"))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
