"""Secure Kafka end to end, against a real Apache Kafka that demands TLS, SASL/SCRAM or mTLS, and ACLs.

One secure broker (``LocalKafka(secure=True)``, as ``motionguard kafka start --secure``) serves
the module.  Two apps, each with its own topics, consumer group and the least-privilege ACLs of
:mod:`streamer.kafka_acls`:

* ``sasl``: one worker over SASL_SSL/SCRAM-SHA-512, started with a wrong password (a password
  file), fixed in place; the CLI tools over SASL_SSL; the ACL refusals.
* ``mtls``: workers that are refused (no credentials, a client certificate from another CA, a
  broker certificate that does not name the host), then one over mTLS with the right
  settings, which answers every upload sent meanwhile; the CLI tools over mTLS.

The last test greps everything the processes wrote for the passwords.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from motionguard_dev.harness import REPO, Topics, WorkerProcess, new_topics, upload_event
from motionguard_dev.kafka_local import LocalKafka, LocalKafkaConfig, find_free_port
from motionguard_dev.kafka_secure import issue_certificate, make_ca
from streamer.kafka_acls import least_privilege_acls
from streamer.schemas import Topics as SchemaTopics
from streamer.settings import settings_from_env
from tests.conftest import kafka_home_from_env
from tests.videofactory import make_text_file, make_video

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.errors import CoordinatorNotAvailableError, KafkaError, TopicAuthorizationFailedError

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: Everything the worker processes and the command-line tools wrote, for the secrets test.
OUTPUTS: list[str] = []
WORKER_LOGS: list[Path] = []
READY_TIMEOUT_SECONDS = 120.0
VERDICT_TIMEOUT_SECONDS = 120.0


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """The broker ``motionguard kafka start --secure`` starts (the command itself, as a user runs it)."""
    data_dir = tmp_path_factory.mktemp("secure-kafka") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTIONGUARD_")}
    broker = LocalKafka(LocalKafkaConfig(data_dir=data_dir, kafka_home=kafka_home_from_env()))
    try:
        started = run_cli(
            env, "kafka", "start", "--secure", "--port", str(find_free_port()), "--data-dir", str(data_dir)
        )
        assert started.returncode == 0, started.stderr
        assert broker.status()["secure"] is True
        # The printed settings name the password files, never a password.
        assert f"MOTIONGUARD_SASL_PASSWORD_FILE={broker.security.password_file('worker')}" in started.stdout
        assert f"MOTIONGUARD_SSL_KEYFILE={broker.security.key('moderation')}" in started.stdout
        yield broker
    finally:
        broker.stop()


@dataclass
class App:
    """One worker app on the secure broker: its topics, app id (consumer group) and ACLs."""

    kafka: LocalKafka
    topics: Topics

    @property
    def app_id(self) -> str:
        return f"{self.topics.prefix}-app"  # its internal topics' prefix is not that of its topics

    def env(self, user: str, mtls: bool = False, **overrides: str) -> dict[str, str]:
        """A process environment connecting as ``user`` to this app's topics."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOTIONGUARD_")}
        env.update(self.topics.env())
        env["MOTIONGUARD_APP_ID"] = self.app_id
        env.update(self.kafka.client_env(user, mtls=mtls))
        env.update(overrides)
        return env

    def options(self, user: str, mtls: bool = False) -> dict[str, Any]:
        """kafka-python options of ``user``, from the same settings the tools read."""
        env = {k: v for k, v in self.env(user, mtls).items() if k.startswith("MOTIONGUARD_")}
        return settings_from_env(env).kafka_python_options()


def make_app(kafka: LocalKafka, name: str) -> App:
    app = App(kafka, new_topics(name))
    t = app.topics
    kafka.create_topics((t.uploads, t.verdicts, t.dead_letters, t.labels), partitions=t.partitions)
    topics = SchemaTopics(uploads=t.uploads, verdicts=t.verdicts, dead_letters=t.dead_letters, labels=t.labels)
    kafka.create_acls(least_privilege_acls(app.app_id, topics))
    return app


@pytest.fixture(scope="module")
def sasl_app(secure_kafka: LocalKafka) -> App:
    return make_app(secure_kafka, "sasl")


@pytest.fixture(scope="module")
def mtls_app(secure_kafka: LocalKafka) -> App:
    return make_app(secure_kafka, "mtls")


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("secure-uploads")
    make_video(root / "a.mp4", codec="h264", seconds=1.0, width=96, height=64, fps=10)
    make_text_file(root / "notes.mp4")
    return root


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    OUTPUTS.append(result.stdout + result.stderr)
    return result


