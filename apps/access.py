"""Who may open the review app: the per-launch token and the Host / Origin names a browser may use.

``medvid app`` makes a random token per launch (as Jupyter does) and hands it to the app in
``MEDVID_APP_TOKEN``; every session must present it once (``?token=`` in the printed address). The
Host and Origin allow-list (loopback names and the configured address) stops DNS rebinding: a page on
another name that was rebound to this machine sends its own name in both headers. No Streamlit here.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from typing import Mapping, Sequence
from urllib.parse import urlsplit

TOKEN_ENV = "MEDVID_APP_TOKEN"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def new_token() -> str:
    """A fresh launch token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def launch_token(environ: Mapping[str, str] | None = None) -> str:
    """The token `medvid app` set for this launch; '' when the app was not started by it (then nothing opens)."""
    return (environ if environ is not None else os.environ).get(TOKEN_ENV, "")


def token_ok(given: object, expected: str) -> bool:
    """Constant-time comparison; an empty expected token accepts nothing."""
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def allowed_hosts(address: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Host names a browser may use: the loopback names, the bind address (unless a wildcard) and ``extra``."""
    names = [a.lower().strip("[]").rstrip(".") for a in (address, *extra) if a not in ("", "0.0.0.0", "::")]
    return tuple(dict.fromkeys((*LOOPBACK_NAMES, *names)))


def _hostname(netloc: str) -> str | None:
    """The host name of ``host[:port]`` (IPv6 in brackets), lower case; None when malformed."""
    try:
        parts = urlsplit(f"//{netloc}")
        _ = parts.port  # validates the port
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.password is not None or parts.path:
        return None
    return parts.hostname.lower().rstrip(".")


def _is_allowed_name(name: str | None, allowed: tuple[str, ...]) -> bool:
    if name is None:
        return False
    if name in allowed:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def headers_ok(headers: Mapping[str, str], allowed: tuple[str, ...]) -> bool:
    """True when the session's Host is an allowed name and its Origin (when sent) is on an allowed name.

    A session without any request headers (none came from a browser, e.g. Streamlit's AppTest) passes
    this check; it still needs the token.
    """
    if not headers:
        return True
    if not _is_allowed_name(_hostname(headers.get("Host", "")), allowed):
        return False
    origin = headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and _is_allowed_name(_hostname(parts.netloc), allowed)
