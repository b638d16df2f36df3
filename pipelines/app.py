"""``medvid app --data DIR [--data DIR ...] [--dicom-root DIR]``: the review app (Streamlit).

Starts ``streamlit run apps/review_app.py`` headless on 127.0.0.1 (a non-local address needs
``allow_remote=true`` and prints a warning) in its own process group, with Streamlit's Host allow-list
set (DNS rebinding); passes the data roots in ``MEDVID_APP_CONFIG`` and a fresh launch token in
``MEDVID_APP_TOKEN`` (never on the command line), and prints the address with the token on stderr.
SIGTERM, SIGINT and SIGHUP stop the whole server tree. Blocks until the server stops; returns a summary.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import medvid.apps
from medvid.apps.access import TOKEN_ENV, allowed_hosts, new_token
from medvid.apps.store import ENV, AppConfig
from medvid.config import setting
from medvid.errors import MedvidError
from medvid.pacs.address import parse_address

APP = Path(medvid.apps.__file__).resolve().parent / "review_app.py"  # installed as medvid/apps, kept in apps/


@dataclass
class Config:
    data: list[str] = setting(help="output folders: ingest, draft, zero-shot outputs, Cholec80 roots (or folders "
                                   "above them)", factory=list)
    dicom_root: list[str] = setting(help="DICOM folder(s) given to `medvid ingest`: needed to show the cine loops",
                                    factory=list)
    cache_dir: str = setting("", "rendered loops (small H.264 MP4s); blank = <first data root>/app_cache")
    keys_dir: str = setting("", "the ingest's key folder when it was kept outside the ingest (ingest keys_dir=); "
                                "blank = inside")
    pacs_url: str = setting("", "PACS the Send to PACS page files signed reports into: http(s)://host/dicom-web or "
                                "dimse://AET@host:port; blank = the page only shows how to set one")
    pacs_credentials: str = setting("", "JSON credentials file for that PACS; blank: MEDVID_PACS_USER + "
                                        "MEDVID_PACS_PASSWORD or MEDVID_PACS_TOKEN from the environment")
    pacs_ingest: str = setting("", "the ingest the drafts came from: its key folder (keys_dir= when kept outside) "
                                   "re-identifies reports at send time")
    address: str = setting("127.0.0.1", "a non-local address needs allow_remote=true (and prints a warning)")
    port: int = setting(8501, "port the app listens on")
    allow_remote: bool = setting(False, "required for any non-loopback address")
    hosts: list[str] = setting(help="extra host names browsers may use to reach the app (e.g. this machine's DNS "
                                    "name when address=0.0.0.0); loopback names and the address are always allowed",
                               factory=list)


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def app_config(cfg: Config) -> AppConfig:
    """Check the folders and build what the app reads from ``MEDVID_APP_CONFIG``."""
    if not cfg.data:
        raise MedvidError("give at least one data folder (--data DIR)")
    for p in [*cfg.data, *cfg.dicom_root, *([cfg.pacs_ingest] if cfg.pacs_ingest else [])]:
        if not Path(p).is_dir():
            raise MedvidError(f"{p}: not a folder")
    data = tuple(Path(p).resolve() for p in cfg.data)
    cache = Path(cfg.cache_dir).resolve() if cfg.cache_dir else None
    if cache is not None and not any(cache.is_relative_to(r) for r in data):
        raise MedvidError(f"cache_dir {cache} must lie under a data root (the app serves files from the roots only)")
    return AppConfig(data=data, dicom_roots=tuple(Path(p).resolve() for p in cfg.dicom_root), cache_dir=cache,
                     keys_dir=Path(cfg.keys_dir).resolve() if cfg.keys_dir else None,
                     hosts=allowed_hosts(cfg.address, cfg.hosts),
                     pacs_url=parse_address(cfg.pacs_url).describe() if cfg.pacs_url else "",
                     pacs_credentials=str(Path(cfg.pacs_credentials).resolve()) if cfg.pacs_credentials else "",
                     pacs_ingest=Path(cfg.pacs_ingest).resolve() if cfg.pacs_ingest else None)


def command(cfg: Config) -> list[str]:
    hosts = [arg for host in allowed_hosts(cfg.address, cfg.hosts) for arg in ("--server.allowedHosts", host)]
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
            "--server.address", cfg.address, "--server.port", str(cfg.port), "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
            "--client.toolbarMode", "minimal", "--server.enableCORS", "true", "--server.enableXsrfProtection", "true",
            *hosts]


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_S = 10.0  # after a stop signal, the server's process group gets this long before SIGKILL


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the server's process group while its leader is not yet reaped (so the group id is still ours)."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def serve(cmd: list[str], env: dict[str, str]) -> tuple[int, str | None]:
    """Run ``cmd`` in its own process group until it exits; SIGTERM/SIGINT/SIGHUP to this process stop the group.

    Returns the server's exit code and the name of the signal that stopped it (None when it stopped on its own).
    """
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    received: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        received.append(signum)
        _signal_group(proc, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        deadline = None
        while (rc := proc.poll()) is None:
            if received and deadline is None:
                deadline = time.monotonic() + GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                _signal_group(proc, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:  # an exception while waiting: never leave the server behind
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return rc, signal.Signals(received[0]).name if received else None


def run(cfg: Config) -> dict:
    if not _is_loopback(cfg.address):
        if not cfg.allow_remote:
            raise MedvidError(f"address {cfg.address} is not local: the app serves patient images; "
                              "pass allow_remote=true (--allow-remote) to bind it anyway")
        print(f"WARNING: the review app listens on {cfg.address}:{cfg.port}, reachable from other machines. "
              "Anyone who can reach it sees the studies; use a firewall or an authenticating proxy.", file=sys.stderr)
    app_cfg = app_config(cfg)
    token = new_token()
    env = {**os.environ, ENV: app_cfg.to_json(), TOKEN_ENV: token}
    host = f"[{cfg.address}]" if ":" in cfg.address else cfg.address
    # straight to the terminal, never through logging (log files may be shared): the token opens the app
    print(f"medvid app: open http://{host}:{cfg.port}/?token={token}", file=sys.stderr, flush=True)
    rc, stopped_by = serve(command(cfg), env)
    return {"address": cfg.address, "port": cfg.port, "data_roots": len(app_cfg.data), "exit_code": rc,
            "stopped_by": stopped_by}
