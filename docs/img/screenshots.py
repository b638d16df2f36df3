"""Retake the README / docs app screenshots from a real demo output: start `medvid app` on DEMO_OUT, drive
headless Chromium (the browser test's ``Browser``) through the four pages and keep one small PNG per page
in docs/img/.

Usage: ``python docs/img/screenshots.py demo_out`` (after ``make demo``; needs Debian's ``chromium``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.test_app_browser import Browser, _free_port, _keep, wait_healthy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("demo_out", type=Path)
    args = ap.parse_args()
    out = args.demo_out.resolve()
    drafts = [json.loads(line) for line in (out / "echo" / "drafts" / "drafts.jsonl").read_text().splitlines() if line]
    study = min(drafts, key=lambda r: r["phenotypes"]["ef"]["value"] or 100)["study_key"]  # a low-EF study
    n_loops = len(next(r for r in drafts if r["study_key"] == study)["videos"])
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp()) / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "medvid.cli", "app", "--data", str(out), "--dicom-root",
                             str(out / "echo" / "synth" / "dicom"), "--port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    os.environ["MEDVID_APP_SCREENSHOTS"] = str(REPO / "docs" / "img")
    pages = {"home": ("/", "document.querySelector('h1')"),
             "studies": ("/Echo_studies", "document.querySelector('table a[href^=\"Study?study=\"]')"),
             "study": (f"/Study?study={study}", f"document.querySelectorAll('video').length >= {n_loops}"),
             "surgical": ("/Surgical_video", "document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= 3")}
    try:
        wait_healthy(url, proc, log)
        with tempfile.TemporaryDirectory() as tmp:
            browser = Browser(Path(tmp) / "profile")
            try:
                for name, (path, ready) in pages.items():
                    browser.open(url + path, ready, timeout=180)
                    shot = Path(tmp) / f"{name}.png"
                    browser.screenshot(shot)
                    _keep(shot, name)
                    print(f"docs/img/app_{name}.png")
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
