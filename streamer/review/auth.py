"""Who is signed in: a local users file with argon2 hashes, or an authenticating proxy.

* **Users file**: one ``name:role:hash`` line per user (``role`` is ``moderator``
  or ``viewer``; ``hash`` an argon2id hash from argon2-cffi), written by
  ``motionguard review add-user`` with mode 0600.  A sign-in checks the
  password with argon2 (an unknown name is checked against a dummy hash, so
  both take the same time) and stores the user in the signed session cookie.
* **Proxy**: with ``proxy_user_header`` set, a request whose *direct peer* is
  one of ``trusted_proxies`` is signed in as that header's user; the role is
  ``moderator`` when ``proxy_groups_header`` lists ``proxy_moderator_group``.
  The header from anyone else is ignored.  uvicorn runs with
  ``proxy_headers=False``, so the peer address is the TCP peer, never a
  ``X-Forwarded-For`` value.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

logger = logging.getLogger(__name__)

Role = Literal["moderator", "viewer"]
ROLES: tuple[Role, ...] = ("moderator", "viewer")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password anyone has")


class UsersFileError(ValueError):
    """The users file or a user given to ``add-user`` is not valid."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    @property
    def can_decide(self) -> bool:
        return self.role == "moderator"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsersFileError(
            "a user name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return name


def read_users(path: Path) -> dict[str, tuple[Role, str]]:
    """``{name: (role, hash)}``; a missing file means no users."""
    if not path.exists():
        return {}
    users: dict[str, tuple[Role, str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[1] not in ROLES or not parts[2].startswith("$argon2"):
            raise UsersFileError(f"{path} line {number} is not 'name:moderator|viewer:argon2-hash'")
        users[check_name(parts[0])] = (parts[1], parts[2])
    return users


def add_user(path: Path, name: str, role: str, password: str) -> None:
    """Add or replace a user; the file is rewritten atomically with mode 0600."""
    check_name(name)
    if role not in ROLES:
        raise UsersFileError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise UsersFileError("a password needs at least 8 characters")
    users = read_users(path)
    users[name] = (role, _hasher.hash(password))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".users-", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write("# motionguard review users: name:role:argon2-hash (edit with `motionguard review add-user`)\n")
            for user, (user_role, hashed) in sorted(users.items()):
                out.write(f"{user}:{user_role}:{hashed}\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class UserStore:
    """The users file, read again when it changes (``add-user`` on a running console)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._users: dict[str, tuple[Role, str]] = {}
        self._mtime: float | None = None

    def _load(self) -> dict[str, tuple[Role, str]]:
        if self.path is None:
            return {}
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            self._users = read_users(self.path)
            self._mtime = mtime
        return self._users

    def authenticate(self, name: str, password: str) -> User | None:
        entry = self._load().get(name)
        try:
            _hasher.verify(entry[1] if entry else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if entry is None:
            return None
        return User(name=name, role=entry[0])

    def role_of(self, name: str) -> Role | None:
        """A signed-in user's current role (None once removed from the file)."""
        entry = self._load().get(name)
        return entry[0] if entry else None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ProxyAuth:
    user_header: str
    groups_header: str
    moderator_group: str
    trusted: tuple[Network, ...]

    @classmethod
    def create(
        cls, user_header: str, groups_header: str, moderator_group: str, trusted: tuple[str, ...]
    ) -> ProxyAuth | None:
        if not user_header:
            return None
        return cls(
            user_header=user_header,
            groups_header=groups_header,
            moderator_group=moderator_group,
            trusted=tuple(ipaddress.ip_network(net, strict=False) for net in trusted),
        )

    def user(self, peer: str | None, headers: dict[str, str]) -> User | None:
        if peer is None:
            return None
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return None
        if not any(address in network for network in self.trusted):
            return None
        name = headers.get(self.user_header.lower(), "").strip()
        if not name or not _NAME.match(name):
            return None
        groups = {g.strip() for g in headers.get(self.groups_header.lower(), "").split(",")}
        return User(name=name, role="moderator" if self.moderator_group in groups else "viewer")
