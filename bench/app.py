"""Study page of a 60-loop study in headless Chromium: time to interactive (title and report boxes shown) and
to the first playing loop, this branch's app beside another git revision's app (default ``main``) in the same run.

Both apps are served at once by the same launcher (``streamlit run`` of the revision's ``apps/`` imported as
``medvid.apps``) over the same data, each with its own loop cache, warmed by one untimed visit; then visits
alternate between them. Times come from the page itself (``performance.now()`` from navigation start, polled
every 10 ms by a script Chromium adds to each new document).

    .venv/bin/python bench/app.py [--rounds 5] [--baseline main]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import pandas as pd  # noqa: E402

from app_testdata import write_drafts  # noqa: E402
from echo_testdata import ingest_synth  # noqa: E402
from test_app_browser import Browser, _free_port, wait_healthy  # noqa: E402

from medvid.apps.access import TOKEN_ENV  # noqa: E402
from medvid.apps.store import ENV, AppConfig  # noqa: E402
from medvid.synth.echo import synthesize  # noqa: E402

LAUNCH = """
import importlib.util, sys
from pathlib import Path
apps = Path(sys.argv[1])
spec = importlib.util.spec_from_file_location("medvid.apps", apps / "__init__.py",
                                              submodule_search_locations=[str(apps)])
module = importlib.util.module_from_spec(spec)
sys.modules["medvid.apps"] = module
spec.loader.exec_module(module)
import medvid
medvid.apps = module
from streamlit.web.cli import main
sys.argv = ["streamlit", "run", str(apps / "review_app.py"), *sys.argv[2:]]
main()
"""

PROBE = """(() => { if (window.top !== window) return;
  const poll = () => {
    const h1 = document.querySelector('h1');
    if (!window.__interactive && h1 && h1.textContent.startsWith('Study ') && document.querySelector('textarea'))
      window.__interactive = performance.now();
    if (!window.__playing) {
      const vids = Array.from(document.querySelectorAll('video'));
      document.querySelectorAll('iframe').forEach(f => {
        try { vids.push(...f.contentDocument.querySelectorAll('video')); } catch (e) {} });
      if (vids.some(v => !v.paused && v.currentTime > 0)) window.__playing = performance.now();
    }
    if (!(window.__interactive && window.__playing)) setTimeout(poll, 10);
  };
  poll(); })();"""


def sixty_loop_study(base: Path) -> tuple[Path, Path, str]:
    """Synthetic export whose first six studies are merged into one 60-loop study; ingest and drafts."""
    synthesize(base / "synth", studies=9, seed=1, loops_per_study=10, rows=128, cols=160, frames_range=(32, 48),
               still_fraction=0.0, format_weights={"jpeg_ybr": 1.0})
    data = base / "data"
    ingest_synth(base / "synth", data / "ingest", "validate_decode=false")
    path = data / "ingest" / "videos.parquet"
    videos = pd.read_parquet(path)
    keys = sorted(videos["study_key"].unique())
    videos["study_key"] = videos["study_key"].where(~videos["study_key"].isin(keys[:6]), keys[0])
    videos.to_parquet(path, index=False)
    write_drafts(data / "ingest", data / "draft_out")
    return data, base / "synth" / "dicom", keys[0]


def revision_apps(revision: str, out: Path) -> Path:
    """The ``apps/`` folder of a git revision, written to ``out``."""
    names = subprocess.run(["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", revision, "apps/"],
                           check=True, capture_output=True, text=True).stdout.split()
    for name in names:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:{name}"], check=True,
                                          capture_output=True).stdout)
    return out / "apps"


@contextlib.contextmanager
def serve(apps: Path, data: Path, dicom: Path, cache: Path, log: Path):
    """The review app of ``apps`` on a free port; yields its base URL."""
    port, token = _free_port(), "bench-token"
    cfg = AppConfig(data=(data,), dicom_roots=(dicom,), cache_dir=cache)
    env = {**os.environ, ENV: cfg.to_json(), TOKEN_ENV: token}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(apps), "--server.headless", "true",
                                 "--server.port", str(port), "--server.fileWatcherType", "none",
                                 "--browser.gatherUsageStats", "false", "--global.developmentMode", "false"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, log)
            yield f"http://127.0.0.1:{port}", token
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)


def visit(browser: Browser, url: str, timeout: float = 120) -> dict[str, float | None]:
    """Open ``url``; seconds from navigation start to interactive and to the first playing loop."""
    browser.call("Page.navigate", url="about:blank")
    browser.call("Page.navigate", url=url)
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = browser.eval("JSON.stringify([window.__interactive || null, window.__playing || null])")
        interactive, playing = json.loads(got) if got else (None, None)
        if interactive and playing:
            break
        time.sleep(0.1)
    return {"interactive_s": interactive / 1000 if interactive else None,
            "first_loop_playing_s": playing / 1000 if playing else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", default="main", help="git revision whose apps/ is the baseline")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench_app_"))
    try:
        data, dicom, key = sixty_loop_study(base)
        variants = {"baseline": revision_apps(args.baseline, base / "baseline"), "medvid": REPO / "apps"}
        with contextlib.ExitStack() as stack:
            urls = {name: stack.enter_context(serve(apps, data, dicom, data / f"cache_{name}", base / f"{name}.log"))
                    for name, apps in variants.items()}
            browser = Browser(base / "profile")
            stack.callback(browser.close)
            browser.call("Page.enable")
            browser.call("Page.addScriptToEvaluateOnNewDocument", source=PROBE)
            pages = {name: f"{url}/Study?study={key}&token={token}" for name, (url, token) in urls.items()}
            cold = {name: visit(browser, page, timeout=900) for name, page in pages.items()}  # renders the loops
            times: dict[str, list[dict]] = {name: [] for name in pages}
            for r in range(args.rounds):
                for name in (list(pages) if r % 2 == 0 else list(pages)[::-1]):
                    times[name].append(visit(browser, pages[name]))
        summary = {"loops": 60, "rounds": args.rounds, "baseline": args.baseline, "cold": cold}
        for name, rows in times.items():
            for metric in ("interactive_s", "first_loop_playing_s"):
                values = sorted(v[metric] for v in rows if v[metric] is not None)
                summary[f"{name}_{metric}_median"] = round(values[len(values) // 2], 3) if values else None
                summary[f"{name}_{metric}_missing"] = len(rows) - len(values)
        for metric in ("interactive_s", "first_loop_playing_s"):
            b, m = summary[f"baseline_{metric}_median"], summary[f"medvid_{metric}_median"]
            summary[f"{metric}_ratio_baseline_over_medvid"] = round(b / m, 2) if b and m else None
        print(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
