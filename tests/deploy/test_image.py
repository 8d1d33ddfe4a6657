"""The worker image, built and run the way the Helm chart runs it, against the real Kafka.

The image is built by ``scripts/image.sh`` (``make image``): Debian's podman, a base made with
debootstrap, no registry. The first build takes minutes; later ones reuse the cached layers.
The container gets the environment, arguments, user, security context and ``/tmp`` that
``helm template`` renders from the chart's defaults, with only these values set by the test:
the broker address, ``service.port`` (a free port: the container shares the host's network) and
``settings.allowed_roots`` (the videos, mounted read-only at ``/videos``); a tiny model bundle
that the test trains with ``motionguard embed`` and ``train`` is mounted read-only at
``/models/bundle``, where the chart's default ``model.bundle.source: image`` expects it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from motionguard_dev.harness import TopicReader, free_port, send_all, upload_event
from motionguard_dev.kafka_local import LocalKafka
from streamer.settings import PREFIX, settings_from_env
from tests.deploy.conftest import CHART, KUBERNETES_VERSIONS, REPO, run_tool
from tests.deploy.podman import ChartPod, Container, build_image, image_config, image_env, image_inspect, podman
from tests.videofactory import VideoCache

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(3600)]

#: Variables the final image may set besides MOTIONGUARD_* ones (all read at run time).
RUNTIME_VARIABLES = {
    "PATH", "HOME", "LANG", "XDG_CACHE_HOME", "MPLCONFIGDIR", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
}  # fmt: skip
#: A cold build takes about 7 minutes here (torch alone is gigabytes); a cached one seconds.
BUILD_TIMEOUT_SECONDS = 45 * 60


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        pytest.fail("podman is needed to build and run the image: install it (Debian: apt-get install podman runc)")
    return build_image(tmp_path_factory.mktemp("image") / "build.log", BUILD_TIMEOUT_SECONDS)


def readable_by_everyone(directory: Path) -> Path:
    """The container's user (uid 10001) must read what is mounted; pytest's temp dirs are 0700."""
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return directory


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle trained with the CLI (tiny random-initialised ViT + linear SVM) on ffmpeg videos."""
    from tests.detectors.training.conftest import make_synthetic_manifest

    root = tmp_path_factory.mktemp("image-bundle")
    manifest = make_synthetic_manifest(root / "data", {"real": 4, "fractal": 4})
    model = ["--model", "tiny-test", "--pretrained", "none", "--device", "cpu"]
    cli = [sys.executable, "-m", "streamer"]
    for args in (
        ["embed", str(manifest), "--out", str(root / "cache"), *model, "--frames", "4"],
        ["train", str(root / "cache"), "--out", str(root / "bundle"), "--classifier", "svm-linear",
         "--no-search", "--C", "1", "--val-fraction", "0", "--test-fraction", "0", "--device", "cpu"],
    ):  # fmt: skip
        result = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=600, cwd=REPO, check=False)
        assert result.returncode == 0, f"{args[0]} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return readable_by_everyone(root / "bundle")


