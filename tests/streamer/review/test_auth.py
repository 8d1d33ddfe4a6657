"""Sign-in without a broker: the users file (argon2) and the trusted-proxy header."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streamer.review.auth import ProxyAuth, UsersFileError, UserStore, add_user, read_users


def test_users_file_holds_argon2_hashes_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "users"
    add_user(path, "ann", "moderator", "a long password")
    add_user(path, "vic", "viewer", "another password")
    add_user(path, "ann", "viewer", "a new password")  # replaces ann
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "a long password" not in text and "$argon2id$" in text
    assert {name: role for name, (role, _) in read_users(path).items()} == {"ann": "viewer", "vic": "viewer"}
    store = UserStore(path)
    assert store.authenticate("ann", "a new password").role == "viewer"  # type: ignore[union-attr]
    assert store.authenticate("ann", "a long password") is None
    assert store.authenticate("nobody", "a new password") is None
    assert store.role_of("vic") == "viewer" and store.role_of("nobody") is None


@pytest.mark.parametrize(
    ("name", "role", "password", "complaint"),
    [
        ("ann:x", "moderator", "long enough", "user name"),
        ("ann", "admin", "long enough", "role"),
        ("ann", "viewer", "short", "8 characters"),
    ],
)
def test_add_user_refuses_bad_input(tmp_path: Path, name: str, role: str, password: str, complaint: str) -> None:
    with pytest.raises(UsersFileError, match=complaint):
        add_user(tmp_path / "users", name, role, password)
    assert not (tmp_path / "users").exists()


def test_a_damaged_users_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("ann:moderator:plaintext\n")
    with pytest.raises(UsersFileError, match="line 1"):
        read_users(path)


def test_proxy_header_is_trusted_only_from_the_proxy() -> None:
    proxy = ProxyAuth.create("X-Forwarded-User", "X-Forwarded-Groups", "mods", ("10.1.0.0/16",))
    assert proxy is not None
    headers = {"x-forwarded-user": "ann", "x-forwarded-groups": "staff, mods"}
    user = proxy.user("10.1.2.3", headers)
    assert user is not None and (user.name, user.role) == ("ann", "moderator")
    assert proxy.user("10.1.2.3", {"x-forwarded-user": "bob"}).role == "viewer"  # type: ignore[union-attr]
    assert proxy.user("192.168.0.9", headers) is None  # anyone else sending the header
    assert proxy.user(None, headers) is None
    assert proxy.user("10.1.2.3", {"x-forwarded-user": "<script>"}) is None
    assert ProxyAuth.create("", "X-Forwarded-Groups", "mods", ()) is None