def start_worker(app: App, video_root: Path, data_dir: Path, env: dict[str, str]) -> WorkerProcess:
    """Spawn a worker with ``env``'s MOTIONGUARD_* settings, without waiting for it to be ready."""
    extra = {k: v for k, v in env.items() if k.startswith("MOTIONGUARD_")}
    worker = WorkerProcess(
        bootstrap="unused:0",  # MOTIONGUARD_BROKER comes from ``env``
        topics=app.topics,
        allowed_root=video_root,
        data_dir=data_dir,
        extra_env=extra,
    ).start(wait_ready_seconds=None)
    assert worker.log_path is not None
    WORKER_LOGS.append(worker.log_path)
    return worker


def wait_not_ready(worker: WorkerProcess, expected: str, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> str:
    """Wait until /ready answers 503 with a reason containing ``expected``; return the reason."""
    deadline = time.monotonic() + timeout_seconds
    reason = ""
    while time.monotonic() < deadline:
        assert worker.process is not None
        if worker.process.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.process.returncode}):\n{worker.log_tail()}")
        try:
            status, body = worker.get("/ready")
        except OSError:
            time.sleep(0.3)
            continue
        assert status == 503, f"ready with wrong settings: {body!r}"
        reason = json.loads(body).get("kafka", "")
        if expected in reason:
            return str(reason)
        time.sleep(0.3)
    raise AssertionError(f"/ready never said {expected!r} (last: {reason!r}):\n{worker.log_tail()}")


def submit_uploads(app: App, video_root: Path, video_ids: list[str], user: str = "submitter") -> None:
    producer = KafkaProducer(acks="all", **app.options(user))
    try:
        for video_id in video_ids:
            value = upload_event(video_id, (video_root / "a.mp4").as_uri())
            producer.send(app.topics.uploads, key=video_id.encode(), value=value).get(timeout=30)
    finally:
        producer.close()


def committed_offsets(app: App) -> dict[Any, Any]:
    """The app's committed offsets (none while no consumer group has ever used the broker's offsets topic)."""
    admin = KafkaAdminClient(**app.options("admin", mtls=True))
    try:
        result: dict[Any, Any] = admin.list_group_offsets({app.app_id: None})
    except CoordinatorNotAvailableError:  # __consumer_offsets does not exist yet: nobody ever committed
        return {}
    finally:
        admin.close()
    return dict(result.get(app.app_id) or {})


def read_records(
    app: App, topic: str, video_ids: set[str], timeout_seconds: float = VERDICT_TIMEOUT_SECONDS
) -> dict[str, dict[str, Any]]:
    """Read ``topic`` as the admin until every id has a record (the last one per id is kept)."""
    consumer = KafkaConsumer(
        topic, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False, **app.options("admin", mtls=True)
    )
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_seconds
    try:
        while time.monotonic() < deadline and not video_ids <= found.keys():
            for messages in consumer.poll(timeout_ms=500).values():
                for message in messages:
                    record = json.loads(message.value)
                    found[str(record.get("video_id"))] = record
    finally:
        consumer.close()
    missing = video_ids - found.keys()
    assert not missing, f"no record on {topic} for {sorted(missing)}"
    return found


def outcomes_total(worker: WorkerProcess) -> float:
    return sum(v for k, v in worker.metrics().items() if k.startswith("motionguard_label_outcomes_total"))


def wait_for_outcomes(worker: WorkerProcess, target: float, timeout_seconds: float = 60.0) -> float:
    deadline = time.monotonic() + timeout_seconds
    total = outcomes_total(worker)
    while total < target and time.monotonic() < deadline:
        time.sleep(0.3)
        total = outcomes_total(worker)
    return total


