"""WebUI's --api-auth value, read for the extension's own routes (scripts/animatediff_memory.py)."""

from __future__ import annotations

import pytest

from motion_module.video.http_auth import allowed, parse_credentials


def test_parse_like_webui() -> None:
    assert parse_credentials(None) == parse_credentials("") == parse_credentials("  ") == {}
    assert parse_credentials("alice:secret, bob:p:w") == {"alice": "secret", "bob": "p:w"}
    for bad in ("alice", ":pw", "alice:pw,,"):
        with pytest.raises(ValueError, match="user:password"):
            parse_credentials(bad)


def test_allowed_only_for_a_known_user_and_the_right_password() -> None:
    credentials = parse_credentials("alice:secret,bob:")
    assert allowed(credentials, "alice", "secret")
    assert not allowed(credentials, "alice", "Secret") and not allowed(credentials, "alice", "")
    assert not allowed(credentials, "carol", "secret") and not allowed({}, "alice", "secret")
    assert allowed(credentials, "bob", "")  # an empty password is what was configured
