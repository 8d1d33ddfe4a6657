"""Turn an upload event's URI into a local file, inside the limits an operator set.

* ``file://`` URIs must resolve (symlinks followed) to a regular file inside one
  of the allowed roots: ``..`` tricks and symlinks that point out are refused.
* ``http://`` and ``https://`` downloads are limited in size and time.  The host
  is resolved once, every address is checked against private, loopback,
  link-local and other non-public ranges (unless allowed), and the connection
  goes to the checked address, so a second DNS answer cannot redirect it.
  Redirects are followed (at most 3) and each hop is checked the same way.

Failures that may pass (timeouts, connection errors, HTTP 5xx and 429) raise
:class:`SourceUnavailableError` and are retried with back-off by
:func:`fetch_with_retries`; everything else fails at once.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

from detectors.errors import (
    ForbiddenSourceError,
    SourceError,
    SourceUnavailableError,
    VideoNotFoundError,
    VideoTooLargeError,
)

if TYPE_CHECKING:
    from streamer.settings import WorkerSettings

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
_CHUNK_BYTES = 1 << 16

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class SourcePolicy:
    allowed_roots: tuple[Path, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allow_private_addresses: bool = False
    allowed_private_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_download_bytes: int = 2 * 1024**3
    timeout_seconds: float = 60.0
    download_dir: Path = Path(tempfile.gettempdir())

    @classmethod
    def create(
        cls,
        *,
        allowed_roots: tuple[str, ...] = (),
        allowed_hosts: tuple[str, ...] = (),
        allow_private_addresses: bool = False,
        allowed_private_addresses: tuple[str, ...] = (),
        max_download_bytes: int = 2 * 1024**3,
        timeout_seconds: float = 60.0,
        download_dir: str | None = None,
    ) -> SourcePolicy:
        return cls(
            allowed_roots=tuple(Path(root).resolve() for root in allowed_roots),
            allowed_hosts=tuple(host.lower() for host in allowed_hosts),
            allow_private_addresses=allow_private_addresses,
            allowed_private_networks=tuple(
                ipaddress.ip_network(net, strict=False) for net in allowed_private_addresses
            ),
            max_download_bytes=max_download_bytes,
            timeout_seconds=timeout_seconds,
            download_dir=Path(download_dir) if download_dir else Path(tempfile.gettempdir()),
        )

    @classmethod
    def from_settings(cls, settings: WorkerSettings, download_dir: str | None = None) -> SourcePolicy:
        """The worker's URI guards, from its settings (the review console uses the same ones);
        ``download_dir`` overrides where http(s) sources are downloaded."""
        return cls.create(
            allowed_roots=settings.allowed_roots,
            allowed_hosts=settings.allowed_hosts,
            allow_private_addresses=settings.allow_private_addresses,
            allowed_private_addresses=settings.allowed_private_addresses,
            max_download_bytes=settings.max_download_bytes,
            timeout_seconds=settings.download_timeout_seconds,
            download_dir=download_dir or settings.download_dir,
        )


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _address_allowed(address: IPAddress, policy: SourcePolicy) -> bool:
    if _is_public(address) or policy.allow_private_addresses:
        return True
    return any(address in network for network in policy.allowed_private_networks)


def resolve_local(uri: str, policy: SourcePolicy) -> Path:
    """A ``file://`` URI -> the real path of a regular file inside an allowed root."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ForbiddenSourceError(f"file URI {uri!r} names a host; only local files are read")
    if not policy.allowed_roots:
        raise ForbiddenSourceError("file:// URIs are not allowed: no allowed roots are configured")
    raw_path = Path(unquote(parts.path))
    if not raw_path.is_absolute():
        raise ForbiddenSourceError(f"file URI {uri!r} must hold an absolute path")
    try:
        real = raw_path.resolve(strict=True)
    except FileNotFoundError as e:
        raise VideoNotFoundError(f"{raw_path} does not exist") from e
    except (OSError, RuntimeError) as e:
        raise ForbiddenSourceError(f"cannot resolve {raw_path}: {e}") from e
    if not any(real == root or root in real.parents for root in policy.allowed_roots):
        raise ForbiddenSourceError(
            f"{raw_path} resolves to {real}, outside the allowed roots "
            f"({', '.join(str(r) for r in policy.allowed_roots)})"
        )
    if not real.is_file():
        raise ForbiddenSourceError(f"{real} is not a regular file")
    return real


