"""PACS pull throughput: ``medvid pacs pull`` (bounded pool of WADO-RS fetches, atomic files, resume check)
beside a plain ``dicomweb-client`` loop (one instance after another, ``retrieve_instance`` + ``save_as``), both
against the same local Orthanc (Debian package) holding a synthetic echo export, in one process.

Run:  .venv/bin/python bench/pacs.py [--studies 12] [--rounds 2] [--workers 4]
Prints a Markdown table (instances/s, best of the rounds, the two methods alternating) and the ratio.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from orthanc_server import PASSWORD, USER, start_orthanc  # noqa: E402

from medvid.pacs.address import Credentials, parse_address  # noqa: E402
from medvid.pacs.clients import connect  # noqa: E402
from medvid.pacs.pull import pull, study_queries  # noqa: E402
from medvid.synth.echo import synthesize  # noqa: E402


def plain_loop(url: str, out: Path) -> int:
    """The baseline: what a script written against dicomweb-client does."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    session.auth = (USER, PASSWORD)
    client = DICOMwebClient(url=url, session=session)
    n = 0
    for study in client.search_for_studies(search_filters={"ModalitiesInStudy": "US"}):
        uid = study["0020000D"]["Value"][0]
        for inst in client.search_for_instances(study_instance_uid=uid):
            series, sop = inst["0020000E"]["Value"][0], inst["00080018"]["Value"][0]
            ds = client.retrieve_instance(uid, series, sop, media_types=(("application/dicom", "*"),))
            path = out / uid / series / f"{sop}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_pacs_"))
    try:
        synthesize(work / "synth", studies=args.studies, seed=3, loops_per_study=6, rows=240, cols=320,
                   frames_range=(30, 48))
        server = start_orthanc(work / "orthanc")
        try:
            files = [p for p in (work / "synth" / "dicom").rglob("*") if p.is_file() and p.name != "DICOMDIR"
                     and p.suffix.lower() not in (".txt", ".csv")]
            stored = server.upload([f for f in files if f.read_bytes()[128:132] == b"DICM"])
            pacs = connect(parse_address(server.dicomweb), Credentials(USER, PASSWORD))
            best = {"plain dicomweb-client loop": float("inf"), "medvid pacs pull (1 worker)": float("inf"),
                    f"medvid pacs pull ({args.workers} workers)": float("inf")}
            for r in range(args.rounds):
                for name in (list(best) if r % 2 == 0 else list(best)[::-1]):
                    out = work / f"out_{r}_{list(best).index(name)}"
                    t0 = time.perf_counter()
                    if name.startswith("plain"):
                        n = plain_loop(server.dicomweb, out)
                    else:
                        workers = 1 if "(1 worker)" in name else args.workers
                        n = pull(pacs, study_queries(modality="US"), out, "bench", workers, False)["fetched"]
                    best[name] = min(best[name], time.perf_counter() - t0)
                    assert n == stored, (name, n, stored)
                    shutil.rmtree(out)
        finally:
            server.stop()
        base = best["plain dicomweb-client loop"]
        print(f"{stored} instances, {args.studies} studies, local Orthanc (best of {args.rounds})\n")
        print("| method | seconds | instances/s | speed-up |\n|---|---|---|---|")
        for name, s in best.items():
            print(f"| {name} | {s:.2f} | {stored / s:.0f} | {base / s:.2f}× |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
