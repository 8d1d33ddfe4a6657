"""Run a real ``motionguard review`` process against the test broker, and sign in to it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from motionguard_dev.harness import REPO, Topics, free_port

#: Clients made by :meth:`ConsoleProcess.client`; the package's conftest closes them after each test.
OPEN_CLIENTS: list[httpx.Client] = []

SECRET = "test-session-secret-0123456789abcdefghijklmnop"
PASSWORD = "correct horse battery"


@dataclass
class ConsoleProcess:
    bootstrap: str
    topics: Topics
    allowed_root: Path
    users_file: Path
    log_dir: Path
    claim_seconds: float = 120.0
    login_rate_limit: str = "100/minute"
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready_seconds: float = 60.0) -> ConsoleProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOTIONGUARD_")}
        env.update(self.topics.env())
        env.update(
            {
                "MOTIONGUARD_BROKER": f"kafka://{self.bootstrap}",
                "MOTIONGUARD_ALLOWED_ROOTS": str(self.allowed_root),
                "MOTIONGUARD_FRAMES": "4",
                "MOTIONGUARD_DOWNLOAD_DIR": str(self.log_dir / "downloads"),
                "MOTIONGUARD_REVIEW_HOST": "127.0.0.1",
                "MOTIONGUARD_REVIEW_PORT": str(self.port),
                "MOTIONGUARD_REVIEW_METRICS_PORT": str(self.metrics_port),
                "MOTIONGUARD_REVIEW_USERS_FILE": str(self.users_file),
                "MOTIONGUARD_REVIEW_SESSION_SECRET": SECRET,
                "MOTIONGUARD_REVIEW_COOKIE_SECURE": "false",
                "MOTIONGUARD_REVIEW_AUDIT_FRACTION": "1.0",
                "MOTIONGUARD_REVIEW_CLAIM_SECONDS": str(self.claim_seconds),
                "MOTIONGUARD_REVIEW_LOGIN_RATE_LIMIT": self.login_rate_limit,
                "MOTIONGUARD_REVIEW_THUMBNAIL_PIXELS": "96",
            }
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"console-{self.port}-{int(time.time() * 1000)}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamer", "--log-level", "info", "review"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + wait_ready_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"console exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.metrics_port}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"console not ready after {wait_ready_seconds} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def client(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, follow_redirects=False, timeout=30)
        OPEN_CLIENTS.append(client)
        return client

    def sign_in(self, name: str, password: str = PASSWORD) -> httpx.Client:
        client = self.client()
        token = csrf_of(client.get("/login").text)
        form = {"username": name, "password": password, "csrf_token": token, "next": "/"}
        response = client.post("/login", data=form)
        assert response.status_code == 303, response.text
        return client

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)
