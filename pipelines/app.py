"""``medvid app --data DIR [--data DIR ...] [--dicom-root DIR]``: the review app (Streamlit).

Starts ``streamlit run apps/review_app.py`` headless on 127.0.0.1 (a non-local address needs
``allow_remote=true`` and prints a warning) and passes the data roots to the app in the
``MEDVID_APP_CONFIG`` environment variable. Blocks until the server stops; returns a summary.
"""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import medvid.apps
from medvid.apps.store import ENV, AppConfig
from medvid.config import setting
from medvid.errors import MedvidError

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
    address: str = setting("127.0.0.1", "a non-local address needs allow_remote=true (and prints a warning)")
    port: int = setting(8501, "port the app listens on")
    allow_remote: bool = setting(False, "required for any non-loopback address")


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
    for p in [*cfg.data, *cfg.dicom_root]:
        if not Path(p).is_dir():
            raise MedvidError(f"{p}: not a folder")
    data = tuple(Path(p).resolve() for p in cfg.data)
    cache = Path(cfg.cache_dir).resolve() if cfg.cache_dir else None
    if cache is not None and not any(cache.is_relative_to(r) for r in data):
        raise MedvidError(f"cache_dir {cache} must lie under a data root (the app serves files from the roots only)")
    return AppConfig(data=data, dicom_roots=tuple(Path(p).resolve() for p in cfg.dicom_root), cache_dir=cache,
                     keys_dir=Path(cfg.keys_dir).resolve() if cfg.keys_dir else None)


def command(cfg: Config) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
            "--server.address", cfg.address, "--server.port", str(cfg.port), "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
            "--client.toolbarMode", "minimal"]


def run(cfg: Config) -> dict:
    if not _is_loopback(cfg.address):
        if not cfg.allow_remote:
            raise MedvidError(f"address {cfg.address} is not local: the app serves patient images; "
                              "pass allow_remote=true (--allow-remote) to bind it anyway")
        print(f"WARNING: the review app listens on {cfg.address}:{cfg.port}, reachable from other machines. "
              "Anyone who can reach it sees the studies; use a firewall or an authenticating proxy.", file=sys.stderr)
    app_cfg = app_config(cfg)
    env = {**os.environ, ENV: app_cfg.to_json()}
    print(f"medvid app: http://{cfg.address}:{cfg.port}/", file=sys.stderr)
    rc = subprocess.call(command(cfg), env=env)
    return {"address": cfg.address, "port": cfg.port, "data_roots": len(app_cfg.data), "exit_code": rc}