def _vetted_address(host: str, port: int, policy: SourcePolicy) -> str:
    if policy.allowed_hosts and host.lower() not in policy.allowed_hosts:
        raise ForbiddenSourceError(f"host {host!r} is not in the allowed hosts")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise SourceUnavailableError(f"cannot resolve host {host!r}: {e}") from e
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise SourceUnavailableError(f"host {host!r} has no addresses")
    refused = [str(a) for a in addresses if not _address_allowed(a, policy)]
    if refused:
        raise ForbiddenSourceError(
            f"host {host!r} resolves to private, loopback or link-local address(es) {', '.join(refused)}; "
            "set allow_private_addresses or allowed_private_addresses to permit it"
        )
    return str(addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _download(uri: str, policy: SourcePolicy, target: Path) -> None:
    deadline = time.monotonic() + policy.timeout_seconds
    current = uri
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ForbiddenSourceError(f"redirect to {current!r} is not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _vetted_address(parts.hostname, port, policy)
        connection_class = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        connection = connection_class(parts.hostname, port, address, policy.timeout_seconds)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            connection.request("GET", path, headers={"User-Agent": "motionguard", "Accept": "*/*"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise SourceError(f"HTTP {response.status} from {current} without a Location")
                current = urljoin(current, location)
                continue
            if response.status == 404 or response.status == 410:
                raise VideoNotFoundError(f"HTTP {response.status}: {current} does not exist")
            if response.status >= 500 or response.status == 429:
                raise SourceUnavailableError(f"HTTP {response.status} from {current}")
            if response.status != 200:
                raise SourceError(f"HTTP {response.status} from {current}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > policy.max_download_bytes:
                raise VideoTooLargeError(
                    f"{current} is {int(declared)} bytes, over the {policy.max_download_bytes}-byte limit"
                )
            received = 0
            with target.open("wb") as out:
                while chunk := response.read(_CHUNK_BYTES):
                    received += len(chunk)
                    if received > policy.max_download_bytes:
                        raise VideoTooLargeError(f"{current} sent more than the {policy.max_download_bytes}-byte limit")
                    if time.monotonic() > deadline:
                        raise SourceUnavailableError(
                            f"download of {current} took longer than {policy.timeout_seconds} s"
                        )
                    out.write(chunk)
            return
        except (OSError, http.client.HTTPException) as e:
            raise SourceUnavailableError(f"download of {current} failed: {e}") from e
        finally:
            connection.close()
    raise SourceError(f"{uri} redirected more than {MAX_REDIRECTS} times")


@contextlib.contextmanager
def open_source(uri: str, policy: SourcePolicy) -> Iterator[Path]:
    """Yield a local path for ``uri``; downloaded copies are deleted afterwards."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "file":
        yield resolve_local(uri, policy)
        return
    if scheme not in ("http", "https"):
        raise ForbiddenSourceError(
            f"URI scheme {scheme or '(none)'!r} is not allowed; use file://, http:// or https://"
        )
    policy.download_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="video-", dir=policy.download_dir)
    os.close(handle)
    target = Path(name)
    try:
        _download(uri, policy, target)
        yield target
    finally:
        target.unlink(missing_ok=True)


def fetch_with_retries(
    uri: str,
    policy: SourcePolicy,
    retries: int,
    backoff_seconds: float,
    on_retry: Callable[[SourceUnavailableError], None] | None = None,
) -> contextlib.AbstractContextManager[Path]:
    """Like :func:`open_source`, retrying transient failures with exponential back-off."""
    attempt = 0
    while True:
        try:
            stack = contextlib.ExitStack()
            path = stack.enter_context(open_source(uri, policy))
        except SourceUnavailableError as e:
            if attempt >= retries:
                raise
            delay = backoff_seconds * (2**attempt)
            attempt += 1
            if on_retry is not None:
                on_retry(e)
            logger.info("transient failure fetching %s (%s); retry %d in %.2f s", uri, e.message, attempt, delay)
            time.sleep(delay)
            continue
        return _Opened(stack, path)


class _Opened(contextlib.AbstractContextManager[Path]):
    def __init__(self, stack: contextlib.ExitStack, path: Path) -> None:
        self._stack = stack
        self._path = path

    def __enter__(self) -> Path:
        return self._path

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()
