"""The study page's main loop viewer: one self-contained HTML page (``streamlit.components.v1.html``, no network,
no CDN) playing one loop large, or two side by side synced by cardiac cycle. No Streamlit here.

Controls: play / pause (Space), one frame back / forward (← / →, pauses), speed, zoom. Loops are muted and started
by script once loaded (a muted ``play()`` needs no user gesture), so a first visit never shows a paused loop; the
page's markup does not change across reruns, so Streamlit keeps the player (and its playback) after a Save.
Names reach the page as JSON and are set as ``textContent``: text from files is never parsed as HTML.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Sequence

SPEEDS = (0.25, 0.5, 1.0, 2.0)
ZOOMS = (1.0, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class Clip:
    """One rendered loop: its reader's name, H.264 MP4 bytes, frame rate, frame count and R-wave times (s)."""

    name: str
    mp4: bytes
    fps: float
    frames: int
    r_waves: Sequence[float] = field(default_factory=tuple)


def cycle_sync(a: Clip, b: Clip) -> str:
    """How two loops are synced: ``r_wave`` when both have at least two R-wave times (cycle by cycle), else
    ``loop`` (both loops start together, the second stretched to the first's duration)."""
    return "r_wave" if len(a.r_waves) >= 2 and len(b.r_waves) >= 2 else "loop"


def _clip_json(clip: Clip) -> dict:
    return {"name": clip.name, "src": "data:video/mp4;base64," + base64.b64encode(clip.mp4).decode("ascii"),
            "fps": float(clip.fps) if clip.fps and clip.fps > 0 else 30.0, "frames": int(clip.frames),
            "r": [float(t) for t in clip.r_waves]}


def _script_json(value: object) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>`` or ``<!--`` can close or open anything)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def player_html(clips: Sequence[Clip], height: int = 420) -> str:
    """The viewer page for one clip, or two side by side (the second synced to the first by cardiac cycle)."""
    if not 1 <= len(clips) <= 2:
        raise ValueError("the viewer shows one or two loops")
    data = {"clips": [_clip_json(c) for c in clips], "sync": cycle_sync(*clips) if len(clips) == 2 else None,
            "speeds": list(SPEEDS), "zooms": list(ZOOMS), "height": int(height)}
    return _PAGE.replace("__DATA__", _script_json(data))


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
body{margin:0;font:13px sans-serif;color:#222;background:#fff}
#panes{display:flex;gap:6px}
.pane{flex:1;min-width:0;display:flex;flex-direction:column}
.stage{overflow:auto;background:#000;display:flex;align-items:center;justify-content:center}
video{display:block;transform-origin:center;image-rendering:auto}
.name{font-weight:600;padding:2px 0}
#bar{display:flex;gap:6px;align-items:center;padding:4px 0;flex-wrap:wrap}
button,select{font:inherit}
</style></head><body>
<div id="panes"></div>
<div id="bar">
<button id="play" title="Play / pause (Space)">Pause</button>
<button id="back" title="One frame back (Left)">&#9664; frame</button>
<button id="fwd" title="One frame forward (Right)">frame &#9654;</button>
<label>Speed <select id="speed"></select></label>
<label>Zoom <select id="zoom"></select></label>
<span id="pos"></span> <span id="sync"></span>
</div>
<script>
const D = __DATA__;
const panes = document.getElementById("panes"), vids = [];
const stageH = D.height - 60;
D.clips.forEach((c, i) => {
  const pane = document.createElement("div"); pane.className = "pane";
  const name = document.createElement("div"); name.className = "name"; name.textContent = c.name;
  const stage = document.createElement("div"); stage.className = "stage"; stage.style.height = stageH + "px";
  const v = document.createElement("video");
  v.muted = true; v.defaultMuted = true; v.loop = true; v.playsInline = true; v.autoplay = i === 0;
  v.setAttribute("muted", ""); v.setAttribute("playsinline", "");
  v.dataset.index = i; v.style.height = stageH + "px"; v.src = c.src;
  stage.appendChild(v); pane.appendChild(name); pane.appendChild(stage); panes.appendChild(pane); vids.push(v);
});
const main = vids[0], other = vids[1], A = D.clips[0], B = D.clips[1];
document.body.dataset.state = "loading"; document.body.dataset.frames = A.frames;
function shown() { document.body.dataset.state = main.paused ? "paused" : "playing";
  document.getElementById("play").textContent = main.paused ? "Play" : "Pause"; }
function start() { main.play().then(shown).catch(() => { document.body.dataset.state = "blocked"; }); }
main.addEventListener("loadeddata", start);
main.addEventListener("play", () => { shown(); if (other) other.play().catch(() => {}); });
main.addEventListener("pause", () => { shown(); if (other) other.pause(); });
function toggle() { main.paused ? main.play() : main.pause(); }
function frame() { return Math.min(A.frames - 1, Math.floor(main.currentTime * A.fps + 1e-3)); }
function step(n) { main.pause(); shown(); const f = (frame() + n + A.frames) % A.frames;
  main.currentTime = (f + 0.5) / A.fps; document.body.dataset.frame = f; follow(true); }
// the second loop follows the first: the same phase of the same-numbered cardiac cycle (R-wave times),
// else the same fraction of the loop
function target(t) {
  if (D.sync === "r_wave") {
    const ra = A.r, rb = B.r; let k = 0;
    while (k + 2 < ra.length && t >= ra[k + 1]) k++;
    const phase = Math.min(1, Math.max(0, (t - ra[k]) / (ra[k + 1] - ra[k])));
    const j = k % (rb.length - 1);
    return rb[j] + phase * (rb[j + 1] - rb[j]);
  }
  const da = A.frames / A.fps, db = B.frames / B.fps;
  return (t / da) * db;
}
function follow(force) {
  if (!other || !other.duration) return;
  const want = Math.min(other.duration - 1e-3, Math.max(0, target(main.currentTime)));
  if (force || Math.abs(other.currentTime - want) > 1.5 / B.fps) other.currentTime = want;
}
function tick() { document.getElementById("pos").textContent =
  "frame " + (frame() + 1) + " / " + A.frames + " · " + main.playbackRate + "×";
  document.body.dataset.frame = frame(); follow(false); requestAnimationFrame(tick); }
requestAnimationFrame(tick);
if (other) document.getElementById("sync").textContent = D.sync === "r_wave"
  ? "· second loop synced by cardiac cycle (R waves)" : "· second loop synced by loop start (no R-wave times)";
const speed = document.getElementById("speed"), zoom = document.getElementById("zoom");
D.speeds.forEach(s => { const o = new Option(s + "×", s); o.selected = s === 1; speed.add(o); });
D.zooms.forEach(z => { const o = new Option(z + "×", z); o.selected = z === 1; zoom.add(o); });
speed.onchange = () => { vids.forEach(v => { v.playbackRate = Number(speed.value); }); };
zoom.onchange = () => { vids.forEach(v => { v.style.height = (stageH * Number(zoom.value)) + "px"; }); };
document.getElementById("play").onclick = toggle;
document.getElementById("back").onclick = () => step(-1);
document.getElementById("fwd").onclick = () => step(1);
document.addEventListener("keydown", e => {
  if (e.key === " ") { toggle(); e.preventDefault(); }
  else if (e.key === "ArrowLeft") { step(-1); e.preventDefault(); }
  else if (e.key === "ArrowRight") { step(1); e.preventDefault(); }
});
</script></body></html>"""