def test_the_broker_speaks_no_plaintext_and_denies_what_no_acl_allows(secure_kafka: LocalKafka) -> None:
    properties = dict(
        line.split("=", 1) for line in secure_kafka.server_properties.read_text().splitlines() if "=" in line
    )
    assert "PLAINTEXT" not in properties["listener.security.protocol.map"].replace("SASL_SSL", "")
    assert not any(listener.startswith("PLAINTEXT") for listener in properties["listeners"].split(","))
    assert properties["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["super.users"] == "User:broker;User:admin"
    assert properties["listener.name.ssl.ssl.client.auth"] == "required"
    assert properties["listener.name.controller.ssl.client.auth"] == "required"
    assert properties["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,SCRAM-SHA-256"


# ------------------------------------------------------------------- the SASL_SSL / SCRAM app


@pytest.fixture(scope="module")
def sasl_password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sasl-secret") / "password"
    path.write_text("not-the-password\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def sasl_worker(
    sasl_app: App, video_root: Path, sasl_password_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """The SASL worker, started with a wrong password in its password file (the first test fixes it)."""
    env = sasl_app.env("worker", MOTIONGUARD_SASL_PASSWORD_FILE=str(sasl_password_file))
    worker = start_worker(sasl_app, video_root, tmp_path_factory.mktemp("sasl-worker"), env)
    yield worker
    worker.terminate()


@pytest.fixture
def ready_sasl_worker(sasl_worker: WorkerProcess, sasl_app: App, sasl_password_file: Path) -> WorkerProcess:
    sasl_password_file.write_text(sasl_app.kafka.security.password("worker") + "\n")
    sasl_worker.wait_ready(READY_TIMEOUT_SECONDS)
    return sasl_worker


def test_a_wrong_password_keeps_the_worker_not_ready_until_it_is_fixed(
    sasl_worker: WorkerProcess, sasl_app: App, sasl_password_file: Path, video_root: Path
) -> None:
    reason = wait_not_ready(sasl_worker, "refused SASL SCRAM-SHA-512 authentication for user 'worker'")
    assert sasl_worker.get("/healthz")[0] == 200  # alive: Kubernetes must not restart it in a loop
    assert "motionguard_worker_ready 0.0" in sasl_worker.get("/metrics")[1].decode()
    submit_uploads(sasl_app, video_root, ["while-refused"])
    assert committed_offsets(sasl_app) == {}  # nothing consumed or committed while refused
    assert sasl_worker.log_path is not None and reason in sasl_worker.log_path.read_text()

    # The password file is read at each attempt: fixing it is enough, the worker retries with back-off.
    sasl_password_file.write_text(sasl_app.kafka.security.password("worker") + "\n")
    sasl_worker.wait_ready(READY_TIMEOUT_SECONDS)
    verdict = read_records(sasl_app, sasl_app.topics.verdicts, {"while-refused"})["while-refused"]
    assert verdict["error"] is None


def test_the_usual_flow_over_sasl_ssl_with_scram(
    ready_sasl_worker: WorkerProcess, sasl_app: App, video_root: Path
) -> None:
    submitter, moderation = sasl_app.env("submitter"), sasl_app.env("moderation")
    submitted = run_cli(submitter, "submit", str(video_root / "a.mp4"), str(video_root / "notes.mp4"))
    assert submitted.returncode == 0, submitted.stderr
    good, bad = (json.loads(line)["video_id"] for line in submitted.stdout.splitlines())

    out = run_cli(moderation, "verdicts", "--count", "3", "--idle-seconds", "60")
    assert out.returncode == 0, out.stderr
    verdicts = {r["video_id"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert verdicts[good]["error"] is None and verdicts[bad]["error"]["code"] == "not_a_video"
    dead = run_cli(moderation, "verdicts", "--dead-letters", "--count", "1", "--idle-seconds", "30")
    assert dead.returncode == 0 and json.loads(dead.stdout)["video_id"] == bad, dead.stderr

    before = outcomes_total(ready_sasl_worker)
    labelled = run_cli(moderation, "label", good, "ai_generated", "--moderator", "m1")
    assert labelled.returncode == 0, labelled.stderr
    assert wait_for_outcomes(ready_sasl_worker, before + 1) == before + 1


def test_acls_keep_each_principal_to_its_own_topics(ready_sasl_worker: WorkerProcess, sasl_app: App) -> None:
    topics = sasl_app.topics
    for user, topic in (("submitter", topics.verdicts), ("submitter", topics.labels), ("worker", topics.uploads)):
        producer = KafkaProducer(acks="all", max_block_ms=10_000, **sasl_app.options(user))
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                producer.send(topic, key=b"forged", value=b'{"video_id": "forged"}').get(timeout=30)
        finally:
            producer.close()
    refused = run_cli(sasl_app.env("submitter"), "label", "forged", "real")
    assert refused.returncode == 3
    assert f"user 'submitter' is not authorised to write topic {topics.labels!r}" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_label_from_an_unauthorised_principal_never_reaches_the_accuracy_metrics(
    ready_sasl_worker: WorkerProcess, sasl_app: App, video_root: Path
) -> None:
    submit_uploads(sasl_app, video_root, ["acl-x", "acl-y"])
    read_records(sasl_app, sasl_app.topics.verdicts, {"acl-x", "acl-y"})
    before = outcomes_total(ready_sasl_worker)
    # The submitter (and the worker itself) may not label: both are refused by the broker.
    for user in ("submitter", "worker"):
        assert run_cli(sasl_app.env(user), "label", "acl-x", "real").returncode == 3
    assert run_cli(sasl_app.env("moderation"), "label", "acl-y", "real").returncode == 0
    assert wait_for_outcomes(ready_sasl_worker, before + 1) == before + 1
    labels = read_records(sasl_app, sasl_app.topics.labels, {"acl-y"})
    assert "acl-x" not in labels and "acl-x" not in read_topic_ids(sasl_app, sasl_app.topics.labels)
    assert outcomes_total(ready_sasl_worker) == before + 1


# -------------------------------------------------------------------------- the mTLS app


@pytest.fixture(scope="module")
def other_ca_worker_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A client certificate for CN=worker signed by a CA the broker does not trust."""
    directory = tmp_path_factory.mktemp("other-ca")
    ca, key = make_ca(directory, "ca", "Someone else's CA")
    return issue_certificate(ca, key, directory, "worker", "worker")


REFUSALS = {
    "no-credentials": "it probably requires TLS and/or SASL (MOTIONGUARD_SECURITY_PROTOCOL=PLAINTEXT)",
    "client-cert-from-another-ca": "did it refuse the client certificate MOTIONGUARD_SSL_CERTFILE=",
    "server-cert-for-another-host": "certificate is not valid for '127.0.0.1'",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_connections_keep_the_worker_not_ready_and_lose_nothing(
    case: str,
    mtls_app: App,
    video_root: Path,
    other_ca_worker_cert: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    kafka = mtls_app.kafka
    if case == "no-credentials":  # the default settings, against the SASL_SSL listener
        env = mtls_app.env("worker", MOTIONGUARD_SECURITY_PROTOCOL="PLAINTEXT")
        for key in ("MOTIONGUARD_SASL_USERNAME", "MOTIONGUARD_SASL_PASSWORD_FILE", "MOTIONGUARD_SASL_MECHANISM"):
            env.pop(key)
    elif case == "client-cert-from-another-ca":
        cert, key_file = other_ca_worker_cert
        env = mtls_app.env(
            "worker", mtls=True, MOTIONGUARD_SSL_CERTFILE=str(cert), MOTIONGUARD_SSL_KEYFILE=str(key_file)
        )
    else:  # the broker's certificate names localhost, not 127.0.0.1
        broker = kafka.client_env("worker")["MOTIONGUARD_BROKER"].replace("localhost", "127.0.0.1")
        env = mtls_app.env("worker", MOTIONGUARD_BROKER=broker)
    submit_uploads(mtls_app, video_root, [f"refused-{case}"], user="submitter")
    worker = start_worker(mtls_app, video_root, tmp_path / "worker", env)
    try:
        reason = wait_not_ready(worker, REFUSALS[case])
        assert "\n" not in reason
        assert committed_offsets(mtls_app) == {}
        assert worker.get("/healthz")[0] == 200
    finally:
        assert worker.terminate() is not None
    # The command-line tools say the same, in one line, without a traceback.
    result = run_cli(env, "verdicts", "--count", "1", "--idle-seconds", "5")
    assert result.returncode == 3
    assert REFUSALS[case] in result.stderr and "Traceback" not in result.stderr


def test_the_usual_flow_over_mtls_answers_every_upload_sent_while_refused(
    mtls_app: App, video_root: Path, tmp_path: Path
) -> None:
    worker = start_worker(mtls_app, video_root, tmp_path / "worker", mtls_app.env("worker", mtls=True))
    try:
        worker.wait_ready(READY_TIMEOUT_SECONDS)
        submitter, moderation = mtls_app.env("submitter", mtls=True), mtls_app.env("moderation", mtls=True)
        submitted = run_cli(submitter, "submit", str(video_root / "a.mp4"), str(video_root / "notes.mp4"))
        assert submitted.returncode == 0, submitted.stderr
        good, bad = (json.loads(line)["video_id"] for line in submitted.stdout.splitlines())
        pending = {f"refused-{case}" for case in REFUSALS}
        # Every upload sent while the workers were refused is answered now (the earlier tests sent them).
        expected = {good, bad} | (pending & read_topic_ids(mtls_app, mtls_app.topics.uploads))
        out = run_cli(moderation, "verdicts", "--count", str(len(expected)), "--idle-seconds", "60")
        assert out.returncode == 0, out.stderr
        verdicts = {r["video_id"]: r for r in map(json.loads, out.stdout.splitlines())}
        assert set(verdicts) == expected
        assert verdicts[bad]["error"]["code"] == "not_a_video"
        dead = run_cli(moderation, "verdicts", "--dead-letters", "--count", "1", "--idle-seconds", "30")
        assert dead.returncode == 0 and json.loads(dead.stdout)["video_id"] == bad, dead.stderr

        before = outcomes_total(worker)
        assert run_cli(moderation, "label", good, "real").returncode == 0
        assert wait_for_outcomes(worker, before + 1) == before + 1
    finally:
        worker.terminate()


def read_topic(app: App, topic: str) -> list[Any]:
    """Every record now on ``topic`` (read as the admin; done after 3 s without news)."""
    consumer = KafkaConsumer(
        topic,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        **app.options("admin", mtls=True),
    )
    try:
        return list(consumer)
    finally:
        consumer.close()


def read_topic_ids(app: App, topic: str) -> set[str]:
    return {message.key.decode() for message in read_topic(app, topic) if message.key}


def read_topic_values(app: App, topic: str) -> list[str]:
    return [message.value.decode(errors="replace") for message in read_topic(app, topic)]


# ---------------------------------------------------------------------------------- secrets


def test_no_password_appears_in_logs_metrics_verdicts_or_errors(
    ready_sasl_worker: WorkerProcess, sasl_app: App, secure_kafka: LocalKafka
) -> None:
    passwords = [secure_kafka.security.password(user) for user in ("admin", "worker", "submitter", "moderation")]
    assert all(len(p) >= 20 for p in passwords)
    wrong = run_cli(sasl_app.env("moderation", MOTIONGUARD_SASL_USERNAME="worker"), "verdicts", "--count", "1")
    assert wrong.returncode == 3 and "authentication for user 'worker'" in wrong.stderr
    texts = {
        **{f"log {path}": path.read_text(errors="replace") for path in WORKER_LOGS},
        **{f"cli output {i}": text for i, text in enumerate(OUTPUTS)},
        "metrics": ready_sasl_worker.get("/metrics")[1].decode(),
        "status": (secure_kafka.data_dir / "broker.json").read_text(),
        "broker log": secure_kafka.log_file.read_text(errors="replace"),
        "server.properties": secure_kafka.server_properties.read_text(),
    }
    texts["verdicts"] = "\n".join(read_topic_values(sasl_app, sasl_app.topics.verdicts))
    assert texts["verdicts"]
    assert len(WORKER_LOGS) >= 1 and len(OUTPUTS) >= 1
    for where, text in texts.items():
        for password in passwords:
            assert password not in text, f"a password appears in the {where}"
    for path in secure_kafka.security.root.iterdir():
        if path.suffix in (".password", ".key") or path.name.endswith(".keystore.pem"):
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


def test_a_missing_ca_file_is_a_clear_error_naming_the_setting(sasl_app: App, tmp_path: Path) -> None:
    env = sasl_app.env("submitter", MOTIONGUARD_SSL_CAFILE=str(tmp_path / "absent.pem"))
    result = run_cli(env, "submit", "file:///x.mp4")
    assert result.returncode == 3
    assert f"MOTIONGUARD_SSL_CAFILE={tmp_path / 'absent.pem'}: not a readable PEM file" in result.stderr
    assert "Traceback" not in result.stderr


def test_kafka_errors_are_not_silent(sasl_app: App) -> None:
    """kafka-python alone would time out with 'Unable to bootstrap': the evidence for streamer.kafka_access."""
    options = sasl_app.options("worker")
    options["sasl_plain_password"] = "wrong"
    with pytest.raises(KafkaError, match="Unable to bootstrap"):
        KafkaAdminClient(**options, request_timeout_ms=3000, bootstrap_timeout_ms=3000)


def test_scram_sha_256_works_too(ready_sasl_worker: WorkerProcess, sasl_app: App) -> None:
    env = sasl_app.env("moderation", MOTIONGUARD_SASL_MECHANISM="SCRAM-SHA-256")
    result = run_cli(env, "verdicts", "--count", "1", "--idle-seconds", "30")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["video_id"]
