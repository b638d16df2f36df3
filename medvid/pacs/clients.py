"""One PACS interface over two protocols: DICOMweb (``dicomweb-client``) and DIMSE (``pynetdicom``).

``connect`` gives a :class:`Pacs`: ``find_studies`` (study UIDs matching a query), ``instances`` (every instance
of a study), ``fetch`` (one instance as a dataset, in the transfer syntax the PACS stored) and ``store``.
Failures become :class:`PacsError` with a reason a person can act on (not reachable, credentials refused,
not found); messages name the PACS, never a patient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydicom.dataset import Dataset

from medvid.errors import MedvidError
from medvid.pacs.address import Credentials, PacsAddress


class PacsError(MedvidError):
    """A PACS call failed; ``reason`` is one of ``unreachable``, ``credentials``, ``not_found``, ``refused``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class InstanceRef:
    study: str
    series: str
    sop: str
    sop_class: str = ""


class Pacs(Protocol):
    def find_studies(self, query: dict[str, str]) -> list[str]: ...
    def instances(self, study: str) -> list[InstanceRef]: ...
    def fetch(self, ref: InstanceRef) -> Dataset: ...
    def store(self, ds: Dataset) -> None: ...


def connect(address: PacsAddress, credentials: Credentials, ae_title: str = "MEDVID", verify: bool | str = True,
            timeout: float = 60.0) -> Pacs:
    """A client for ``address`` (DICOMweb or DIMSE)."""
    if address.kind == "dicomweb":
        return DicomWebPacs(address, credentials, verify, timeout)
    return DimsePacs(address, ae_title, timeout)


