"""The Hugging Face hub as MotionGuard sees it: where it is, and one clear line when it fails.

Pretrained weights (through open_clip) and public datasets (``motionguard dataset
download``) come from the hub that ``huggingface_hub`` is configured for: the
``HF_ENDPOINT`` environment variable (a mirror), else ``https://huggingface.co``.
``HF_HUB_OFFLINE=1`` makes it use its cache (``HF_HOME`` / ``HF_HUB_CACHE``) only.

When the hub cannot be reached, ``huggingface_hub`` logs a warning for every
attempt and retry and open_clip logs its own error on the root logger before
raising; a user then reads the same failure a dozen times.  While a download
runs inside :func:`quiet_hub_retries` those records are held back (logged at
DEBUG by this module instead) and the first failed request is kept, so the
caller can raise a single :class:`~detectors.errors.MotionGuardError` whose
message says what was tried, why it failed and what to do (:data:`HUB_HINT`).

Nothing here special-cases a particular server: the endpoint is whatever
``huggingface_hub`` itself uses.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

#: What a user can do when the hub is out of reach.
HUB_HINT = (
    "check this machine's network access to the hub, or set HF_ENDPOINT to a reachable mirror; "
    "without network, set HF_HUB_OFFLINE=1 with a cache (HF_HOME) that already holds the files"
)

#: huggingface_hub's logger of per-request failures and retries.
_HUB_HTTP_LOGGER = "huggingface_hub.utils._http"
_THROWN = re.compile(r"^'(?P<error>.*)' thrown while requesting (?P<method>\S+) (?P<url>\S+)$", re.DOTALL)
_HTTP_ERROR = re.compile(r"^HTTP Error (?P<status>\d+) thrown while requesting (?P<method>\S+) (?P<url>\S+)$")
_RETRY_PREFIXES = ("Retrying in ", "Rate limited. Waiting ")


def hub_endpoint() -> str:
    """The hub URL ``huggingface_hub`` talks to (``HF_ENDPOINT``, read when it was imported)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def hub_offline() -> bool:
    """Whether ``huggingface_hub`` runs in offline mode (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache() -> str:
    """The folder ``huggingface_hub`` caches downloads in (``HF_HUB_CACHE`` or under ``HF_HOME``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


class HubNoise(logging.Filter):
    """A logging filter that holds back the per-attempt noise of one hub download.

    It drops ``huggingface_hub``'s "thrown while requesting" / "HTTP Error" /
    "Retrying in" warnings and open_clip's root-logger errors (its report of a
    failed download; its info and warnings pass), re-logs each at DEBUG on this
    module's logger, and remembers the first failed request as
    :attr:`first_failure` (``"HEAD URL: reason"``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.first_failure: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name == _HUB_HTTP_LOGGER and record.levelno == logging.WARNING:
            failure = _describe_request_failure(message)
            if failure is None and not message.startswith(_RETRY_PREFIXES):
                return True
            if failure is not None and self.first_failure is None:
                self.first_failure = failure
            logger.debug("hub: %s", message)
            return False
        if (
            record.name == "root"
            and record.levelno >= logging.ERROR
            and Path(record.pathname).parent.name == "open_clip"
        ):
            logger.debug("open_clip: %s", message)
            return False
        return True


def _describe_request_failure(message: str) -> str | None:
    match = _THROWN.match(message)
    if match is not None:
        return f"{match['method']} {match['url']}: {match['error']}"
    match = _HTTP_ERROR.match(message)
    if match is not None:
        return f"{match['method']} {match['url']}: HTTP {match['status']}"
    return None


@contextmanager
def quiet_hub_retries() -> Iterator[HubNoise]:
    """Hold back hub retry noise (see :class:`HubNoise`) for the duration of the block."""
    noise = HubNoise()
    hub_http = logging.getLogger(_HUB_HTTP_LOGGER)
    root = logging.getLogger()
    hub_http.addFilter(noise)
    root.addFilter(noise)
    try:
        yield noise
    finally:
        hub_http.removeFilter(noise)
        root.removeFilter(noise)


def is_hub_failure(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from) is a hub or network failure."""
    from huggingface_hub import errors as hub_errors

    hub_types: tuple[type[BaseException], ...] = (
        hub_errors.HfHubHTTPError,
        hub_errors.LocalEntryNotFoundError,
        hub_errors.OfflineModeIsEnabled,
    )
    try:
        import httpx

        hub_types = (*hub_types, httpx.HTTPError)
    except ImportError:  # pragma: no cover - httpx comes with huggingface_hub
        pass
    return any(isinstance(e, hub_types) for e in _chain(error))


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _failed_request(error: BaseException) -> str | None:
    """``"GET URL: reason"`` of the first network error in ``error``'s chain that knows its request."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with huggingface_hub
        return None
    for e in _chain(error):
        if isinstance(e, httpx.RequestError):
            try:
                request = e.request
            except RuntimeError:  # raised without a request attached
                continue
            return f"{request.method} {request.url}: {first_line(e)}"
    return None


def first_line(error: BaseException) -> str:
    """The first line of ``str(error)``, or its type name when it has no text."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def hub_failure_message(what: str, error: BaseException, noise: HubNoise | None = None) -> str:
    """One line: ``what`` could not be had from the hub, the first failed request (or cause), the hint."""
    reason = (noise.first_failure if noise is not None else None) or _failed_request(error)
    if reason is None:
        reason = first_line(list(_chain(error))[-1])
    reason = reason.rstrip(".")
    if hub_offline():
        failed = (
            f"could not find {what} in the local cache {hub_cache()} (HF_HUB_OFFLINE is set: the hub was not asked)"
        )
    else:
        failed = f"could not download {what} from the Hugging Face hub at {hub_endpoint()}"
    return f"{failed}: {reason}. To fix: {HUB_HINT}"
