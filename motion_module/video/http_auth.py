"""WebUI's API credentials (``--api-auth user:password[,user2:password2]``), for the extension's own routes.

A1111 guards its ``/sdapi`` routes with HTTP Basic auth when ``--api-auth`` is given, but routes an extension
adds to the app are open unless the extension guards them itself; the adapter does, with these two functions.
"""

from __future__ import annotations

from hmac import compare_digest


def parse_credentials(text: str | None) -> dict[str, str]:
    """``"alice:secret,bob:pw"`` -> ``{"alice": "secret", "bob": "pw"}``; empty/None -> ``{}`` (no auth)."""
    credentials: dict[str, str] = {}
    if not text or not text.strip():
        return credentials
    for entry in text.split(","):
        user, colon, password = entry.strip().partition(":")
        if not colon or not user:
            raise ValueError("--api-auth expects user:password pairs separated by commas")
        credentials[user] = password
    return credentials


def allowed(credentials: dict[str, str], user: str, password: str) -> bool:
    """Whether ``user``/``password`` is one of ``credentials`` (constant-time password comparison)."""
    expected = credentials.get(user)
    return expected is not None and compare_digest(password.encode("utf-8"), expected.encode("utf-8"))


__all__ = ["allowed", "parse_credentials"]
