"""The review app as a real server: `medvid app` (streamlit run) on a free local port over a small
synthetic output, driven by headless Chromium (skipped without chromium), by a raw websocket client with
forged Host / Origin headers (DNS rebinding) and by signals to `medvid app` (the whole tree stops).

Set MEDVID_APP_SCREENSHOTS=DIR to keep one small PNG per page there (docs/img/ was made that way).
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
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

from app_testdata import SECTIONS, build_outputs, build_worklist

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")


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


def printed_token(log: Path) -> str:
    """The launch token from the address `medvid app` printed on stderr."""
    found = re.search(r"medvid app: open http://\S+/\?token=([A-Za-z0-9_-]+)", log.read_text())
    assert found, log.read_text()
    return found.group(1)


@contextlib.contextmanager
def serve_app(out: dict):
    """`medvid app` over ``out["data"]`` (loops from ``out["dicom"]``) on a free port, stopped afterwards."""
    port = _free_port()
    log = open(out["data"].parent / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "medvid.cli", "app", "--data", str(out["data"]),
                             "--dicom-root", str(out["dicom"]), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, out["data"].parent / "server.log")
        yield {**out, "url": f"http://127.0.0.1:{port}", "port": port,
               "token": printed_token(out["data"].parent / "server.log")}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    with serve_app(build_outputs(tmp_path_factory.mktemp("browser"), tiny_model())) as running:
        yield running


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

    def key(self, key: str, code: str, key_code: int, modifiers: int = 0, text: str | None = None) -> None:
        """Press and release one key, as the keyboard would (modifiers: Alt 1, Ctrl 2, Meta 4, Shift 8)."""
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=key_code,
                      modifiers=modifiers, **({"text": text} if text and kind == "keyDown" else {}))

    def type(self, text: str) -> None:
        """Type ``text`` into the focused element."""
        self.call("Input.insertText", text=text)

    def wait(self, js: str, timeout: float = 60) -> None:
        """Wait until ``js`` is true."""
        deadline = time.time() + timeout
        while not self.eval(js):
            if time.time() > deadline:
                raise AssertionError(f"not true after {timeout} s: {js}")
            time.sleep(0.2)

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


@needs_chromium
def test_pages_render_in_chromium(server, tmp_path):
    url, phi, token = server["url"], server["phi"], server["token"]
    key = server["low_ef"]
    n_loops = int((pd.read_parquet(server["data"] / "ingest" / "videos.parquet")["study_key"] == key).sum())
    pages = {"home": (f"/?token={token}", "document.querySelector('h1')"),
             "studies": (f"/Echo_studies?token={token}", "document.querySelector('table a[href^=\"Study?study=\"]')"),
             "study": (f"/Study?study={key}&token={token}", f"document.querySelectorAll('video').length >= {n_loops}"),
             "surgical": (f"/Surgical_video?token={token}",
                          "document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= 3")}
    doms = {}
    browser = Browser(tmp_path / "profile")
    try:
        for name, (path, ready) in pages.items():
            doms[name] = browser.open(url + path, ready)
            if name == "study":
                _check_loops_play(browser, n_loops)
            if name == "studies":  # studies without a draft: a list of their own, chosen in the address
                doms["not drafted"] = browser.open(f"{url}/Echo_studies?list=not%20drafted&token={token}",
                                                   "document.querySelector('table a[href^=\"Study?study=\"]')")
            if name == "studies":  # a study link opens a new tab (a new session): it carries the token
                href = browser.eval("document.querySelector('table a[href^=\"Study?study=\"]').getAttribute('href')")
                linked = browser.open(f"{url}/{href}", "document.querySelector('h1')")
                assert "access token" not in linked and "Cine loops" in linked
            shot = tmp_path / f"{name}.png"
            browser.screenshot(shot)
            assert shot.stat().st_size > 20_000, name
            _keep(shot, name)
    finally:
        browser.close()
    assert "medvid review" in doms["home"] and "Echo studies" in doms["home"]
    for k in server["drafted"]:  # one table row per study
        assert f'href="Study?study={k}&amp;token={token}"' in doms["studies"], k
    for k in [server["failed"], *server["undrafted"]]:
        assert f'href="Study?study={k}&amp;token={token}"' in doms["not drafted"], k
        assert f'href="Study?study={k}&amp;token={token}"' not in doms["studies"], k
    assert doms["not drafted"].count("<tr") >= 1 + 1 + len(server["undrafted"])
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


VIEWER = "document.querySelector('iframe') && document.querySelector('iframe').contentDocument.body"
H1 = "(document.querySelector('h1') || {}).textContent"
ALT, CTRL = 1, 2


@pytest.fixture(scope="module")
def worklist_server(tmp_path_factory):
    with serve_app(build_worklist(tmp_path_factory.mktemp("worklist"))) as running:
        yield running


@pytest.mark.slow
@needs_chromium
def test_a_morning_worklist_reviewed_by_keyboard_only(worklist_server, tmp_path):
    """Ten studies reviewed with the keyboard alone: open the worklist's first study (Alt+O), step the main loop
    frame by frame (Right), edit a section (Ctrl+A, type, Ctrl+Enter), sign off and go to the next (Alt+Enter);
    on the first, a Save (Alt+S) keeps the main viewer playing. The DOM and the review files say what happened."""
    url, token, reviewed = worklist_server["url"], worklist_server["token"], worklist_server["data"] / "draft_out"
    drafted = worklist_server["drafted"]
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(f"{url}/Echo_studies?token={token}", "document.querySelector('table a')")
        assert [a for a in browser.eval("Array.from(document.querySelectorAll('table a')).map(a => a.textContent)")
                ] == [*drafted, worklist_server["foreign"]]  # the worklist, in reading order
        shot = tmp_path / "worklist.png"
        browser.screenshot(shot)
        _keep(shot, "worklist")
        browser.key("o", "KeyO", 79, ALT)  # open the chosen (first) study
        for n, key in enumerate(drafted[:10]):
            browser.wait(f"{H1} === 'Study {key}' && !document.querySelector('[data-testid=stStatusWidget]')")
            browser.wait(f"{VIEWER} && {VIEWER}.dataset.state === 'playing'")  # playing on a first visit
            if n == 0:  # the reviewer's name, then a Save (Alt+S): the viewer is kept, still playing
                browser.eval("document.querySelector('input[aria-label=\"Reviewer name\"]').focus()")
                browser.type("Dr Keyboard")
                browser.key("Enter", "Enter", 13, text="\r")
                browser.wait("!document.querySelector('[data-testid=stStatusWidget]')")
                browser.eval("document.querySelector('textarea').focus()")
                browser.type(" Seen.")
                browser.key("Enter", "Enter", 13, CTRL)
                browser.wait("!document.querySelector('[data-testid=stStatusWidget]')")
                browser.eval("document.querySelector('iframe').dataset.kept = 'yes'")
                browser.key("s", "KeyS", 83, ALT)
                browser.wait(f"document.body.textContent.includes('Saved study {key} as version 1.')")
                assert browser.eval("document.querySelector('iframe').dataset.kept") == "yes"
                assert browser.eval(f"{VIEWER}.dataset.state") == "playing"
            browser.eval("document.querySelector('iframe').focus()")  # as Tab onto the viewer
            browser.key("ArrowRight", "ArrowRight", 39)
            first = int(browser.eval(f"{VIEWER}.dataset.frame"))
            browser.key("ArrowRight", "ArrowRight", 39)
            browser.wait(f"Number({VIEWER}.dataset.frame) !== {first}")
            frames = int(browser.eval(f"{VIEWER}.dataset.frames"))
            assert int(browser.eval(f"{VIEWER}.dataset.frame")) == (first + 1) % frames
            browser.wait(f"{VIEWER}.dataset.state === 'paused'", 10)  # stepping pauses
            browser.eval("document.querySelector('textarea').focus()")  # as Tab into the first section
            browser.key("a", "KeyA", 65, CTRL)
            browser.type(f"Reviewed by keyboard, study {n}.")
            browser.key("Enter", "Enter", 13, CTRL)  # commits the text
            browser.wait("!document.querySelector('[data-testid=stStatusWidget]')")
            if n == 0:
                shot = tmp_path / "review.png"
                browser.screenshot(shot)
                _keep(shot, "review")
            browser.key("Enter", "Enter", 13, ALT)  # sign off and next
            browser.wait(f"{H1} !== 'Study {key}'")
            version = 2 if n == 0 else 1
            browser.wait(f"document.body.textContent.includes('Signed off study {key} as version {version}.')")
            review = json.loads((reviewed / "reviewed" / f"{key}.json").read_text())
            assert review["status"] == "signed_off" and review["reviewer"] == "Dr Keyboard"
            assert review["sections"]["Left Ventricle"] == f"Reviewed by keyboard, study {n}."
            assert review["diff"]["Left Ventricle"].splitlines()[-2:] == [
                f"-Left Ventricle text of draft {n}. LVEF {35 + 20 * (n % 3)}%.",
                f"+Reviewed by keyboard, study {n}."]
        browser.wait(f"{H1} === 'Study {drafted[10]}'")
        assert browser.eval("document.body.textContent").count("Study 11 of 12") == 1
    finally:
        browser.close()
    signed = sorted(p.stem for p in (reviewed / "reviewed").glob("st_*.json")
                    if "." not in p.stem and json.loads(p.read_text())["status"] == "signed_off")
    assert signed == sorted(drafted[:10])


def session_messages(port: int, host: str, origin: str | None, query: str, seconds: float = 20) -> bytes:
    """Open the app's websocket as a browser page would (with the given Host and Origin headers), ask it to run
    the home page with ``query``, and return every byte the server streamed back (b'' when it refused)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
    from websockets.sync.client import connect

    msg = BackMsg()
    msg.rerun_script.query_string = query
    received = []
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)  # the rebound name resolves here
    try:
        with connect(f"ws://{host}/_stcore/stream", sock=sock, origin=origin, subprotocols=["streamlit"],
                     open_timeout=20) as ws:
            ws.send(msg.SerializeToString())
            deadline = time.time() + seconds
            while time.time() < deadline:
                try:
                    data = ws.recv(timeout=max(0.1, deadline - time.time()))
                except TimeoutError:
                    break
                received.append(data if isinstance(data, bytes) else data.encode())
                if b"ingest folder" in received[-1] or b"access token" in received[-1]:
                    break
    except (InvalidHandshake, ConnectionClosed, OSError):
        pass
    finally:
        sock.close()
    return b"".join(received)


