"""The worker image and the docker-compose stack, checked without a Docker engine.

``deploycheck`` (tests/deploy/deploycheck, built by scripts/install-deploy-tools.sh) parses the
Dockerfile with BuildKit's own frontend and linter, and loads the compose file with compose-go
(the Compose specification's schema, interpolation and normalisation), as ``docker`` would.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from streamer.settings import review_settings_from_env, settings_from_env
from tests.deploy.conftest import REPO, run_tool

DOCKERFILE = REPO / "deploy" / "Dockerfile"
COMPOSE = REPO / "deploy" / "docker-compose.yml"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            logical.append(current)
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in logical]


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name."""
    result: dict[str, list[tuple[str, str]]] = {}
    name = ""
    for instruction, args in dockerfile_instructions():
        if instruction == "FROM":
            name = args.split(" AS ")[-1].strip() if " AS " in args else args
            result[name] = []
        elif name:
            result[name].append((instruction, args))
    return result


def test_dockerfile_parses_without_lint_warnings(deploycheck: str) -> None:
    report = json.loads(run_tool([deploycheck, "dockerfile", str(DOCKERFILE)]).stdout)
    assert report["warnings"] == []
    names = [stage["name"] for stage in report["stages"]]
    assert names == ["runtime", "ffmpeg", "bundle", "build", "final"]
    assert {"VARIANT", "BASE_IMAGE"} <= set(report["meta_args"])
    # podman 4.3's builder cannot pick a stage by a build argument (FROM stage-${ARG}): every
    # base is either the BASE_IMAGE argument, scratch, or a stage named literally.
    for stage in report["stages"]:
        assert stage["base"] in {"${BASE_IMAGE}", "scratch"} or stage["base"] in names, stage


def test_dockerfile_base_and_runtime_tools() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    runs = " ".join(args for instruction, args in stages()["runtime"] if instruction == "RUN")
    assert "ffmpeg" in runs and "python3.11" in runs
    # The stages the final image inherits set no environment: build settings stay in the build stage.
    assert [args for instruction, args in stages()["runtime"] if instruction == "ENV"] == []


def test_final_image_runs_the_worker_as_non_root() -> None:
    final = dict(stages()["final"][::-1])  # last wins
    assert final["USER"] == "10001:10001"
    assert json.loads(final["ENTRYPOINT"]) == ["motionguard"]
    assert json.loads(final["CMD"]) == ["worker"]
    assert final["EXPOSE"] == "6066"
    healthcheck = final["HEALTHCHECK"]
    assert "/ready" in healthcheck and "urlopen" in healthcheck
    instructions = stages()["final"]
    assert ("COPY", "--from=bundle --chown=10001:10001 / /models/bundle/") in instructions


def test_image_environment_is_accepted_by_the_worker() -> None:
    env: dict[str, str] = {}
    for instruction, args in stages()["final"]:
        if instruction == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    assert env["MOTIONGUARD_BUNDLE"] == "/models/bundle"
    assert env["HOME"].startswith("/tmp")  # read-only root filesystem: only /tmp is writable
    settings = settings_from_env({k: v for k, v in env.items() if k.startswith("MOTIONGUARD_")})
    assert settings.web_port == 6066
    # The sampler uses the lean static ffmpeg that the ffmpeg stage builds (scripts/build-ffmpeg.sh).
    assert (settings.ffmpeg_binary, settings.ffprobe_binary) == (
        "/opt/ffmpeg-lean/bin/ffmpeg",
        "/opt/ffmpeg-lean/bin/ffprobe",
    )
    assert ("COPY", "--from=ffmpeg /opt/ffmpeg-lean/bin/ /opt/ffmpeg-lean/bin/") in stages()["final"]
    build = " ".join(args for instruction, args in stages()["ffmpeg"] if instruction == "RUN")
    assert "scripts/build-ffmpeg.sh --nvdec /opt/ffmpeg-lean" in build


def test_dockerignore_lets_only_the_package_sources_in() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "detectors", "streamer"} <= allowed
    assert "motionguard_dev" not in allowed  # the development tools stay out of the worker image
    copied = [args for instruction, args in stages()["build"] if instruction == "COPY"]
    for args in copied:
        for source in args.split()[:-1]:
            assert source.rstrip("*") in allowed or any(a.startswith(source.rstrip("*")) for a in allowed), source


def load_compose(deploycheck: str, **variables: str) -> dict[str, Any]:
    """The compose project as docker compose would see it, with only ``variables`` set."""
    env = {k: v for k, v in os.environ.items() if k not in {"BUNDLE_DIR", "VIDEOS_DIR"}} | variables
    return json.loads(run_tool([deploycheck, "compose", str(COMPOSE)], env=env).stdout)


def test_compose_file_is_valid_and_complete(deploycheck: str) -> None:
    project = load_compose(deploycheck)
    services = project["services"]
    assert set(services) == {"kafka", "worker", "review", "prometheus", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
    assert worker["user"] == "10001:10001" and worker["read_only"] is True
    assert worker["cap_drop"] == ["ALL"] and any(t.startswith("/tmp") for t in worker["tmpfs"])
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    # Every mounted host file exists.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name} mounts missing {volume['source']}"
    prometheus_mounts = {v["target"]: v["source"] for v in services["prometheus"]["volumes"] if v["type"] == "bind"}
    assert prometheus_mounts["/etc/prometheus/rules.yml"] == str(REPO / "deploy" / "prometheus" / "rules.yml")
    grafana_mounts = {v["target"]: v["source"] for v in services["grafana"]["volumes"] if v["type"] == "bind"}
    assert str(REPO / "deploy" / "grafana" / "motionguard-dashboard.json") in grafana_mounts.values()


@pytest.mark.parametrize("bundle_dir", [None, "/srv/motionguard/bundle"])
def test_compose_worker_environment_is_accepted_by_the_worker(deploycheck: str, bundle_dir: str | None) -> None:
    project = load_compose(deploycheck, **({"BUNDLE_DIR": bundle_dir} if bundle_dir else {}))
    worker = project["services"]["worker"]
    settings = settings_from_env(worker["environment"])
    assert settings.broker == "kafka://kafka:9092"
    bundle_mount = next(v for v in worker["volumes"] if v["target"] == "/models/bundle")
    if bundle_dir:
        assert settings.bundle == "/models/bundle" and bundle_mount["source"] == bundle_dir
    else:
        assert settings.bundle == "" and settings.pretrained == "none" and bundle_mount["type"] == "volume"


def test_compose_review_console_environment_is_accepted(deploycheck: str) -> None:
    project = load_compose(deploycheck, REVIEW_SESSION_SECRET="s" * 48)
    review = project["services"]["review"]
    assert review["image"] == project["services"]["worker"]["image"] and review["command"][-1] == "review"
    assert review["user"] == "10001:10001" and review["read_only"] is True and review["cap_drop"] == ["ALL"]
    settings_from_env(review["environment"])
    console = review_settings_from_env(review["environment"])
    assert console.session_secret == "s" * 48 and console.users_file == "/review/users"
    assert {p["target"] for p in review["ports"]} == {console.port, console.metrics_port}


def test_compose_variables_cannot_be_mistaken_for_worker_settings() -> None:
    # The worker refuses unknown MOTIONGUARD_* variables; compose's own variables must not look like one.
    variables = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    assert variables and not any(v.startswith("MOTIONGUARD_") for v in variables)
