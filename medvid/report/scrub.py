"""De-identification of report free text: pattern rules plus the study's own identifiers.

``scrub_text`` replaces protected health information with typed placeholders (``[NAME]``,
``[DATE]``, ``[TIME]``, ``[ID]``, ``[PHONE]``, ``[EMAIL]``, ``[URL]``, ``[AGE]``,
``[INSTITUTION]``) and counts them. Two layers, applied in this order and
repeated until the text no longer changes:

1. the **pattern rules** of ``RULES`` (in order): URLs, e-mails, DICOM ``LAST^FIRST`` names,
   names after a role or label (``Patient:``, ``Name:``, ``signed by``, ``Reading physician``,
   ``Sonographer`` …) or a title (``Dr.``, ``Mrs``), institutions (``… Hospital/Clinic/Centre``,
   ``Institution:``), dates (ISO, numeric day/month/year either order, month names, 8-digit
   ``YYYYMMDD``), times, phone numbers, labelled identifiers (``MRN``, ``Patient ID``,
   ``Accession`` …) and bare long numbers (6+ digits), ages over 89;
2. an exact-match, case-insensitive **deny list** (``deny_terms``: the names, IDs, accession
   number, institution, physicians and dates of the study's own DICOM header), each term typed
   by its shape (date → DATE, has a digit → ID, hospital word → INSTITUTION, else NAME).

Clinical numbers (``EF 55%``, ``3.2 cm``, ``45 mmHg``, ``grade 2``) match no rule. Text inside an
existing placeholder is never touched, so scrubbing is idempotent. Bump ``SCRUBBER_VERSION``
whenever a rule changes: banks record it.
"""
from __future__ import annotations

import re
from collections import Counter
from datetime import date
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, NamedTuple

import pydicom

if TYPE_CHECKING:
    import pandas as pd

from medvid.vocab import ECHO_SECTIONS

SCRUBBER_VERSION = "2"  # bump on any rule change (ingest caches deny terms under it; banks record it)

_PLACEHOLDER = re.compile(r"\[[A-Z]+\]")
_UP = r"A-ZÀ-ÖØ-Þ"  # upper-case letters a name starts with
# Words that end a name: labels, roles, titles, report-header words and the words of section names
# (a one-line report puts "Left Ventricle:" right after the patient's name).
_STOP_WORDS = ("dr doctor prof professor mr mrs ms miss md do phd rn rdcs physician cardiologist sonographer mrn dob id "
               "date accession age sex gender tel phone fax on at and the of study report time indication comparison "
               "findings impression conclusion summary history height weight bsa bp hr procedure exam echo "
               + " ".join(w.lower() for s in ECHO_SECTIONS for w in s.split())).split()
_STOP = rf"(?!(?i:{'|'.join(sorted(set(_STOP_WORDS), key=len, reverse=True))})\b)"
_WORD = rf"{_STOP}[{_UP}][^\W\d_'’-]*(?:['’-][^\W\d_]+)*"  # one capitalised (or all-caps) name word
_PART = rf"(?:{_STOP}[{_UP}]\.(?=[ \t]?[{_UP}])|{_WORD})"  # an initial ("J.") before more of the name, or a word
_NAME_SEQ = rf"{_PART}(?:,?[ \t]?{_PART}){{0,3}}"  # up to four words / initials, one line
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
          r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_INST_WORD = r"(?:hospital|clinic|centre|center|infirmary|institute|university|medical|health|hôpital|klinik)"
_ROLES = (r"signed(?:[ \t]+electronically)?[ \t]+by|electronically[ \t]+signed[ \t]+by|reviewed[ \t]+by|dictated[ \t]+by"
          r"|performed[ \t]+by|read[ \t]+by|verified[ \t]+by|transcribed[ \t]+by|confirmed[ \t]+by|interpreted[ \t]+by"
          r"|(?:reading|referring|interpreting|ordering|attending|requesting|performing)"
          r"(?:[ \t]+(?:physician|doctor|md|cardiologist))?"
          r"|sonographer|technologist|cardiologist|physician|operator|tech|fellow|resident")