def test_dns_rebinding_and_tokenless_sessions_are_refused(server):
    port, token = server["port"], server["token"]
    local = f"127.0.0.1:{port}"
    # the harness works: a local session with the token streams the home page
    assert b"ingest folder" in session_messages(port, local, None, f"token={token}")
    # a page on another name rebound to 127.0.0.1: its Host and Origin are that name
    for host, origin in ((f"evil.example.com:{port}", f"http://evil.example.com:{port}"),
                         (local, "http://evil.example.com"), (f"evil.example.com:{port}", None)):
        data = session_messages(port, host, origin, f"token={token}")
        assert b"ingest folder" not in data and server["low_ef"].encode() not in data, (host, origin)
    # a local page without the token (or with a wrong one) sees the refusal only
    for query in ("", "token=wrong", f"token={token[:-1]}"):
        data = session_messages(port, local, f"http://{local}", query)
        assert b"access token" in data and b"ingest folder" not in data, query


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_to_medvid_app_stops_the_whole_server(tmp_path, sig):
    """`medvid app` started as a shell's background job (SIGINT ignored, as such jobs inherit it); a signal to
    it alone stops it and its Streamlit server: nothing is left answering."""
    port, log_path = _free_port(), tmp_path / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "medvid.cli", "app", "--data", str(tmp_path), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    children: list[int] = []
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log_path)
        children = _children(proc.pid)
        assert children
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.time() + 15
        while any(_alive(c) for c in children) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(c) for c in children), f"server left running after {sig.name}"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
        assert f'"stopped_by": "{sig.name}"' in log_path.read_text()
    finally:
        for pid in (proc.pid, *[c for c in children if _alive(c)]):  # only what this test started
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait(timeout=10)
        log.close()
