"""Settings come from MOTIONGUARD_* variables, in one place, and typos are refused."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from streamer.settings import KafkaSettingsError, WorkerSettings, review_settings_from_env, settings_from_env


def test_environment_values_are_typed() -> None:
    settings = settings_from_env(
        {
            "MOTIONGUARD_BROKER": "kafka://a:9092;kafka://b:9093",
            "MOTIONGUARD_BATCH_MAX_EVENTS": "16",
            "MOTIONGUARD_BATCH_WINDOW_MS": "25",
            "MOTIONGUARD_ALLOW_PRIVATE_ADDRESSES": "true",
            "MOTIONGUARD_ALLOWED_ROOTS": "/data/a, /data/b",
            "MOTIONGUARD_DOWNLOAD_TIMEOUT_SECONDS": "2.5",
            "MOTIONGUARD_FRAME_SEEK": "accurate",
            "MOTIONGUARD_KEYFRAME_TOLERANCE": "0.25",
            "MOTIONGUARD_TRUST_ANCHORS": "/etc/c2pa/a.pem,/etc/c2pa/b.pem",
            "MOTIONGUARD_CAPTURE_CLAIM_CLEARS": "true",
            "PATH": "/usr/bin",
        }
    )
    assert settings.bootstrap_servers == ["a:9092", "b:9093"]
    assert settings.faust_broker == "kafka://a:9092;kafka://b:9093"
    assert settings.batch_max_events == 16
    assert settings.batch_window_ms == 25
    assert settings.allow_private_addresses is True
    assert settings.allowed_roots == ("/data/a", "/data/b")
    assert settings.download_timeout_seconds == 2.5
    assert (settings.frame_seek, settings.keyframe_tolerance) == ("accurate", 0.25)
    assert settings.trust_anchors == ("/etc/c2pa/a.pem", "/etc/c2pa/b.pem")
    assert settings.capture_claim_clears is True


def test_the_sampler_is_configured_from_the_settings() -> None:
    settings = settings_from_env(
        {
            "MOTIONGUARD_FFMPEG_BINARY": "/opt/ffmpeg-lean/bin/ffmpeg",
            "MOTIONGUARD_FFPROBE_BINARY": "/opt/ffmpeg-lean/bin/ffprobe",
            "MOTIONGUARD_FRAME_SEEK": "accurate",
            "MOTIONGUARD_DECODER_THREADS": "1",
            "MOTIONGUARD_FFMPEG_TIMEOUT_SECONDS": "30",
        }
    )
    config = settings.sampling_config()
    assert (config.ffmpeg_binary, config.ffprobe_binary) == (
        "/opt/ffmpeg-lean/bin/ffmpeg",
        "/opt/ffmpeg-lean/bin/ffprobe",
    )
    assert (config.seek, config.decoder_threads, config.timeout_seconds) == ("accurate", 1, 30.0)
    assert settings.sampling_config(frames=4).frames == 4
    with pytest.raises(ValueError, match="ffmpeg_binary"):
        settings_from_env({"MOTIONGUARD_FFMPEG_BINARY": " "}).sampling_config()


def test_a_misspelled_variable_is_an_error() -> None:
    with pytest.raises(ValueError, match="MOTIONGUARD_BATCH_MAX_EVENTS"):
        settings_from_env({"MOTIONGUARD_BATCH_MAX_EVENT": "3"})


@pytest.mark.parametrize(
    "env",
    [
        {"MOTIONGUARD_BATCH_MAX_EVENTS": "many"},
        {"MOTIONGUARD_ALLOW_PRIVATE_ADDRESSES": "perhaps"},
        {"MOTIONGUARD_BATCH_MAX_EVENTS": "0"},
        {"MOTIONGUARD_SECURITY_PROTOCOL": "SASL_TLS"},
        {"MOTIONGUARD_DECODER_THREADS": "0"},
        {"MOTIONGUARD_SKIP_NON_REFERENCE": "sometimes"},
        {"MOTIONGUARD_FRAME_SEEK": "fast"},
        {"MOTIONGUARD_KEYFRAME_TOLERANCE": "0.9"},
        {"MOTIONGUARD_KEYFRAME_TOLERANCE": "half"},
        {"MOTIONGUARD_MAX_MANIFEST_BYTES": "0"},
    ],
)
def test_bad_values_are_errors(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        settings_from_env(env)


def test_secrets_are_blanked_in_the_public_view() -> None:
    settings = WorkerSettings(sasl_password="hunter2")
    assert settings.public_dict()["sasl_password"] == "***"
    assert "hunter2" not in repr(settings.public_dict())


def test_cli_overrides_only_replace_given_values() -> None:
    settings = WorkerSettings(web_port=1).with_overrides(web_port=None, model="tiny-test")
    assert settings.web_port == 1 and settings.model == "tiny-test"


def test_tls_verifies_the_broker_and_its_host_name_by_default() -> None:
    context = WorkerSettings(security_protocol="SASL_SSL").ssl_context()
    assert context is not None
    assert context.check_hostname is True and context.verify_mode == ssl.CERT_REQUIRED
    off = WorkerSettings(security_protocol="SSL", ssl_check_hostname=False).ssl_context()
    assert off is not None and off.check_hostname is False and off.verify_mode == ssl.CERT_REQUIRED
    assert WorkerSettings(security_protocol="PLAINTEXT", ssl_cafile="/nope").ssl_context() is None


def test_every_kafka_client_gets_the_same_credentials_from_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-from-a-file\n")
    settings = settings_from_env(
        {
            "MOTIONGUARD_SECURITY_PROTOCOL": "SASL_SSL",
            "MOTIONGUARD_SASL_MECHANISM": "SCRAM-SHA-512",
            "MOTIONGUARD_SASL_USERNAME": "worker",
            "MOTIONGUARD_SASL_PASSWORD_FILE": str(secret),
        }
    )
    for options in (settings.kafka_python_options(), settings.aiokafka_options()):
        assert options["sasl_plain_username"] == "worker"
        assert options["sasl_plain_password"] == "s3cret-from-a-file"  # the trailing newline dropped
        assert options["sasl_mechanism"] == "SCRAM-SHA-512"
        assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "s3cret-from-a-file" not in repr(settings.public_dict())
    secret.write_text("rotated\n")  # read at each connection: a rotated Secret needs no restart
    assert settings.sasl_secret() == "rotated"


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"ssl_cafile": "{missing}"}, "MOTIONGUARD_SSL_CAFILE={missing}: not a readable PEM file"),
        ({"ssl_cafile": "{garbage}"}, "MOTIONGUARD_SSL_CAFILE={garbage}: not a readable PEM file"),
        ({"ssl_certfile": "{missing}"}, "MOTIONGUARD_SSL_CERTFILE={missing}: not a readable PEM certificate"),
        (
            {"ssl_certfile": "{garbage}", "ssl_keyfile": "{garbage}"},
            "MOTIONGUARD_SSL_CERTFILE/MOTIONGUARD_SSL_KEYFILE={garbage}, {garbage}",
        ),
        ({"sasl_password_file": "{missing}"}, "MOTIONGUARD_SASL_PASSWORD_FILE={missing}: cannot read"),
    ],
)
def test_an_unusable_tls_or_password_file_names_its_setting(
    changes: dict[str, str], setting: str, tmp_path: Path
) -> None:
    paths = {"missing": str(tmp_path / "missing.pem"), "garbage": str(tmp_path / "garbage.pem")}
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    settings = WorkerSettings(
        security_protocol="SASL_SSL", sasl_username="u", **{k: v.format(**paths) for k, v in changes.items()}
    )
    with pytest.raises(KafkaSettingsError) as caught:
        settings.kafka_python_options()
    assert setting.format(**paths) in str(caught.value)


@pytest.mark.parametrize(
    "env",
    [
        {"MOTIONGUARD_SASL_MECHANISM": "OAUTHBEARER"},
        {"MOTIONGUARD_SASL_PASSWORD": "a", "MOTIONGUARD_SASL_PASSWORD_FILE": "/run/secrets/p"},
        {"MOTIONGUARD_SSL_KEYFILE": "/tls/client.key"},
        {"MOTIONGUARD_SSL_CHECK_HOSTNAME": "maybe"},
    ],
)
def test_kafka_security_settings_that_cannot_work_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        settings_from_env(env)


def test_review_console_settings_have_their_own_prefix() -> None:
    env = {
        "MOTIONGUARD_BROKER": "kafka://k:9092",
        "MOTIONGUARD_REVIEW_PORT": "9000",
        "MOTIONGUARD_REVIEW_AUDIT_FRACTION": "0.05",
        "MOTIONGUARD_REVIEW_COOKIE_SECURE": "false",
        "MOTIONGUARD_REVIEW_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
        "MOTIONGUARD_REVIEW_PROXY_USER_HEADER": "X-Forwarded-User",
    }
    review = review_settings_from_env(env)
    assert (review.port, review.audit_fraction, review.cookie_secure) == (9000, 0.05, False)
    assert review.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")
    assert settings_from_env(env).bootstrap_servers == ["k:9092"]  # the worker skips the console's variables
    with pytest.raises(ValueError, match="unknown setting MOTIONGUARD_REVIEW_PROT"):
        review_settings_from_env({"MOTIONGUARD_REVIEW_PROT": "1"})
    with pytest.raises(ValueError, match="MOTIONGUARD_REVIEW_PORT='x'"):
        review_settings_from_env({"MOTIONGUARD_REVIEW_PORT": "x"})
    with pytest.raises(ValueError, match="audit_fraction"):
        review_settings_from_env({"MOTIONGUARD_REVIEW_AUDIT_FRACTION": "1.5"})
    with pytest.raises(ValueError, match="trusted_proxies"):
        review_settings_from_env({"MOTIONGUARD_REVIEW_PROXY_USER_HEADER": "X-User"})