_NO = r"(?:number|no\.?|#)"
_ID_LABELS = (rf"mrn|medical[ \t]+record(?:[ \t]+{_NO})?|(?:patient|pt)[ \t]*id|id|accession(?:[ \t]+{_NO})?"
              rf"|acc\.?(?:[ \t]*{_NO})?|record[ \t]*{_NO}|case[ \t]*{_NO}|(?:study|visit|encounter)[ \t]*(?:id|{_NO})"
              rf"|account(?:[ \t]*{_NO})?|ssn|nhs[ \t]*{_NO}?|insurance[ \t]*(?:id|{_NO})")
_TITLE = r"(?i:dr|doctor|prof|professor|mr|mrs|ms|miss)"
_CAP_WORD = rf"[{_UP}][\w'’&-]*"


def _r(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# (placeholder type, pattern). A pattern with a group named ``phi`` replaces only that group
# (the label before it stays); otherwise the whole match is replaced.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("URL", _r(r"(?i:\bhttps?://[^\s<>\"]+|\bwww\.[^\s<>\"]+)")),
    ("EMAIL", _r(r"(?i:\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+)\b")),
    ("NAME", _r(rf"[{_UP}][^\W\d_]*(?:['’-][^\W\d_]+)*(?:\^[^\W\d_'’.-]*)+")),  # DICOM PN: LAST^FIRST^MIDDLE
    ("NAME", _r(rf"(?i:\b(?:patient(?:[ \t]+name)?|name|pt)[ \t]*:)[ \t]*(?P<phi>{_NAME_SEQ})")),
    ("NAME", _r(rf"(?i:\b(?:{_ROLES}))[ \t]*[:\-]?[ \t]*(?:{_TITLE}\.?[ \t]+)?(?P<phi>{_NAME_SEQ})")),
    ("NAME", _r(rf"\b(?:Dr|DR|Doctor|DOCTOR|Mr|Mrs|MRS|Ms|Miss|Prof|PROF|Professor)\.?[ \t]+(?P<phi>{_NAME_SEQ})")),
    ("INSTITUTION", _r(r"(?i:\b(?:institution|hospital|facility|site|location|clinic)[ \t]*:)"
                       r"[ \t]*(?P<phi>[^\n;|]*[^\s;|])")),
    ("INSTITUTION", _r(rf"\b(?:[{_UP}][\w'’.&-]*[ \t]+){{1,5}}(?i:{_INST_WORD}\b)"
                       rf"(?:[ \t]+(?i:of|for)(?:[ \t]+{_CAP_WORD}){{1,4}})?")),
    ("INSTITUTION", _r(rf"\b(?i:(?:hospital|clinic|university|centre|center|institute)[ \t]+(?:of|for))"
                       rf"(?:[ \t]+{_CAP_WORD}){{1,4}}")),
    ("DATE", _r(rf"(?i:\b{_MONTH}\.?[ \t]+\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+\d{{4}}\b)")),
    ("DATE", _r(rf"(?i:\b\d{{1,2}}(?:st|nd|rd|th)?[ \t-]+(?:of[ \t]+)?{_MONTH}\.?,?[ \t-]+\d{{2,4}}\b)")),
    ("DATE", _r(rf"(?i:\b{_MONTH}\.?,?[ \t]+(?:19|20)\d{{2}}\b)")),
    ("DATE", _r(r"\b(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])\b")),
    ("DATE", _r(r"\b\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})\b")),
    ("DATE", _r(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b")),
    ("TIME", _r(r"(?i:\b(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?:[ \t]?[ap]\.?m\b\.?)?)")),
    ("PHONE", _r(r"(?i:\b(?:tel(?:ephone)?|phone|fax|pager|mobile|cell|ext)\.?(?:[ \t]*(?:no\.?|number|#))?[ \t]*[:#]?)"
                 r"[ \t]*(?P<phi>\+?[\d(][\d() .-]{4,}\d)")),
    ("PHONE", _r(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b")),
    ("PHONE", _r(r"\+\d{1,3}(?:[ .-]?\d{2,4}){3,5}\b")),
    ("ID", _r(rf"(?i:\b(?:{_ID_LABELS}))(?![A-Za-z])[ \t]*[:#=]?[ \t]*"
              r"(?P<phi>(?=[A-Za-z0-9-]{3,})[A-Za-z0-9-]*\d[A-Za-z0-9-]*)")),
    ("ID", _r(r"\b[A-Za-z]{0,3}\d{6,}\b")),
    ("AGE", _r(r"\b(?P<phi>9\d|1[0-4]\d)(?=[ \t-]*(?i:years?|yrs?|y/?o|yo|-?year-old)\b)")),
    ("AGE", _r(r"(?i:\bage(?:d|/sex|/gender)?[ \t]*[:=]?)[ \t]*(?P<phi>9\d|1[0-4]\d)\b")),
)

_TITLES = {"DR", "MD", "MR", "MRS", "MS", "MISS", "PROF", "PHD", "JR", "SR", "II", "III", "RN", "RDCS"}


class ScrubResult(NamedTuple):
    text: str
    counts: dict[str, int]  # placeholders inserted, per type


def scrub_text(text: str, deny: Iterable[str] = ()) -> ScrubResult:
    """Replace PHI in ``text`` by typed placeholders: ``RULES``, then ``deny`` terms (exact,
    case-insensitive), repeated to a fixed point. Idempotent; placeholders are never touched."""
    counts: Counter[str] = Counter()
    deny_re = _deny_pattern(deny)
    previous, text = None, text or ""
    while text != previous:  # to a fixed point: a placeholder can expose a new match (idempotence)
        previous = text
        for kind, pattern in RULES:
            text = _outside_placeholders(text, lambda s, k=kind, p=pattern: p.sub(lambda m: _replace(m, k, counts), s))
        if deny_re is not None:
            text = _outside_placeholders(text, lambda s: deny_re.sub(lambda m: _count(counts, _deny_type(m.group(0))), s))
    return ScrubResult(text, dict(counts))


def scrub_reports(df: "pd.DataFrame", deny: Mapping[str, Iterable[str]] | None = None) -> dict[str, int]:
    """Scrub a reports table's ``report`` column in place (``study_key`` rows; ``deny`` maps a study key to its
    own identifiers). Returns placeholder counts per type: totals only, no term is ever reported."""
    totals: Counter[str] = Counter()
    texts = []
    for key, text in zip(df["study_key"], df["report"]):
        scrubbed = scrub_text(text, (deny or {}).get(key, ()))
        totals.update(scrubbed.counts)
        texts.append(scrubbed.text)
    df["report"] = texts
    return dict(sorted(totals.items()))


def _count(counts: Counter[str], kind: str) -> str:
    counts[kind] += 1
    return f"[{kind}]"


def _replace(m: re.Match[str], kind: str, counts: Counter[str]) -> str:
    if "phi" not in m.re.groupindex:
        return _count(counts, kind)
    start, end = m.start("phi") - m.start(), m.end("phi") - m.start()
    whole = m.group(0)
    return whole[:start] + _count(counts, kind) + whole[end:]


def _outside_placeholders(text: str, fn: Callable[[str], str]) -> str:
    """Apply ``fn`` to the stretches of ``text`` between placeholders."""
    parts, last = [], 0
    for m in _PLACEHOLDER.finditer(text):
        parts += [fn(text[last:m.start()]), m.group(0)]
        last = m.end()
    parts.append(fn(text[last:]))
    return "".join(parts)


def _deny_pattern(deny: Iterable[str]) -> re.Pattern[str] | None:
    terms = sorted({" ".join(str(t).split()) for t in deny if t and str(t).strip()}, key=len, reverse=True)
    if not terms:
        return None
    alternatives = (r"[ \t]+".join(re.escape(w) for w in t.split(" ")) for t in terms)
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def _deny_type(term: str) -> str:
    if any(p.fullmatch(term) for kind, p in RULES if kind == "DATE"):
        return "DATE"
    if any(c.isdigit() for c in term):
        return "ID"
    if re.search(rf"(?i:\b{_INST_WORD}\b)", term):
        return "INSTITUTION"
    return "NAME"


# --------------------------------------------------------------------------- the study's own identifiers
_NAME_TAGS = ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "ReferringPhysicianName",
              "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "OperatorsName",
              "RequestingPhysician", "ConsultingPhysicianName", "ResponsiblePerson")
_TEXT_TAGS = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID", "InstitutionName",
              "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "PatientAddress",
              "PatientTelephoneNumbers", "MilitaryRank", "AdmissionID", "MedicalRecordLocator")
_DATE_TAGS = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")


def deny_terms(ds: pydicom.Dataset) -> list[str]:
    """The study's own identifiers from a DICOM header, for ``scrub_text(deny=...)``.

    Names whole (``DOE^JANE``, ``JANE DOE``, ``DOE, JANE``) and by part (parts of 2+ letters, titles
    dropped); IDs, accession, institution, address, phone (3+ characters; 5+ when all digits, so a
    short ID never removes a measurement such as ``120``); dates in common spellings.
    """
    terms: set[str] = set()
    for tag in _NAME_TAGS:
        for value in _values(ds, tag):
            terms.update(_name_terms(value))
    for tag in _TEXT_TAGS:
        for value in _values(ds, tag):
            if len(value) >= (5 if value.isdigit() else 3):  # a short number could be a measurement
                terms.add(value)
    for tag in _DATE_TAGS:
        for value in _values(ds, tag):
            terms.update(date_spellings(value))
    return sorted(terms)


def _values(ds: pydicom.Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return [" ".join(str(v).split()) for v in items if str(v).strip()]


def _name_terms(value: str) -> set[str]:
    components = [c.strip() for c in value.split("=")[0].split("^")]  # alphabetic group only
    words = [w for c in components for w in re.split(r"[ \t,]+", c) if w]
    keep = [w for w in words if len(w.strip(".")) >= 2 and w.strip(".").upper() not in _TITLES]
    terms = {value} | set(keep)
    family, given = (components + ["", ""])[:2]
    if family and given:
        terms |= {f"{given} {family}", f"{family} {given}", f"{family}, {given}", f"{given[0]}. {family}"}
    return {t for t in terms if t and t.strip(".").upper() not in _TITLES}


def date_spellings(value: str) -> list[str]:
    """A DICOM ``YYYYMMDD`` date in the spellings reports use; empty when it is not a valid date."""
    try:
        d = date(int(value[:4]), int(value[4:6]), int(value[6:8])) if re.fullmatch(r"\d{8}", value) else None
    except ValueError:
        d = None
    if d is None:
        return []
    month, mon = d.strftime("%B"), d.strftime("%b")
    return [value, d.isoformat(), f"{d:%m/%d/%Y}", f"{d.month}/{d.day}/{d.year}", f"{d:%d/%m/%Y}", f"{d:%d.%m.%Y}",
            f"{d:%d-%m-%Y}", f"{month} {d.day}, {d.year}", f"{mon} {d.day}, {d.year}", f"{d.day} {month} {d.year}",
            f"{d.day} {mon} {d.year}", f"{d:%d}-{mon}-{d.year}"]


__all__ = ["RULES", "SCRUBBER_VERSION", "ScrubResult", "date_spellings", "deny_terms", "scrub_reports", "scrub_text"]