# --------------------------------------------------------------------------------------------- DICOMweb
class DicomWebPacs:
    """QIDO-RS queries, WADO-RS retrieval (the stored transfer syntax, ``transfer-syntax=*``), STOW-RS."""

    def __init__(self, address: PacsAddress, credentials: Credentials, verify: bool | str, timeout: float):
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        session.verify = verify
        session.headers["Accept-Encoding"] = "identity"  # pixel data is mostly compressed already: gzip only costs CPU
        if credentials.token:
            session.headers["Authorization"] = f"Bearer {credentials.token}"
        elif credentials.username:
            session.auth = (credentials.username, credentials.password)
        self.address, self.page = address, 1000
        self.client = DICOMwebClient(url=address.url, session=session, timeout=timeout)
        self.client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=500)  # ~1.5 s

    def _call(self, fn, *args: Any, **kwargs: Any) -> Any:
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise PacsError("credentials", f"{self.address.describe()} refused the credentials (HTTP {status})") from exc
            if status == 404:
                raise PacsError("not_found", f"{self.address.describe()}: not found (HTTP 404)") from exc
            raise PacsError("refused", f"{self.address.describe()} answered HTTP {status}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise PacsError("unreachable", f"PACS not reachable at {self.address.describe()} "
                                           f"({type(exc).__name__})") from exc

    def _search(self, fn, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every result of a QIDO search, page by page (a server that ignores ``offset`` ends the paging when a
        page brings nothing new, where ``get_remaining`` would loop for ever)."""
        rows: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = self._call(fn, limit=self.page, offset=offset, **kwargs)
            new = {k: r for r in page if (k := _json_value(r, key)) and k not in rows}
            rows.update(new)
            if len(page) < self.page or not new:
                return list(rows.values())
            offset += len(page)

    def find_studies(self, query: dict[str, str]) -> list[str]:
        rows = self._search(self.client.search_for_studies, "0020000D", search_filters=query,
                            fields=["StudyInstanceUID"])
        return [_json_value(r, "0020000D") for r in rows]

    def instances(self, study: str) -> list[InstanceRef]:
        rows = self._search(self.client.search_for_instances, "00080018", study_instance_uid=study,
                            fields=["SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"])
        return [InstanceRef(study, _json_value(r, "0020000E"), _json_value(r, "00080018"), _json_value(r, "00080016"))
                for r in rows]

    def fetch(self, ref: InstanceRef) -> Dataset:
        return self._call(self.client.retrieve_instance, ref.study, ref.series, ref.sop,
                          media_types=(("application/dicom", "*"),))

    def store(self, ds: Dataset) -> None:
        self._call(self.client.store_instances, [ds])


def _json_value(row: dict[str, Any], tag: str) -> str:
    value = (row.get(tag) or {}).get("Value") or [""]
    return str(value[0])


# --------------------------------------------------------------------------------------------- DIMSE
class DimsePacs:
    """C-FIND (Study Root: study, series, then image level), C-GET per instance, C-STORE."""

    def __init__(self, address: PacsAddress, ae_title: str, timeout: float):
        self.address, self.ae_title, self.timeout = address, ae_title, timeout

    def _associate(self, contexts: list[Any], roles: list[Any] | None = None, handlers: list[Any] | None = None):
        from pynetdicom import AE

        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.requested_contexts = contexts
        assoc = ae.associate(self.address.host, self.address.port, ae_title=self.address.called_aet,
                             ext_neg=roles or [], evt_handlers=handlers or [])
        if not assoc.is_established:
            reason = "refused" if assoc.is_rejected else "unreachable"
            raise PacsError(reason, f"PACS {'rejected the association' if assoc.is_rejected else 'not reachable'} "
                                    f"at {self.address.describe()}")
        return assoc

    def _find(self, identifier: Dataset) -> list[Dataset]:
        from pynetdicom import build_context
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        assoc = self._associate([build_context(FIND)])
        try:
            found = []
            for status, answer in assoc.send_c_find(identifier, FIND):
                code = getattr(status, "Status", None)
                if code is None:
                    raise PacsError("unreachable", f"{self.address.describe()}: no answer to C-FIND")
                if code in (0xFF00, 0xFF01) and answer is not None:
                    found.append(answer)
                elif code not in (0x0000, 0xFF00, 0xFF01):
                    raise PacsError("refused", f"{self.address.describe()}: C-FIND failed (status 0x{code:04X})")
            return found
        finally:
            assoc.release()

    def find_studies(self, query: dict[str, str]) -> list[str]:
        ds = _query("STUDY", **{"StudyInstanceUID": "", **query})
        return [str(a.StudyInstanceUID) for a in self._find(ds) if a.get("StudyInstanceUID")]

    def instances(self, study: str) -> list[InstanceRef]:
        refs = []
        for series in self._find(_query("SERIES", StudyInstanceUID=study, SeriesInstanceUID="")):
            uid = str(series.get("SeriesInstanceUID", ""))
            for image in self._find(_query("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=uid,
                                           SOPInstanceUID="", SOPClassUID="")):
                refs.append(InstanceRef(study, uid, str(image.get("SOPInstanceUID", "")),
                                        str(image.get("SOPClassUID", ""))))
        return refs

    def fetch(self, ref: InstanceRef) -> Dataset:
        from pynetdicom import build_context, build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        received: list[Dataset] = []

        def on_store(event: Any) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            received.append(ds)
            return 0x0000

        sop_class = ref.sop_class or "1.2.840.10008.5.1.4.1.1.3.1"
        # One context per transfer syntax: the acceptor picks one syntax per context, so a single context
        # listing them all would make the PACS transcode to whichever it picked.
        contexts = [build_context(GET)] + [build_context(sop_class, ts) for ts in _TRANSFER_SYNTAXES]
        assoc = self._associate(contexts, [build_role(sop_class, scp_role=True)], [(evt.EVT_C_STORE, on_store)])
        try:
            identifier = _query("IMAGE", StudyInstanceUID=ref.study, SeriesInstanceUID=ref.series,
                                SOPInstanceUID=ref.sop)
            statuses = [getattr(s, "Status", None) for s, _ in assoc.send_c_get(identifier, GET)]
        finally:
            assoc.release()
        if not received:
            if None in statuses:
                raise PacsError("unreachable", f"{self.address.describe()}: the connection dropped during C-GET")
            raise PacsError("not_found", f"{self.address.describe()}: C-GET returned no instance")
        return received[0]

    def store(self, ds: Dataset) -> None:
        from pynetdicom import build_context

        assoc = self._associate([build_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)])
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        if getattr(status, "Status", None) != 0x0000:
            raise PacsError("refused", f"{self.address.describe()}: C-STORE failed "
                                       f"(status {getattr(status, 'Status', 'none')})")


# What a C-GET accepts: every transfer syntax an echo cart writes, so the PACS sends what it stored.
_TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                      "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
                      "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                      "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.100",
                      "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.106",
                      "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108", "1.2.840.10008.1.2.2"]


def _query(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds
