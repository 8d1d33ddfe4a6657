"""URI guards: file roots, symlink escapes, private addresses, download limits, retries."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from detectors.errors import (
    ForbiddenSourceError,
    SourceUnavailableError,
    VideoNotFoundError,
    VideoTooLargeError,
)
from streamer.sources import SourcePolicy, fetch_with_retries, open_source

PAYLOAD = b"\x00\x00\x00\x18ftypmp42" + b"v" * 5000


class _Handler(http.server.BaseHTTPRequestHandler):
    failures_left = 0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/video.mp4":
            self._send(200, PAYLOAD)
        elif self.path == "/big.mp4":
            self._send(200, b"x" * 20_000)
        elif self.path == "/big-no-length.mp4":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 20_000)
        elif self.path == "/flaky.mp4":
            if type(self).failures_left > 0:
                type(self).failures_left -= 1
                self._send(503, b"busy")
            else:
                self._send(200, PAYLOAD)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/video.mp4")
            self.end_headers()
        elif self.path == "/redirect-to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        else:
            self._send(404, b"no")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def touch(uri: str, policy: SourcePolicy) -> None:
    """Open a source and let it go (errors are what the caller looks for)."""
    with open_source(uri, policy):
        pass


def local_policy(tmp_path: Path, **kwargs: object) -> SourcePolicy:
    defaults: dict[str, object] = {
        "allowed_private_addresses": ("127.0.0.1/32",),
        "max_download_bytes": 10_000,
        "timeout_seconds": 5.0,
        "download_dir": str(tmp_path / "downloads"),
    }
    defaults.update(kwargs)
    return SourcePolicy.create(**defaults)  # type: ignore[arg-type]


# -- file:// -------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "uploads"
    secret = tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    (allowed / "ok.mp4").write_bytes(PAYLOAD)
    (secret / "key.pem").write_text("private")
    return allowed, secret


def test_file_inside_an_allowed_root_is_read(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    policy = SourcePolicy.create(allowed_roots=(str(allowed),))
    with open_source((allowed / "ok.mp4").as_uri(), policy) as path:
        assert path.read_bytes() == PAYLOAD


def test_path_traversal_is_refused(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    policy = SourcePolicy.create(allowed_roots=(str(allowed),))
    with pytest.raises(ForbiddenSourceError, match="outside the allowed roots"):
        touch(f"file://{allowed}/../secret/key.pem", policy)


def test_symlink_escape_is_refused(roots: tuple[Path, Path]) -> None:
    allowed, secret = roots
    (allowed / "innocent.mp4").symlink_to(secret / "key.pem")
    policy = SourcePolicy.create(allowed_roots=(str(allowed),))
    with pytest.raises(ForbiddenSourceError, match="outside the allowed roots"):
        touch((allowed / "innocent.mp4").as_uri(), policy)


def test_file_uris_need_configured_roots(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    with pytest.raises(ForbiddenSourceError, match="no allowed roots"):
        touch((allowed / "ok.mp4").as_uri(), SourcePolicy.create())


def test_missing_file_is_not_found(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    policy = SourcePolicy.create(allowed_roots=(str(allowed),))
    with pytest.raises(VideoNotFoundError), open_source((allowed / "gone.mp4").as_uri(), policy):
        pass


def test_directories_and_remote_file_hosts_are_refused(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    (allowed / "sub").mkdir()
    policy = SourcePolicy.create(allowed_roots=(str(allowed),))
    with pytest.raises(ForbiddenSourceError, match="regular file"):
        touch((allowed / "sub").as_uri(), policy)
    with pytest.raises(ForbiddenSourceError, match="names a host"):
        touch("file://fileserver/share/a.mp4", policy)


@pytest.mark.parametrize("uri", ["ftp://example.com/a.mp4", "gopher://x/", "/plain/path.mp4", "data:,abc"])
def test_other_schemes_are_refused(uri: str) -> None:
    with pytest.raises(ForbiddenSourceError, match="scheme"), open_source(uri, SourcePolicy.create()):
        pass


# -- http(s):// ------------------------------------------------------------------------


def test_download_within_limits_is_deleted_afterwards(server: str, tmp_path: Path) -> None:
    with open_source(f"{server}/video.mp4", local_policy(tmp_path)) as path:
        assert path.read_bytes() == PAYLOAD
        kept = path
    assert not kept.exists()


def test_loopback_is_refused_by_default(server: str, tmp_path: Path) -> None:
    policy = local_policy(tmp_path, allowed_private_addresses=())
    with pytest.raises(ForbiddenSourceError, match="loopback"):
        touch(f"{server}/video.mp4", policy)


@pytest.mark.parametrize(
    "uri",
    [
        "http://10.1.2.3/a.mp4",
        "http://192.168.0.10/a.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.mp4",
        "http://[::ffff:127.0.0.1]/a.mp4",
        "http://0.0.0.0/a.mp4",
    ],
)
def test_private_and_link_local_addresses_are_refused(uri: str, tmp_path: Path) -> None:
    with pytest.raises(ForbiddenSourceError, match="private, loopback or link-local"):
        touch(uri, local_policy(tmp_path, allowed_private_addresses=()))


def test_redirect_to_a_private_address_is_refused(server: str, tmp_path: Path) -> None:
    with pytest.raises(ForbiddenSourceError, match=r"169\.254\.169\.254"):
        touch(f"{server}/redirect-to-metadata", local_policy(tmp_path))


def test_redirects_are_followed_and_checked(server: str, tmp_path: Path) -> None:
    with open_source(f"{server}/redirect", local_policy(tmp_path)) as path:
        assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("name", ["big.mp4", "big-no-length.mp4"])
def test_oversize_download_is_refused_and_removed(server: str, tmp_path: Path, name: str) -> None:
    policy = local_policy(tmp_path)
    with pytest.raises(VideoTooLargeError, match="limit"), open_source(f"{server}/{name}", policy):
        pass
    assert list((tmp_path / "downloads").iterdir()) == []


def test_host_allow_list(server: str, tmp_path: Path) -> None:
    with pytest.raises(ForbiddenSourceError, match="allowed hosts"):
        touch(f"{server}/video.mp4", local_policy(tmp_path, allowed_hosts=("cdn.example.com",)))


def test_not_found_is_permanent(server: str, tmp_path: Path) -> None:
    with pytest.raises(VideoNotFoundError), open_source(f"{server}/missing.mp4", local_policy(tmp_path)):
        pass


def test_transient_failures_are_retried_with_backoff(server: str, tmp_path: Path) -> None:
    _Handler.failures_left = 2
    with fetch_with_retries(f"{server}/flaky.mp4", local_policy(tmp_path), retries=3, backoff_seconds=0.01) as path:
        assert path.read_bytes() == PAYLOAD
    assert _Handler.failures_left == 0


def test_retries_give_up_eventually(server: str, tmp_path: Path) -> None:
    _Handler.failures_left = 5
    with (
        pytest.raises(SourceUnavailableError, match="503"),
        fetch_with_retries(f"{server}/flaky.mp4", local_policy(tmp_path), retries=2, backoff_seconds=0.01),
    ):
        pass
    assert _Handler.failures_left == 2
