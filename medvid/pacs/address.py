"""Where a PACS is and how to log in: ``http(s)://…`` (DICOMweb: QIDO-RS, WADO-RS, STOW-RS) or
``dimse://AET@host:port`` (DIMSE: C-FIND, C-GET, C-STORE).

Credentials never come from the command line (it shows in ``ps`` and shell history): from a JSON file
(``{"username": …, "password": …}`` or ``{"token": …}``) or from the environment (``MEDVID_PACS_TOKEN``, or
``MEDVID_PACS_USER`` + ``MEDVID_PACS_PASSWORD``). TLS certificates are verified unless told otherwise.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from medvid.errors import MedvidError

_AET = re.compile(r"^[\x20-\x7e]{1,16}$")  # an Application Entity title: up to 16 printable ASCII characters


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    token: str = ""

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(username={'set' if self.username else 'unset'}, secret={'set' if self.password or self.token else 'unset'})"


@dataclass(frozen=True)
class PacsAddress:
    """A parsed PACS URL: ``kind`` is ``dicomweb`` or ``dimse``."""

    kind: str
    url: str = ""  # DICOMweb base URL
    host: str = ""
    port: int = 0
    called_aet: str = ""

    def describe(self) -> str:
        """The destination without credentials, for logs and the app."""
        return self.url if self.kind == "dicomweb" else f"dimse://{self.called_aet}@{self.host}:{self.port}"


def parse_address(url: str) -> PacsAddress:
    """``http(s)://host[:port]/path`` → DICOMweb; ``dimse://AET@host:port`` → DIMSE; anything else refused."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if parts.username or parts.password:
            raise MedvidError("put PACS credentials in a credentials file or the environment, not in the URL")
        if not parts.hostname:
            raise MedvidError(f"not a DICOMweb URL (no host): {url}")
        return PacsAddress("dicomweb", url=url.rstrip("/"))
    if parts.scheme == "dimse":
        aet = parts.username or ""
        if not _AET.match(aet) or not parts.hostname or not parts.port:
            raise MedvidError(f"a DIMSE address is dimse://AET@host:port (AE title up to 16 characters): {url}")
        return PacsAddress("dimse", host=parts.hostname, port=parts.port, called_aet=aet)
    raise MedvidError(f"unknown PACS address {url!r}: use http(s)://… (DICOMweb) or dimse://AET@host:port")


def check_aet(aet: str) -> str:
    """Our own AE title, validated."""
    if not _AET.match(aet) or aet != aet.strip():
        raise MedvidError(f"ae_title must be 1-16 printable ASCII characters without leading/trailing spaces: {aet!r}")
    return aet


def load_credentials(path: str = "", environ: dict[str, str] | None = None) -> Credentials:
    """Credentials from ``path`` (JSON) when given, else from the environment; empty when neither has any."""
    env = os.environ if environ is None else environ
    if path:
        file = Path(path)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise MedvidError(f"{file}: cannot read PACS credentials ({type(exc).__name__})") from exc
        if not isinstance(data, dict) or not ({"token"} <= set(data) or {"username", "password"} <= set(data)):
            raise MedvidError(f"{file}: expected {{\"username\": …, \"password\": …}} or {{\"token\": …}}")
        return Credentials(str(data.get("username", "")), str(data.get("password", "")), str(data.get("token", "")))
    return Credentials(env.get("MEDVID_PACS_USER", ""), env.get("MEDVID_PACS_PASSWORD", ""),
                       env.get("MEDVID_PACS_TOKEN", ""))
