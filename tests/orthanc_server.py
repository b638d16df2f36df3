"""A real PACS for the tests: Debian's Orthanc (with its DICOMweb plugin) on loopback, at free ports, with a
temporary storage folder and HTTP basic authentication; started per test module and stopped after it."""
from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "medvid", "pacs-test-secret"
AET = "ORTHANC"


def orthanc_missing() -> str | None:
    """Why Orthanc cannot run here (for ``pytest.skip``), or None."""
    if not Path(ORTHANC).exists():
        return "Orthanc is not installed (Debian package orthanc; .ci/run installs it)"
    if not DICOMWEB_PLUGIN.exists():
        return "Orthanc's DICOMweb plugin is not installed (Debian package orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    http_port: int
    dicom_port: int
    process: subprocess.Popen
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def dimse(self) -> str:
        return f"dimse://{AET}@127.0.0.1:{self.dicom_port}"

    def rest(self, path: str, data: bytes | None = None, method: str | None = None) -> object:
        """Orthanc's REST API (authenticated); JSON answers decoded."""
        request = urllib.request.Request(self.url + path, data=data, method=method)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def upload(self, files: list[Path]) -> int:
        """Store DICOM files through the REST API; returns how many Orthanc accepted."""
        return sum(1 for f in files if self.rest("/instances", f.read_bytes(), "POST"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_orthanc(folder: Path, modalities: dict[str, list] | None = None) -> Orthanc:
    """Start Orthanc on 127.0.0.1 (free HTTP and DICOM ports) storing under ``folder``; waits until it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "medvid-test", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": AET, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}, "HttpsVerifyPeers": False,
        "DicomCheckCalledAet": False, "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True, "DicomModalities": modalities or {},
        "UnknownSopClassAccepted": True, "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "StudiesMetadata": "Full"},
        "StableAge": 1, "HttpServerEnabled": True, "SaveJobs": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(http_port, dicom_port, process, folder)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(folder / 'orthanc.log').read_text(errors='replace')[-2000:]}")
        try:
            server.rest("/system")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("Orthanc did not answer within 60 s")


def dicom_instances(root: Path) -> list[Path]:
    """The DICOM instances of an export, sorted (not its text files nor its DICOMDIR): what a PACS would hold."""
    import pydicom

    found = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - the export's text files
            continue
        if "SOPInstanceUID" in ds and ds.get("SOPClassUID") != "1.2.840.10008.1.3.10":
            found.append(path)
    return found
