"""TLS, SCRAM and ACL material for ``motionguard kafka start --secure`` (a development broker).

Everything lives in ``<data_dir>/security`` and is made once (later starts reuse it):

* ``ca.pem`` / ``ca.key`` - a throwaway CA (EC P-256, 30 days), made with ``openssl``;
* ``broker-<node>.keystore.pem`` - the broker's unencrypted PKCS#8 key and its certificate
  (CN ``broker``, valid for the host names only: ``localhost``), read by Kafka as a
  ``PEM`` keystore; the CA file is its ``PEM`` truststore;
* ``<user>.pem`` / ``<user>.key`` - a client certificate (CN = the user name) for each
  principal, for the mTLS listener;
* ``<user>.password`` - a random SCRAM password for each principal.

Keys and passwords are written with mode 0600 and never appear on a command line
or in a log: the SCRAM credentials are created through Kafka's admin API
(AlterUserScramCredentials) by the ``admin`` principal over mTLS.

Principals: a certificate's subject ``CN=<name>`` maps to ``User:<name>`` (one
``ssl.principal.mapping.rules`` rule), the same principal as the SCRAM user
``<name>``, so one ACL set covers both listeners.  ``broker`` and ``admin`` are
super users; ``worker``, ``submitter`` and ``moderation`` get only the ACLs of
:mod:`streamer.kafka_acls`.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "CLIENT_USERS",
    "SUPER_USERS",
    "SecurityFiles",
    "TlsMaterialError",
    "issue_certificate",
    "make_ca",
    "secure_listener_properties",
]

#: Principals with every permission: the broker itself (inter-broker and controller traffic) and the tools.
SUPER_USERS = ("broker", "admin")
#: Principals that get a client certificate and a SCRAM password.
CLIENT_USERS = ("admin", "worker", "submitter", "moderation")
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
CERT_DAYS = 30


class TlsMaterialError(RuntimeError):
    """``openssl`` could not make a key or certificate."""


@dataclass(frozen=True)
class SecurityFiles:
    """Where the secure broker's CA, keystores, client certificates and passwords are."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    def keystore(self, node_id: int) -> Path:
        return self.root / f"broker-{node_id}.keystore.pem"

    def cert(self, user: str) -> Path:
        return self.root / f"{user}.pem"

    def key(self, user: str) -> Path:
        return self.root / f"{user}.key"

    def password_file(self, user: str) -> Path:
        return self.root / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text(encoding="utf-8").strip()

    def ensure(self, hostnames: Iterable[str], node_ids: Iterable[int], users: Iterable[str] = CLIENT_USERS) -> None:
        """Make whatever is missing: the CA, a keystore per node, a certificate and password per user."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not (self.ca_cert.is_file() and self.ca_key.is_file()):
            make_ca(self.root, "ca", "MotionGuard development CA")
        names = tuple(hostnames)
        for node_id in node_ids:
            keystore = self.keystore(node_id)
            if keystore.is_file():
                continue
            with tempfile.TemporaryDirectory(dir=self.root) as tmp:
                cert, key = issue_certificate(self.ca_cert, self.ca_key, Path(tmp), "broker", "broker", names)
                _write_private(keystore, key.read_text() + cert.read_text() + self.ca_cert.read_text())
        for user in users:
            if not (self.cert(user).is_file() and self.key(user).is_file()):
                issue_certificate(self.ca_cert, self.ca_key, self.root, user, user)
            if not self.password_file(user).is_file():
                _write_private(self.password_file(user), secrets.token_urlsafe(24) + "\n")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by its owner only (no moment with wider permissions)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _openssl(*args: str, cwd: Path) -> None:
    try:
        result = subprocess.run(
            ["openssl", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
    except FileNotFoundError as e:
        raise TlsMaterialError("openssl was not found on PATH; the secure broker needs it for its CA") from e
    if result.returncode != 0:
        raise TlsMaterialError(f"openssl {args[0]} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")


def _new_key(path: Path) -> None:
    """An EC P-256 private key in unencrypted PKCS#8 (what Kafka's PEM keystore reads), mode 0600."""
    _write_private(path, "")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path), cwd=path.parent)
    os.chmod(path, 0o600)


def make_ca(directory: Path, name: str, common_name: str) -> tuple[Path, Path]:
    """A self-signed CA ``<name>.pem`` with its key ``<name>.key`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _new_key(key)
    _openssl(
        "req", "-x509", "-new", "-key", str(key), "-subj", f"/CN={common_name}", "-days", str(CERT_DAYS),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    return cert, key


def issue_certificate(
    ca_cert: Path, ca_key: Path, directory: Path, name: str, common_name: str, hostnames: Iterable[str] = ()
) -> tuple[Path, Path]:
    """``<name>.pem`` (subject ``CN=<common_name>``, signed by the CA) and ``<name>.key`` in ``directory``.

    With ``hostnames`` it is a server certificate for exactly those names (and a
    client certificate too, for the broker's own connections); without, a
    client certificate only.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _new_key(key)
    names = list(hostnames)
    extensions = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
    if names:
        alt = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}" for n in names)
        extensions += [f"subjectAltName={alt}", "extendedKeyUsage=serverAuth,clientAuth"]
    else:
        extensions.append("extendedKeyUsage=clientAuth")
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text("\n".join(extensions) + "\n", encoding="ascii")
        _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={common_name}", "-out", str(csr), cwd=directory)
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-set_serial",
            str(secrets.randbits(63)), "-days", str(CERT_DAYS), "-extfile", str(ext), "-out", str(cert),
            cwd=directory,
        )  # fmt: skip
    return cert, key


def secure_listener_properties(
    files: SecurityFiles,
    node_id: int,
    bind_host: str,
    advertised_host: str,
    sasl_port: int,
    ssl_port: int,
    controller_port: int,
) -> dict[str, str]:
    """``server.properties`` entries of one secure node (combined broker and controller).

    Listeners: ``SASL_SSL`` for SCRAM clients, ``SSL`` with required client
    certificates for mTLS clients and the broker's own traffic, ``CONTROLLER``
    (TLS with required client certificates) for KRaft.  Nothing speaks plaintext.
    """
    return {
        "listeners": (
            f"SASL_SSL://{bind_host}:{sasl_port},SSL://{bind_host}:{ssl_port},"
            f"CONTROLLER://{bind_host}:{controller_port}"
        ),
        "advertised.listeners": f"SASL_SSL://{advertised_host}:{sasl_port},SSL://{advertised_host}:{ssl_port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "SSL",
        "controller.quorum.voters": f"{node_id}@{advertised_host}:{controller_port}",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(files.keystore(node_id)),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(files.ca_cert),
        "ssl.endpoint.identification.algorithm": "https",
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        **{
            f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
            for mechanism in SCRAM_MECHANISMS
        },
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(f"User:{user}" for user in SUPER_USERS),
    }
