"""The review app in a real browser: `medvid app` (streamlit run) on a free local port over a small
synthetic output, driven by headless Chromium (--dump-dom, --screenshot). Skips without chromium.

Set MEDVID_APP_SCREENSHOTS=DIR to keep one small PNG per page there (docs/img/ was made that way).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from app_testdata import SECTIONS, build_outputs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Wait until the streamlit server at ``url`` answers its health check; its log if it never does."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("streamlit did not start: " + log.read_text())
            time.sleep(0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    out = build_outputs(tmp_path_factory.mktemp("browser"), tiny_model())
    port = _free_port()
    log = open(out["data"].parent / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "medvid.cli", "app", "--data", str(out["data"]),
                             "--dicom-root", str(out["dicom"]), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, out["data"].parent / "server.log")
        yield {**out, "url": f"http://127.0.0.1:{port}"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


class Browser:
    """Headless Chromium driven over the DevTools protocol (websockets, which streamlit already needs):
    load a page, wait until a JavaScript condition holds (the app streams its elements over a websocket),
    then read the DOM and take a screenshot."""

    def __init__(self, profile: Path) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars",
             "--window-size=1280,1000", "--remote-debugging-port=0",
             # as after a click in the app: a fresh headless profile may otherwise block autoplay when
             # the media loads before the player is muted
             "--autoplay-policy=no-user-gesture-required", "--disable-background-media-suspend",
             "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
             "--disable-background-timer-throttling", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file, deadline = profile / "DevToolsActivePort", time.time() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start")
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        self._id = 0

    def call(self, method: str, timeout: float = 60, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=timeout))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, js: str):
        return self.call("Runtime.evaluate", expression=js, returnByValue=True)["result"].get("value")

    def open(self, url: str, ready_js: str, timeout: float = 60) -> str:
        """Navigate, wait for ``ready_js`` to be true and the app to stop running; returns the DOM."""
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout
        while not self.eval(f"Boolean({ready_js}) && !document.querySelector('[data-testid=stStatusWidget]')"):
            if time.time() > deadline:
                raise AssertionError(f"{url}: not ready ({ready_js})")
            time.sleep(0.5)
        time.sleep(1.5)  # charts draw asynchronously after their element appears
        return self.eval("document.documentElement.outerHTML")

    def screenshot(self, path: Path, tries: int = 3) -> None:
        """PNG of the viewport. Playing loops are paused first: on a loaded machine headless Chromium may
        not hand out a frame while several videos decode, so a capture that stalls is asked for again."""
        self.eval("document.querySelectorAll('video').forEach(v => v.pause())")
        self.call("Page.bringToFront")
        for attempt in range(tries):
            try:
                shot = self.call("Page.captureScreenshot", timeout=45, format="png", fromSurface=True)
                break
            except TimeoutError:
                if attempt == tries - 1:
                    raise
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.ws.close()
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=10)


def _keep(shot: Path, name: str) -> None:
    """Copy a screenshot, downscaled and palette-quantised (small PNG), to MEDVID_APP_SCREENSHOTS."""
    target = os.environ.get("MEDVID_APP_SCREENSHOTS")
    if not target or not shot.exists():
        return
    from PIL import Image

    with Image.open(shot) as im:
        im = im.convert("RGB")
        im = im.resize((960, int(im.height * 960 / im.width)), Image.LANCZOS)
        im.quantize(colors=128).save(Path(target) / f"app_{name}.png", optimize=True)


_VIDEOS_JS = ("JSON.stringify(Array.from(document.querySelectorAll('video')).map(v => "
              "({muted: v.muted, autoplay: v.autoplay, ready: v.readyState, width: v.videoWidth, "
              "error: v.error && v.error.code, paused: v.paused, t: v.currentTime})))")  # autoplay: diagnostics only


def _check_loops_play(browser: Browser, n_loops: int) -> None:
    """Every loop decodes in the browser (H.264), muted; a loop that reached its end plays again.
    Headless Chromium sometimes never starts muted autoplay (it runs no rendering frames on its own, so
    the players may never count as visible): loops still at 0 s after 8 s are started as a click on
    play would, and must then loop. (The players' ``autoplay`` property is not asserted: a CI run saw
    it false on two players that had already played.)"""
    browser.eval("document.querySelectorAll('video').forEach(v => { v.dataset.ended = 0; "
                 "v.addEventListener('ended', () => { v.dataset.ended = Number(v.dataset.ended) + 1; }); })")
    restarted_js = ("Array.from(document.querySelectorAll('video'))"
                    ".some(v => Number(v.dataset.ended) > 0 && !v.paused && v.currentTime < v.duration)")
    never_started_js = "Array.from(document.querySelectorAll('video')).every(v => v.paused && v.currentTime === 0)"
    start, nudged = time.time(), False
    while not browser.eval(restarted_js):
        assert time.time() < start + 40, f"no loop restarted after its end: {browser.eval(_VIDEOS_JS)}"
        if not nudged and time.time() > start + 8 and browser.eval(never_started_js):
            browser.eval("document.querySelectorAll('video').forEach(v => v.play())")
            nudged = True
        time.sleep(0.3)
    videos = json.loads(browser.eval(_VIDEOS_JS))
    assert len(videos) == n_loops, videos
    assert all(v["muted"] and v["error"] is None and v["ready"] >= 2 and v["width"] > 0 for v in videos), videos


def test_pages_render_in_chromium(server, tmp_path):
    url, phi = server["url"], server["phi"]
    key = server["low_ef"]
    n_loops = int((pd.read_parquet(server["data"] / "ingest" / "videos.parquet")["study_key"] == key).sum())
    pages = {"home": ("/", "document.querySelector('h1')"),
             "studies": ("/Echo_studies", "document.querySelector('table a[href^=\"Study?study=\"]')"),
             "study": (f"/Study?study={key}", f"document.querySelectorAll('video').length >= {n_loops}"),
             "surgical": ("/Surgical_video", "document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= 3")}
    doms = {}
    browser = Browser(tmp_path / "profile")
    try:
        for name, (path, ready) in pages.items():
            doms[name] = browser.open(url + path, ready)
            if name == "study":
                _check_loops_play(browser, n_loops)
            shot = tmp_path / f"{name}.png"
            browser.screenshot(shot)
            assert shot.stat().st_size > 20_000, name
            _keep(shot, name)
    finally:
        browser.close()
    assert "medvid review" in doms["home"] and "Echo studies" in doms["home"]
    for k in [*server["drafted"], server["failed"], *server["undrafted"]]:  # one table row per study
        assert f'href="Study?study={k}"' in doms["studies"], k
    assert doms["studies"].count("<tr") >= 1 + len(server["drafted"]) + 1 + len(server["undrafted"])
    study = doms["study"]
    assert study.count("<video") == n_loops  # every cine loop
    for section in SECTIONS:
        assert section in study
    assert "Left Ventricle text of draft 0" in study
    surgical = doms["surgical"]
    assert "Phase ribbon" in surgical and ("vega-embed" in surgical or "<canvas" in surgical)
    assert "<video" in surgical
    for dom in doms.values():
        for value in phi:
            assert value not in dom, value
        assert "LOCAL_KEYS_DO_NOT_SHARE" not in dom and str(server["dicom"]) not in dom
