"""Can this process reach, authenticate to and use Kafka?  One clear sentence when not.

Kafka clients report a refused TLS certificate, a wrong SASL password or a
missing client certificate the same way: aiokafka logs the cause and raises
``Unable to bootstrap``, kafka-python times out with ``Unable to bootstrap``
(evidence: tests/streamer/test_secure_kafka.py).  So before the worker starts
its Kafka clients, and when a command-line tool cannot connect,
:func:`check_kafka_access` opens one connection per bootstrap server with
aiokafka's :func:`aiokafka.conn.create_conn` (TLS handshake, SASL
authentication), asks for the metadata of the topics the caller needs, and
turns the first failure into :class:`KafkaAccessError`, whose message names the
cause and the setting to look at - never a password.

:func:`wait_for_kafka_access` is the worker's start-up gate: it retries with
exponential back-off while serving ``/healthz`` (200), ``/ready`` (503, with the
reason) and ``/metrics`` on the worker's web port, so a pod with a wrong
password stays alive and not ready, consuming and committing nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.protocol.metadata import MetadataRequest

from streamer.settings import KafkaSettingsError, WorkerSettings, setting_name

logger = logging.getLogger(__name__)

__all__ = ["KafkaAccessError", "check_kafka_access", "describe_principal", "wait_for_kafka_access"]

#: Kafka's error codes for a topic in a metadata response.
_TOPIC_AUTHORIZATION_FAILED = 29
_UNKNOWN_TOPIC = 3
MAX_BACKOFF_SECONDS = 30.0


class KafkaAccessError(RuntimeError):
    """Kafka cannot be used with these settings; ``str()`` is one line naming the cause."""


def check_kafka_access(settings: WorkerSettings, topics: tuple[str, ...] = (), timeout_seconds: float = 10.0) -> None:
    """Raise :class:`KafkaAccessError` unless a bootstrap server accepts us and shows ``topics``.

    A topic that does not exist yet is fine (the worker may create it); one the
    principal may not see is not.
    """
    asyncio.run(_check(settings, topics, timeout_seconds))


async def _check(settings: WorkerSettings, topics: tuple[str, ...], timeout_seconds: float) -> None:
    try:
        options = settings.aiokafka_options()
    except KafkaSettingsError as e:
        raise KafkaAccessError(str(e)) from e
    options.pop("bootstrap_servers")
    servers = settings.bootstrap_servers
    if not servers:
        raise KafkaAccessError(f"{setting_name('broker')} names no bootstrap server")
    errors: list[KafkaAccessError] = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            await _check_server(settings, host, int(port), options, topics, timeout_seconds)
            return
        except KafkaAccessError as e:
            errors.append(e)
    raise errors[0]  # every server failed; the first says why (they rarely differ)


async def _check_server(
    settings: WorkerSettings,
    host: str,
    port: int,
    options: dict[str, Any],
    topics: tuple[str, ...],
    timeout_seconds: float,
) -> None:
    where = f"{host}:{port}"
    conn = None
    try:
        timeout_ms = int(timeout_seconds * 1000)
        connecting = create_conn(
            host, port, client_id="motionguard-access-check", request_timeout_ms=timeout_ms, **options
        )
        conn = await asyncio.wait_for(connecting, timeout_seconds)
        # With TLS 1.3 a refused client certificate shows only on the first request.
        response = await asyncio.wait_for(
            conn.send(MetadataRequest(list(topics) or None, allow_auto_topic_creation=False)), timeout_seconds
        )
    except SaslAuthenticationFailed as e:
        raise KafkaAccessError(
            f"Kafka at {where} refused SASL {settings.sasl_mechanism} authentication for user "
            f"{settings.sasl_username!r} (wrong {setting_name('sasl_username')} or password): {_text(e)}"
        ) from e
    except UnsupportedSaslMechanismError as e:
        raise KafkaAccessError(
            f"Kafka at {where} does not offer {setting_name('sasl_mechanism')}={settings.sasl_mechanism}: {_text(e)}"
        ) from e
    except ssl.SSLCertVerificationError as e:
        raise KafkaAccessError(
            f"TLS: the certificate of Kafka at {where} was refused: {e.verify_message} (check "
            f"{setting_name('ssl_cafile')}, and that the broker's certificate names {host!r})"
        ) from e
    except ssl.SSLError as e:
        raise KafkaAccessError(
            f"TLS: Kafka at {where} refused the connection ({e.reason or e}); does it require a client certificate "
            f"from its CA ({setting_name('ssl_certfile')})?"
        ) from e
    except TimeoutError as e:
        raise KafkaAccessError(f"Kafka at {where} did not answer within {timeout_seconds:.0f} s") from e
    except ConnectionRefusedError as e:
        raise KafkaAccessError(f"no Kafka broker listens at {where} (connection refused)") from e
    except (KafkaError, OSError) as e:
        hint = _protocol_hint(settings)
        raise KafkaAccessError(f"Kafka at {where} closed the connection ({_text(e)}){hint}") from e
    finally:
        if conn is not None:
            conn.close()
    for topic in response.topics:
        error_code, name = topic[0], topic[1]
        if error_code == _TOPIC_AUTHORIZATION_FAILED:
            raise KafkaAccessError(
                f"Kafka at {where}: {describe_principal(settings)} is not authorised to use topic {name!r}"
            )
        if error_code not in (0, _UNKNOWN_TOPIC):
            logger.debug("metadata of %s: error code %d", name, error_code)


def _text(error: BaseException) -> str:
    return str(error).strip() or type(error).__name__


def describe_principal(settings: WorkerSettings) -> str:
    """Who these settings connect as, for messages (``user 'worker'``, ``the client certificate ...``)."""
    if settings.uses_sasl:
        return f"user {settings.sasl_username!r}"
    if settings.ssl_certfile:
        return f"the client certificate {settings.ssl_certfile}"
    return "an anonymous client"


def _protocol_hint(settings: WorkerSettings) -> str:
    """What a broker that hangs up at once most likely wants."""
    name = setting_name("security_protocol")
    if settings.security_protocol == "PLAINTEXT":
        return f"; it probably requires TLS and/or SASL ({name}=PLAINTEXT)"
    if settings.security_protocol == "SSL" and not settings.ssl_certfile:
        return f"; it probably requires SASL or a client certificate ({name}=SSL, no {setting_name('ssl_certfile')})"
    if settings.ssl_certfile:
        return (
            f"; did it refuse the client certificate {setting_name('ssl_certfile')}={settings.ssl_certfile} "
            "(not signed by a CA it trusts)?"
        )
    return f" ({name}={settings.security_protocol})"


# ------------------------------------------------------------------------- the worker's gate


class _GateState:
    def __init__(self, metrics_page: Callable[[], tuple[bytes, str]]) -> None:
        self.reason = "not checked yet"
        self.metrics_page = metrics_page


def _handler(state: _GateState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._reply(200, json.dumps({"status": "alive"}).encode(), "application/json")
            elif path == "/ready":
                body = {"ready": False, "partitions_assigned": False, "kafka": state.reason}
                self._reply(503, json.dumps(body).encode(), "application/json")
            elif path == "/metrics":
                self._reply(200, *state.metrics_page())
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("gate: " + format, *args)

    return Handler


def wait_for_kafka_access(
    settings: WorkerSettings,
    metrics_page: Callable[[], tuple[bytes, str]],
    first_backoff_seconds: float = 1.0,
) -> None:
    """Block until :func:`check_kafka_access` passes for the worker's topics.

    Meanwhile the web port answers ``/healthz`` 200, ``/ready`` 503 (with the
    reason) and ``/metrics`` (``metrics_page()`` gives the body and its content
    type); each failed attempt is logged (ERROR) with its reason.
    """
    topics = settings.topics.all()
    try:
        check_kafka_access(settings, topics)
        return
    except KafkaAccessError as e:
        first_error = e
    state = _GateState(metrics_page)
    server = ThreadingHTTPServer((settings.web_host, settings.web_port), _handler(state))
    thread = threading.Thread(target=server.serve_forever, name="kafka-gate-web", daemon=True)
    thread.start()
    delay = first_backoff_seconds
    error: KafkaAccessError | None = first_error
    try:
        while error is not None:
            state.reason = str(error)
            logger.error("not ready: %s; retrying in %.0f s", error, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
            try:
                check_kafka_access(settings, topics)
                error = None
            except KafkaAccessError as e:
                error = e
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    logger.info("Kafka accepts this worker now; starting")