@pytest.fixture(scope="module")
def media(videos: VideoCache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image-videos")
    for seconds in (1, 2):
        shutil.copy(videos.video(seconds=seconds), root / f"clip-{seconds}s.mp4")
    return readable_by_everyone(root)


@pytest.fixture(scope="module")
def chart_pod(helm: str) -> Callable[..., ChartPod]:
    """``chart_pod(broker, *set_args)``: the worker pod of ``helm template`` with the chart's defaults."""

    def _render(broker: LocalKafka, *sets: str) -> ChartPod:
        args = [helm, "template", "mg", str(CHART), "--namespace", "moderation"]
        args += ["--kube-version", KUBERNETES_VERSIONS[-1]]
        for item in (
            f"kafka.bootstrapServers={{{broker.bootstrap_servers}}}",
            f"service.port={free_port()}",
            "settings.allowed_roots={/videos}",
            *sets,
        ):
            args += ["--set", item]
        manifests = [doc for doc in yaml.safe_load_all(run_tool(args).stdout) if doc]
        return ChartPod.from_manifests(manifests)

    return _render


def test_image_environment_holds_only_runtime_settings(image: str) -> None:
    """Build-time variables must not reach the final image: the worker refuses unknown MOTIONGUARD_*."""
    env = image_env(image)
    settings_from_env({k: v for k, v in env.items() if k.startswith(PREFIX)})  # raises on an unknown one
    others = {k for k in env if not k.startswith(PREFIX)}
    assert others <= RUNTIME_VARIABLES, f"unexpected variables in the image: {sorted(others - RUNTIME_VARIABLES)}"
    # The sampler decodes with the image's lean static ffmpeg (scripts/build-ffmpeg.sh), built with NVDEC.
    assert env["MOTIONGUARD_FFMPEG_BINARY"] == "/opt/ffmpeg-lean/bin/ffmpeg"
    assert env["MOTIONGUARD_FFPROBE_BINARY"] == "/opt/ffmpeg-lean/bin/ffprobe"
    isolated = ["--rm", "--network", "none", "--no-healthcheck", "--entrypoint", "/opt/ffmpeg-lean/bin/ffmpeg"]
    version = podman("run", *isolated, image, "-hide_banner", "-hwaccels", check=False)
    assert version.returncode == 0 and "cuda" in version.stdout.split(), version.stdout + version.stderr
    config = image_config(image)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["motionguard"] and config["Cmd"] == ["worker"]
    healthcheck = image_inspect(image).get("Healthcheck") or {}
    assert "/ready" in " ".join(healthcheck.get("Test", [])), "no HEALTHCHECK (podman keeps it with --format docker)"


def test_image_carries_no_build_leftovers(image: str) -> None:
    """No compilers, package caches, pip configuration, the build's CA secret, test suites or development tools."""
    check = (
        "import glob, os, shutil, sys\n"
        "found = [t for t in ('gcc', 'cc', 'g++', 'make', 'apt-get.cache') if shutil.which(t)]\n"
        "found += [p for p in ('/etc/pip.conf', '/run/secrets', '/root/.cache', '/src') "
        "if os.path.exists(p)]\n"
        "found += glob.glob('/var/lib/apt/lists/*_Packages') + glob.glob('/var/cache/apt/archives/*.deb')\n"
        "found += glob.glob('/opt/venv/lib/python3.11/site-packages/**/tests', recursive=True)[:5]\n"
        "found += glob.glob('/opt/venv/lib/python3.11/site-packages/motionguard_dev*')\n"
        "print('\\n'.join(found)); sys.exit(1 if found else 0)\n"
    )
    isolated = ["--rm", "--network", "none", "--no-healthcheck", "--entrypoint", "python"]
    result = podman("run", *isolated, image, "-c", check, check=False)
    assert result.returncode == 0, f"left in the image:\n{result.stdout}{result.stderr}"


def test_the_image_runs_the_way_the_chart_runs_it(
    image: str, kafka_broker: LocalKafka, chart_pod: Callable[..., ChartPod], bundle: Path, media: Path
) -> None:
    pod = chart_pod(kafka_broker)
    env = pod.env
    settings = settings_from_env(env)  # what the container will read: refused here if unknown
    assert settings.bundle == "/models/bundle" and settings.allowed_roots == ("/videos",)
    assert pod.run_as_user == 10001 and pod.read_only_root and pod.drop_all_capabilities
    assert pod.no_privilege_escalation and pod.tmpfs == ["/tmp"]
    bootstrap = kafka_broker.bootstrap_servers
    mounts = [(bundle, "/models/bundle"), (media, "/videos")]
    verdicts = TopicReader(bootstrap, settings.topic_verdicts)
    dead_letters = TopicReader(bootstrap, settings.topic_dead_letters)
    run = uuid.uuid4().hex[:8]
    try:
        with Container(image, pod, mounts) as first:
            first.start()
            ready_seconds = first.wait_ready(pod.startup_budget_seconds)
            print(f"ready (healthz, ready, HEALTHCHECK) {ready_seconds:.1f} s after start")

            good, forbidden = f"{run}-good", f"{run}-passwd"
            send_all(
                bootstrap,
                settings.topic_uploads,
                [
                    (good, upload_event(good, "file:///videos/clip-1s.mp4")),
                    (forbidden, upload_event(forbidden, "file:///etc/passwd")),
                ],
            )
            by_id = {r["video_id"]: r for r in verdicts.wait_for({good, forbidden}, 120, workers=())}
            assert by_id[good]["verdict"] in {"real", "ai_generated", "needs_review"}, by_id[good]
            assert by_id[good]["frames_scored"] > 0 and by_id[good]["error"] is None, by_id[good]
            assert by_id[forbidden]["verdict"] == "error", by_id[forbidden]
            assert by_id[forbidden]["error"]["code"] == "forbidden_uri", by_id[forbidden]
            letters = {r["video_id"]: r for r in dead_letters.wait_for({forbidden}, 60)}
            assert letters[forbidden]["reason"] == "forbidden_uri"

            # SIGTERM in the middle of a stream of uploads, within the chart's grace period.
            stream = [f"{run}-stream-{k}" for k in range(24)]
            send_all(
                bootstrap,
                settings.topic_uploads,
                [(v, upload_event(v, f"file:///videos/clip-{1 + k % 2}s.mp4")) for k, v in enumerate(stream)],
            )
            deadline = time.monotonic() + 60
            while not {r["video_id"] for r in verdicts.poll()} & set(stream) and time.monotonic() < deadline:
                pass
            seconds, exit_code = first.stop(pod.termination_grace_seconds)
            print(f"SIGTERM: stopped in {seconds:.1f} s with exit code {exit_code}")
            assert seconds < pod.termination_grace_seconds, first.logs()
            assert exit_code != 137, f"killed after the grace period:\n{first.logs()}"
            answered_before = {r["video_id"] for r in verdicts.poll()} & set(stream)

        # Uploads that arrive while no worker runs, then a new container (a new pod).
        late = [f"{run}-late-{k}" for k in range(4)]
        send_all(bootstrap, settings.topic_uploads, [(v, upload_event(v, "file:///videos/clip-1s.mp4")) for v in late])
        with Container(image, pod, mounts) as second:
            second.start()
            second.wait_ready(pod.startup_budget_seconds)
            records = verdicts.wait_for(set(stream) | set(late), 180)
            outcomes = [r for r in records if r["video_id"] in set(stream) | set(late)]
            assert all(r["verdict"] != "error" for r in outcomes), [r for r in outcomes if r["verdict"] == "error"]
            print(f"{len(answered_before)} of {len(stream)} answered before SIGTERM; all answered after the restart")
            seconds, exit_code = second.stop(pod.termination_grace_seconds)
            assert exit_code != 137 and seconds < pod.termination_grace_seconds
    finally:
        verdicts.close()
        dead_letters.close()


def test_the_worker_writes_nothing_outside_tmp(
    image: str, kafka_broker: LocalKafka, chart_pod: Callable[..., ChartPod], bundle: Path, media: Path
) -> None:
    """With a writable root filesystem, ``podman diff`` shows what the worker would write outside /tmp."""
    prefix = f"t-image-diff-{uuid.uuid4().hex[:8]}"
    pod = chart_pod(
        kafka_broker,
        f"kafka.consumerGroup={prefix}",
        f"kafka.topics.uploads={prefix}-uploads",
        f"kafka.topics.verdicts={prefix}-verdicts",
        f"kafka.topics.deadLetters={prefix}-dlq",
        f"kafka.topics.labels={prefix}-labels",
    )
    settings = settings_from_env(pod.env)
    verdicts = TopicReader(kafka_broker.bootstrap_servers, settings.topic_verdicts)
    try:
        with Container(image, pod, [(bundle, "/models/bundle"), (media, "/videos")], read_only_root=False) as box:
            box.start()
            box.wait_ready(pod.startup_budget_seconds)
            video = f"{prefix}-v"
            send_all(
                kafka_broker.bootstrap_servers,
                settings.topic_uploads,
                [(video, upload_event(video, "file:///videos/clip-2s.mp4"))],
            )
            record = next(r for r in verdicts.wait_for({video}, 120) if r["video_id"] == video)
            assert record["verdict"] != "error", record
            box.stop(pod.termination_grace_seconds)
            # Podman's own changes: the mount points, and /etc where it binds hosts, hostname and resolv.conf.
            podmans = {("A", "/videos"), ("A", "/models/bundle"), ("C", "/models"), ("C", "/etc"), ("C", "/")}
            written = [
                (kind, path)
                for kind, path in box.diff()
                if path != "/tmp" and not path.startswith("/tmp/") and (kind, path) not in podmans
            ]
            assert written == [], f"written outside /tmp: {written}"
    finally:
        verdicts.close()
