"""A local HTTP server that answers like the Hugging Face hub, for offline tests.

``huggingface_hub`` is pointed at it through its own setting, the ``HF_ENDPOINT``
environment variable (read when ``huggingface_hub`` is imported, so the commands
under test run in subprocesses).  The server answers the requests that
``hf_hub_download`` and ``snapshot_download`` make:

* ``GET /api/{models|datasets}/{repo}`` and ``.../revision/{rev}``: the repo info
  JSON (``id``, ``sha``, ``siblings`` with ``rfilename``).
* ``HEAD``/``GET`` ``/{repo}/resolve/{rev}/{file}`` (models) and
  ``/datasets/{repo}/resolve/{rev}/{file}``: every file is served the way the hub
  serves LFS files, as a ``302`` to an absolute ``/lfs/{sha256}`` URL with the
  ``X-Repo-Commit``, ``X-Linked-Etag`` and ``X-Linked-Size`` headers that
  ``get_hf_file_metadata`` reads.
* ``HEAD``/``GET`` ``/lfs/{sha256}``: the bytes.

Unknown repos answer ``404`` with ``X-Error-Code: RepoNotFound``, unknown files
``404`` with ``X-Error-Code: EntryNotFound``, as the hub does.  Every request is
recorded in :attr:`HubMirror.requests` so tests can check what was asked.

Typical use::

    with HubMirror() as hub:
        hub.add_file("model", "timm/some-model", "open_clip_model.safetensors", path)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf")}
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import unquote, urlsplit

RepoType = Literal["model", "dataset"]

_API = re.compile(r"^/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_RESOLVE = re.compile(r"^/(?:(?P<kind>datasets)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_LFS = re.compile(r"^/lfs/(?P<sha>[0-9a-f]{64})$")


@dataclass
class _Repo:
    files: dict[str, tuple[Path, str, int]] = field(default_factory=dict)  # rfilename -> (path, sha256, size)

    def commit(self) -> str:
        """A 40-hex commit id that changes whenever a file is added or changed."""
        digest = hashlib.sha1()
        for name, (_, sha, _) in sorted(self.files.items()):
            digest.update(f"{name}\0{sha}\n".encode())
        return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class HubMirror:
    """A threaded local hub; use as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._repos: dict[tuple[RepoType, str], _Repo] = {}
        self._blobs: dict[str, Path] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_file(self, repo_type: RepoType, repo_id: str, rfilename: str, path: Path) -> str:
        """Serve ``path`` as ``rfilename`` of ``repo_id``; return its sha256."""
        sha = _sha256(path)
        with self._lock:
            self._repos.setdefault((repo_type, repo_id), _Repo()).files[rfilename] = (path, sha, path.stat().st_size)
            self._blobs[sha] = path
        return sha

    def add_folder(self, repo_type: RepoType, repo_id: str, folder: Path) -> list[str]:
        """Serve every file under ``folder`` by its relative POSIX path; return the names."""
        names = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            self.add_file(repo_type, repo_id, name, path)
            names.append(name)
        return names

    def commit(self, repo_type: RepoType, repo_id: str) -> str:
        with self._lock:
            return self._repos[(repo_type, repo_id)].commit()

    def asked(self, method: str, fragment: str) -> bool:
        """Whether a ``method`` request whose path contains ``fragment`` was received."""
        with self._lock:
            return any(m == method and fragment in p for m, p in self.requests)

    def start(self) -> HubMirror:
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-mirror", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> HubMirror:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- request handling ---------------------------------------------------------

    def _lookup(self, kind: str | None, repo_id: str) -> _Repo | None:
        repo_type: RepoType = "dataset" if kind == "datasets" else "model"
        with self._lock:
            return self._repos.get((repo_type, repo_id))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Requests are recorded in ``HubMirror.requests`` instead of printed."""

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, *, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                with mirror._lock:
                    mirror.requests.append((self.command, path))
                if match := _API.match(path):
                    self._repo_info(match["kind"], match["repo"], match["rev"] or "main", body)
                elif match := _RESOLVE.match(path):
                    self._resolve(match["kind"], match["repo"], match["rev"], match["file"])
                elif (match := _LFS.match(path)) and match["sha"] in mirror._blobs:
                    self._blob(mirror._blobs[match["sha"]], match["sha"], body)
                else:
                    self._error(404, "EntryNotFound", f"no route for {path}")

            def _repo_at(self, kind: str | None, repo_id: str, rev: str) -> tuple[_Repo, str] | None:
                """The repository and its commit at ``rev``, or None after answering 404 like the hub."""
                repo = mirror._lookup(kind, repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", f"repository {repo_id} not found")
                    return None
                commit = repo.commit()
                if rev not in ("main", commit):
                    self._error(404, "RevisionNotFound", f"revision {rev} not found")
                    return None
                return repo, commit

            def _repo_info(self, kind: str, repo_id: str, rev: str, body: bool) -> None:
                found = self._repo_at(kind, repo_id, rev)
                if found is None:
                    return
                repo, commit = found
                info = {
                    "id": repo_id,
                    "sha": commit,
                    "private": False,
                    "disabled": False,
                    "gated": False,
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)],
                }
                data = json.dumps(info).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _resolve(self, kind: str | None, repo_id: str, rev: str, rfilename: str) -> None:
                found = self._repo_at(kind, repo_id, rev)
                if found is None:
                    return
                repo, commit = found
                if rfilename not in repo.files:
                    self._error(404, "EntryNotFound", f"{rfilename} not found in {repo_id}")
                    return
                _, sha, size = repo.files[rfilename]
                self.send_response(302)
                self.send_header("Location", f"{mirror.url}/lfs/{sha}")
                self.send_header("X-Repo-Commit", commit)
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(size))
                self.send_header("ETag", f'"{sha}"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _blob(self, path: Path, sha: str, body: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(path.stat().st_size))
                self.send_header("ETag", f'"{sha}"')
                self.end_headers()
                if body:
                    with path.open("rb") as fh:
                        shutil.copyfileobj(fh, self.wfile, 1 << 20)

            def _error(self, status: int, code: str, message: str) -> None:
                data = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        return Handler
