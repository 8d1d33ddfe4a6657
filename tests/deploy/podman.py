"""Build the worker image and run it with podman the way the Helm chart runs it.

``build_image`` runs ``scripts/image.sh`` (the same script as ``make image``: a debootstrap base,
cached layers, no registry). :func:`pod_run_args` turns the worker container of a ``helm template``
rendering into ``podman run`` arguments: the ConfigMap and plain ``env`` entries, the container's
args, the pod's user and group, the container's security context (read-only root filesystem,
dropped capabilities, no privilege escalation) and its emptyDir ``/tmp`` as a tmpfs. Only what a
test adds on top is named by the test: the broker address and model bundle (through chart values),
the bundle and videos mounts, host networking.

Podman runs with ``deploy/podman/containers.conf`` (``CONTAINERS_CONF``), as the build does.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "deploy" / "podman" / "containers.conf"
IMAGE_SCRIPT = REPO / "scripts" / "image.sh"


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env(), check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def build_image(log_path: Path, timeout_seconds: float) -> str:
    """Build (or reuse the cached layers of) the image; returns its tag. The log goes to ``log_path``."""
    tag = subprocess.run(
        ["bash", str(IMAGE_SCRIPT), "--print-tag"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with log_path.open("w") as log:
        result = subprocess.run(
            ["bash", str(IMAGE_SCRIPT)], stdout=log, stderr=subprocess.STDOUT, timeout=timeout_seconds, check=False
        )
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])
        raise AssertionError(f"scripts/image.sh exited {result.returncode} (log {log_path}):\n{tail}")
    return tag


def image_inspect(tag: str) -> dict[str, Any]:
    """``podman image inspect``: ``Config`` (user, env, entrypoint ...) and ``Healthcheck`` beside it."""
    return dict(json.loads(podman("image", "inspect", tag).stdout)[0])


def image_config(tag: str) -> dict[str, Any]:
    return dict(image_inspect(tag).get("Config") or {})


def image_env(tag: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in image_config(tag).get("Env") or [])


@dataclass(frozen=True)
class ChartPod:
    """The worker container of a rendered chart, and the pod settings podman needs."""

    env: dict[str, str]
    args: list[str]
    run_as_user: int
    run_as_group: int
    read_only_root: bool
    drop_all_capabilities: bool
    no_privilege_escalation: bool
    tmpfs: list[str]
    termination_grace_seconds: int
    startup_budget_seconds: int
    web_port: int

    @classmethod
    def from_manifests(cls, manifests: Sequence[Mapping[str, Any]]) -> ChartPod:
        by_kind = {(doc["kind"], doc["metadata"]["name"]): doc for doc in manifests}
        deployment = next(doc for (kind, _), doc in by_kind.items() if kind == "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == "worker")
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            config_map = by_kind[("ConfigMap", source["configMapRef"]["name"])]
            env.update(config_map["data"])
        for item in container.get("env", []):
            if "value" not in item:
                raise AssertionError(f"{item['name']} comes from {item.get('valueFrom')}: not supported here")
            env[item["name"]] = str(item["value"])
        security = container["securityContext"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        tmpfs = []
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                tmpfs.append(mount["mountPath"])
            else:
                raise AssertionError(f"volume {mount['name']} ({sorted(volume)}) is not an emptyDir: mount it yourself")
        startup = container["startupProbe"]
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == startup["httpGet"]["port"])
        return cls(
            env=env,
            args=list(container.get("args", [])),
            run_as_user=int(pod["securityContext"]["runAsUser"]),
            run_as_group=int(pod["securityContext"]["runAsGroup"]),
            read_only_root=bool(security.get("readOnlyRootFilesystem")),
            drop_all_capabilities="ALL" in security.get("capabilities", {}).get("drop", []),
            no_privilege_escalation=security.get("allowPrivilegeEscalation") is False,
            tmpfs=tmpfs,
            termination_grace_seconds=int(pod["terminationGracePeriodSeconds"]),
            startup_budget_seconds=int(startup["periodSeconds"]) * int(startup["failureThreshold"]),
            web_port=int(port),
        )

    def run_args(self, *, read_only_root: bool | None = None) -> list[str]:
        """``podman run`` options for this pod (without the image and its arguments)."""
        read_only = self.read_only_root if read_only_root is None else read_only_root
        args = ["--user", f"{self.run_as_user}:{self.run_as_group}"]
        if read_only:
            # Like Kubernetes: only the mounted volumes are writable (podman would add /run and /var/tmp).
            args += ["--read-only", "--read-only-tmpfs=false"]
        if self.drop_all_capabilities:
            args += ["--cap-drop", "ALL"]
        if self.no_privilege_escalation:
            args += ["--security-opt", "no-new-privileges"]
        for path in self.tmpfs:
            args += ["--tmpfs", f"{path}:rw,mode=1777,size=2g"]
        for name, value in self.env.items():
            args += ["--env", f"{name}={value}"]
        return args


@dataclass
class Container:
    """One ``podman run -d`` of the image; removed on exit."""

    image: str
    pod: ChartPod
    mounts: Sequence[tuple[Path, str]] = ()
    read_only_root: bool | None = None
    name: str = field(default_factory=lambda: f"mg-test-{uuid.uuid4().hex[:10]}")
    started_at: float = 0.0

    def start(self) -> Container:
        args = ["run", "--detach", "--name", self.name, "--hostname", self.name, "--network", "host"]
        args += self.pod.run_args(read_only_root=self.read_only_root)
        for source, target in self.mounts:
            args += ["--volume", f"{source}:{target}:ro"]
        podman(*args, self.image, *self.pod.args)
        self.started_at = time.monotonic()
        return self

    def state(self) -> dict[str, Any]:
        return dict(json.loads(podman("inspect", "--format", "{{json .State}}", self.name).stdout))

    def running(self) -> bool:
        return bool(self.state().get("Running"))

    def logs(self, lines: int = 80) -> str:
        result = podman("logs", "--tail", str(lines), self.name, check=False)
        return result.stdout + result.stderr

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.pod.web_port}{path}", timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0

    def healthcheck(self) -> int:
        """Run the image's HEALTHCHECK command once; its exit status."""
        return podman("healthcheck", "run", self.name, check=False, timeout=30).returncode

    def wait_ready(self, timeout_seconds: float) -> float:
        """Seconds from start until /healthz and /ready answer 200 and the HEALTHCHECK passes."""
        deadline = self.started_at + timeout_seconds
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"the container exited: {self.state()}\n{self.logs()}")
            if self.get("/healthz") == 200 and self.get("/ready") == 200 and self.healthcheck() == 0:
                return time.monotonic() - self.started_at
            time.sleep(0.5)
        raise AssertionError(f"not ready within {timeout_seconds} s:\n{self.logs()}")

    def stop(self, grace_seconds: int) -> tuple[float, int]:
        """SIGTERM, SIGKILL after ``grace_seconds`` (as the kubelet does); (seconds taken, exit code)."""
        started = time.monotonic()
        podman("stop", "--time", str(grace_seconds), self.name, timeout=grace_seconds + 60)
        return time.monotonic() - started, int(self.state()["ExitCode"])

    def diff(self) -> list[tuple[str, str]]:
        """``(kind, path)`` the container changed in its root filesystem (``podman diff``: A, C or D)."""
        return [
            (kind, path)
            for kind, path in (line.split(None, 1) for line in podman("diff", self.name).stdout.splitlines() if line)
        ]

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()
