"""De-identification of report free text: pattern rules, a name lexicon and the study's own identifiers.

``scrub_text`` replaces protected health information with typed placeholders (``[NAME]``, ``[DATE]``,
``[TIME]``, ``[ID]``, ``[PHONE]``, ``[EMAIL]``, ``[URL]``, ``[AGE]``, ``[INSTITUTION]``, ``[ADDRESS]``) and
counts them. Layers, applied in this order and repeated until the text no longer changes:

1. the **pattern rules** of ``RULES`` (in order): URLs, e-mails, DICOM ``LAST^FIRST`` names, names after a
   label (``Patient``, ``Name:``), a role (``signed by``, ``discussed with``, ``Sonographer:`` …; refused when
   only ordinary words follow: ``Tech: Difficult windows``), a title (``Dr.``, lower-case ``dr``, particles
   ``van der``) or before a credential (``, NP``), user IDs after a role (``by jkim``), addresses (labelled,
   street forms of several countries, postcodes), institutions, dates, times, phone and pager numbers,
   labelled and long IDs, ages over 89;
2. **names by lexicon** (``medvid.report.names``: UCSF Philter's census name sets and non-name word list,
   from ``philter-lite``), and the city after an address or institution;
3. an exact-match, case-insensitive **deny list** (``deny_terms``: the names, IDs, accession number,
   institution, physicians and dates of the study's own DICOM header), each term typed by its shape
   (date → DATE, has a digit → ID, hospital word → INSTITUTION, else NAME).

Layers 1-2 never touch clinical measurements (a number with its unit: ``1.5-2.0 cm``, ``36 mmHg``), eponym
phrases (``Simpson's biplane``, ``Carpentier type II``) or existing placeholders; the numeric rules leave ratios
and grades alone (``E/A/e' 0.9/0.7/10``, ``1:10``, ``2:1``, ``4V^2``). Text inside a placeholder is never touched,
so scrubbing is idempotent. Bump ``SCRUBBER_VERSION`` whenever a rule changes: banks record it. Recall and
clinical-text damage are measured by ``bench/deid.py`` (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import re
from collections import Counter
from datetime import date
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, NamedTuple

import pydicom

if TYPE_CHECKING:
    import pandas as pd

from medvid.report.names import CREDENTIALS, PARTICLES, is_common_word, name_spans
from medvid.vocab import ECHO_SECTIONS

SCRUBBER_VERSION = "3"  # bump on any rule change (ingest caches deny terms under it; banks record it)

_PLACEHOLDER = re.compile(r"\[[A-Z]+\]")
_UP = r"A-ZÀ-ÖØ-Þ"  # upper-case letters a name starts with
# Words that end a name: labels, roles, titles, report-header words and the words of section names
# (a one-line report puts "Left Ventricle:" right after the patient's name).
_STOP_WORDS = ("dr doctor prof professor mr mrs ms miss md do phd rn rdcs physician cardiologist sonographer mrn dob "
               "id date accession age sex gender tel phone fax on at and the of study report time indication "
               "comparison "
               "findings impression conclusion summary history height weight bsa bp hr procedure exam echo name "
               + " ".join(c.lower() for c in CREDENTIALS) + " "
               + " ".join(w.lower() for s in ECHO_SECTIONS for w in s.split())).split()
_STOP = rf"(?!(?i:{'|'.join(sorted(set(_STOP_WORDS), key=len, reverse=True))})\b)"
_WORD = rf"{_STOP}[{_UP}][^\W\d_'’-]*(?:['’-][^\W\d_]+)*"  # one capitalised (or all-caps) name word
_PARTICLE_WORD = r"(?i:van|von|der|den|de|del|della|di|da|du|des|la|le|dos|das|ter|ten|bin|ibn|al|el|['’][ts])"
_PARTICLE = rf"(?:{_PARTICLE_WORD}[ \t]+)"
# an initial ("J.") before more of the name, or a word after any particles
_PART = rf"(?:{_STOP}[{_UP}]\.(?=[ \t]?(?:[{_UP}]|{_PARTICLE}))|{_PARTICLE}*{_WORD})"
_NAME_SEQ = rf"{_PART}(?:,?[ \t]?{_PART}){{0,3}}"  # up to four words / initials, one line
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
          r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_INST_WORD = (r"(?:hospital|clinic|centre|center|infirmary|institute|university|medical|health|hôpital|hospitalier"
              r"|klinik|klinikum|krankenhaus|spital|kliniek|ziekenhuis|ospedale|policlinico|clínica|clinica|clinique"
              r"|hospitales?|sanatorio)")
_INST_HEAD = (r"hospital|clinic|klinik|klinikum|krankenhaus|spital|kliniek|ziekenhuis|ospedale|policlinico|clínica"
              r"|clinica|clinique|hôpital|hospitales?|sanatorio|infirmary")
_ROLES = (r"signed(?:[ \t]+electronically)?[ \t]+by|electronically[ \t]+signed[ \t]+by|reviewed[ \t]+(?:by|with)"
          r"|dictated[ \t]+by|performed[ \t]+by|read[ \t]+by|verified[ \t]+by|transcribed[ \t]+by|confirmed[ \t]+by"
          r"|interpreted[ \t]+by|discussed[ \t]+with|called[ \t]+to|acquired[ \t]+by|scanned[ \t]+by|page[ \t]+"
          r"|(?:reading|referring|interpreting|ordering|attending|requesting|performing)"
          r"(?:[ \t]+(?:physician|doctor|md|cardiologist))?"
          r"|sonographer|technologist|cardiologist|physician|operator|tech|fellow|resident|copy[ \t]+to")
_NO = r"(?:number|no\.?|#)"
_ID_LABELS = (rf"mrn|medical[ \t]+record(?:[ \t]+{_NO})?|(?:patient|pt)[ \t]*id|id|accession(?:[ \t]+{_NO})?"
              rf"|acc\.?(?:[ \t]*{_NO})?|record[ \t]*{_NO}|case[ \t]*{_NO}|(?:study|visit|encounter)[ \t]*(?:id|{_NO})"
              rf"|account(?:[ \t]*{_NO})?|ssn|nhs[ \t]*{_NO}?|insurance[ \t]*(?:id|{_NO})")
_TITLE = r"(?i:dr|doctor|prof|professor|mr|mrs|ms|miss)"
_CAP_WORD = rf"[{_UP}][\w'’&-]{{0,40}}"
_PN_WORD = r"[^\W\d_]+(?:['’-][^\W\d_]+)*"  # one component of a DICOM name (LAST^FIRST^MIDDLE)
_STREET = (r"street|st|road|rd|avenue|ave|lane|ln|drive|dr|court|ct|place|pl|boulevard|blvd|way|terrace|crescent"
           r"|close|square|sq|parkway|pkwy|highway|hwy|circle|row|grove|gardens|park|hill|view|walk|mews|plaza"
           r"|trail|path|green|ridge|heights|forks|ville|port|mount|mall|station|pass|hollow|point|loop|alley|wells"
           r"|estates?|junction|knolls?|meadows?|shores?|springs?|stravenue|summit|turnpike|union|valley|vista|course"
           r"|cliffs?|crossing|cove|creek|dale|falls?|ferry|fields?|flats?|fords?|fort|freeway|gateway|glens?|harbou?r"
           r"|haven|island|isle|lakes?|landing|lights?|locks?|lodge|manors?|mills?|mission|motorway|neck|orchard|oval"
           r"|overpass|parks|pike|pines?|plains?|prairie|radial|ramp|ranch|rapids?|rest|river|route|run|shoals?|skyway"
           r"|spur|stream|track|tunnel|underpass|viaduct|village|ways|burg|bluffs?|bottom|branch|bridge|brooks?|bend"
           r"|beach|camp|canyon|cape|causeway|commons?|corners?|expressway|extension|hills|islands|keys?|squares")
_STREET_FIRST = (r"via|viale|piazza|piazzale|corso|vicolo|rotonda|largo|strada|stretto|canale|incrocio|contrada|borgo"
                 r"|calle|avenida|paseo|plaza|camino|carrer|callejón|cañada|ronda|travesía|glorieta|cuesta|pasaje"
                 r"|rambla|vía|urbanización"
                 r"|rue|avenue|boulevard|chemin|allée|impasse|place|quai|route|cours|passage|flat|apartment|studio")
_STREET_SUFFIX = (r"stra(?:ss|ß)e|str\.|weg|allee|platz|gasse|ring|damm|ufer|chaussee|laan|straat|plein|gracht|singel"
                  r"|kade|dreef|steeg|hof|boulevard|park|markt|pad|baan|dijk|wal|plantsoen|straatweg|erf|lei")
_UNIT = r"(?i:apt|apartment|suite|ste|unit|flat|piano|appartamento|interno|piso|puerta|bajo|étage|bis|no)\.?"
_ADDR_TAIL = rf"(?:,?[ \t]+{_UNIT}[ \t]*\d+[A-Za-z]?)*"
# Measurements (number + unit), ratios and eponym phrases: clinical text that no rule may touch.
_UNITS = (r"%|mm\s?hg|mmhg|cm/s|m/s|mm/s|cm2|cm²|mm2|m2|m²|ml/m2|ml/m²|g/m2|g/m²|l/min|ml/s|mcg/kg/min|mg/kg|mcg|mg"
          r"|kg|ml|cm|mm|ms|bpm|/min|min|hz|khz|mhz|h|hr|hrs|s|l|g|°")
_MEASUREMENT = (rf"(?<![\w.])[-+−]?\d+(?:[.,]\d+)?(?:[ \t]?[-–/:][ \t]?[-+−]?\d+(?:[.,]\d+)?){{0,4}}[ \t]?(?i:{_UNITS})"
                r"(?![\w/])")
_EPONYM_HEAD = (r"method|equation|formula|rule|criteria|criterion|score|classification|type|anomaly|network"
                r"|excrescences?|procedure|operation|repair|shunt|murmur|maneuver|manoeuvre|sign|syndrome|disease"
                r"|protocol|phenomenon"
                r"|effect|graft|ring|catheter|biplane|principle|law|pulse|index|phenotype|physiology|circulation"
                r"|sinus(?:es)?|aneurysm|fistula|malformation|septum|limit|ratio|analysis|view")
_EPONYM = (rf"\b(?:[{_UP}][a-zà-ÿ]+[ \t-]){{0,2}}[{_UP}][a-zà-ÿ]+(?:['’]s)?"
           rf"(?=[ \t]+(?:[a-z]+[ \t]+)?(?i:{_EPONYM_HEAD})\b)"  # "Simpson's biplane", "Austin Flint murmur"
           rf"|(?i:sinus(?:es)?|tetralogy|ligament|vein|bundle|triangle|tendon)[ \t]+of[ \t]+[{_UP}][a-zà-ÿ]+")
# Names told by a role, a lower-case title or a credential, and user IDs (``_GUARDED``: refused when ordinary words
# follow the role, as in "Tech: Difficult windows").
_AFTER_ROLE = re.compile(rf"(?i:\b(?:{_ROLES}))[ \t]*[:\-]?[ \t]*(?:{_TITLE}\.?[ \t]+)?(?P<phi>{_NAME_SEQ})")
_ANY_WORD = r"[^\W\d_]+(?:['’-][^\W\d_]+)*"
_AFTER_LOWER_TITLE = re.compile(rf"\b(?i:dr|doctor|prof)\.?[ \t]+(?P<phi>{_PARTICLE}*[a-zà-ÿ]{_ANY_WORD}"
                                rf"(?:[ \t]+{_PARTICLE}*{_ANY_WORD})?)")
_BEFORE_CREDENTIAL = re.compile(rf"(?<![\w'’.-])(?P<phi>(?:(?:[{_UP}]\.|{_ANY_WORD})[ \t]+){{0,3}}{_ANY_WORD})"
                                rf"(?=,[ \t]*(?:{'|'.join(map(re.escape, CREDENTIALS))})\b)")
_USER_ID = re.compile(rf"(?i:\b(?:{_ROLES}|by|user(?:name|[ \t]*id)?|login))[ \t]*:?[ \t]*"
                      r"(?P<phi>[a-z][a-z._-]{2,15}\d{0,3})\b")  # "acquired by jkim"
_GUARDED = (_AFTER_ROLE, _USER_ID)
_TRIMMED = (_AFTER_LOWER_TITLE, _BEFORE_CREDENTIAL)
_KEEP = re.compile(rf"\[[A-Z]+\]|{_MEASUREMENT}|{_EPONYM}")


def _r(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# (placeholder type, pattern). A pattern with a group named ``phi`` replaces only that group
# (the label before it stays); otherwise the whole match is replaced.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("URL", _r(r"(?i:\bhttps?://[^\s<>\"]+|\bwww\.[^\s<>\"]+)")),
    ("EMAIL", _r(r"(?i:\b[\w.+-]{1,64}@[\w-]+(?:\.[\w-]+)+)\b")),
    ("NAME", _r(rf"(?:(?:{_PARTICLE_WORD}|['’][sS])[ \t]+)*[{_UP}][^\W\d_]{{0,40}}(?:['’-][^\W\d_]{{1,40}}){{0,4}}"
                rf"(?<=[^\W\d_]{{2}})"
                rf"(?:\^(?:{_PN_WORD})?)+")),  # DICOM PN: LAST^FIRST^MIDDLE
    ("NAME", _r(rf"(?i:\b(?:patient(?:[ \t]+name)?|name|pt)[ \t]*:?)[ \t]*(?P<phi>{_NAME_SEQ})")),
    ("NAME", _AFTER_ROLE),
    ("NAME", _r(rf"\b(?:Dr|DR|Doctor|DOCTOR|Mr|Mrs|MRS|Ms|Miss|Prof|PROF|Professor)\.?[ \t]+(?P<phi>{_NAME_SEQ})")),
    ("NAME", _AFTER_LOWER_TITLE),
    ("NAME", _BEFORE_CREDENTIAL),
    ("ID", _USER_ID),
    ("ADDRESS", _r(r"(?i:\b(?:(?:home[ \t]+)?address|lives[ \t]+at|living[ \t]+at|resides[ \t]+at|residing[ \t]+at"
                   r"|domicile|adresse|dirección|indirizzo|anschrift)[ \t]*:?)[ \t]*"
                   r"(?P<phi>\w[^\n;]*?[^\s;.,])(?=[ \t]*(?:[\n;]|\.(?:[ \t]+[A-Z]|[ \t]*$)|$))")),
    ("ADDRESS", _r(rf"(?:\b(?i:{_UNIT})[ \t]*\d+[A-Za-z]?,?[ \t]+)?\b\d{{1,5}}[A-Za-z]?,?[ \t]+"
                   rf"(?:{_CAP_WORD}[ \t]+){{1,3}}(?i:{_STREET})\b\.?{_ADDR_TAIL}")),
    ("ADDRESS", _r(rf"\b\d{{1,5}}[A-Za-z]?,?[ \t]+(?i:{_STREET_FIRST})\b"
                   rf"(?:[ \t]+(?:{_PARTICLE_WORD}|{_CAP_WORD})){{1,5}}{_ADDR_TAIL}")),
    ("ADDRESS", _r(rf"\b(?=[{_UP}])(?i:{_STREET_FIRST})\b(?:[ \t]+(?:{_PARTICLE_WORD}|{_CAP_WORD})){{1,5}},?[ \t]*"
                   rf"\d{{1,5}}[A-Za-z]?{_ADDR_TAIL}")),
    ("ADDRESS", _r(rf"\b[{_UP}][\w'’.-]{{0,40}}(?i:{_STREET_SUFFIX})[ \t]*\d{{1,5}}[A-Za-z]?(?:/\d+)?{_ADDR_TAIL}")),
    ("ADDRESS", _r(r"\b[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}\b|\b[AC-FHKNPRTV-Y]\d{2}[ \t]?[AC-FHKNPRTV-Y\d]{4}\b"
                   r"|\b(?!(?:19|20)\d\d)\d{4}(?:[A-Z]{2}\b|[ \t][A-Z]{2}(?=[ \t]+[A-Z][a-z]))")),  # UK, IE, NL
    ("ADDRESS", _r(r"(?i:\b(?:zip|postcode|post[ \t]+code|postal[ \t]+code|plz|cp)\b[ \t]*:?)[ \t]*"
                   r"(?P<phi>[\w -]{3,10}\w)")),
    ("ADDRESS", _r(rf"(?<![\w./-])\d{{5}}(?:-\d{{4}})?(?=[ \t]+[{_UP}][a-zà-ÿ])")),  # a postcode before its city
    ("INSTITUTION", _r(r"(?i:\b(?:institution|hospital|facility|site|location|clinic)[ \t]*:)"
                       r"[ \t]*(?P<phi>[^\n;|]*[^\s;|])")),
    ("INSTITUTION", _r(rf"\b(?:(?i:{_INST_HEAD})(?:[ \t]+(?i:de|del|de[ \t]+la|di|du|des|der|am|an|general"
                       rf"|universitario|universitaire))*|(?i:{_INST_WORD})[ \t]+(?i:of|for))"
                       rf"(?:[ \t]+{_CAP_WORD}){{1,4}}")),
    ("INSTITUTION", _r(rf"\b(?:(?:[{_UP}](?:[^\W\d_]|['’.&-]){{0,40}}|{_PARTICLE_WORD})[ \t]+){{1,5}}"
                       rf"(?i:{_INST_HEAD}|centre|center|institute|university)\b"
                       rf"(?:[ \t]+(?i:of|for)(?:[ \t]+{_CAP_WORD}){{1,4}})?")),
    ("ADDRESS", _r(rf"(?i:\b(?:lives|living|resides|residing|home|based)[ \t]+(?:in|near))[ \t]+"
                   rf"(?P<phi>{_CAP_WORD}(?:[ \t-]+{_CAP_WORD}){{0,3}})")),
    ("DATE", _r(rf"(?i:\b{_MONTH}\.?[ \t]+\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+\d{{4}}\b)")),
    ("DATE", _r(rf"(?i:\b\d{{1,2}}(?:st|nd|rd|th)?[ \t-]+(?:of[ \t]+)?{_MONTH}\.?,?[ \t-]+\d{{2,4}}\b)")),
    ("DATE", _r(rf"(?i:\b{_MONTH}\.?,?[ \t-]+(?:\d{{1,2}}(?:st|nd|rd|th)?,?[ \t-]+)?(?:19|20)\d{{2}}\b)")),
    ("DATE", _r(r"\b(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])\b")),
    ("DATE", _r(r"(?<![\d./])\d{1,2}([/.-])\d{1,2}\1(?:\d{4}|\d{2})(?![\d/]|\.\d)")),
    ("DATE", _r(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b")),
    ("TIME", _r(r"(?i:(?<![\d:])(?:(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?:[ \t]?[ap]\.?m\b\.?)?"
                r"|1?\d:[0-5]\d(?::[0-5]\d)?[ \t]?[ap]\.?m\b\.?)(?![\d:]))")),
    ("TIME", _r(r"(?i:\b(?:at|@|time)[ \t]*:?[ \t]*)(?P<phi>\d{1,2}[:h][0-5]\d)\b")),
    ("PHONE", _r(r"(?i:\b(?:tel(?:ephone)?|phone|fax|pager|page|beeper|bleep|mobile|cell|ext|call|extension)\.?"
                 r"(?:[ \t]*(?:no\.?|number|#))?[ \t]*(?:at|on)?[ \t]*[:#]?)"
                 r"[ \t]*(?P<phi>\+?[\d(](?=[\d() .-]*\d{3})[\d() .-]{2,}\d(?:[ \t]?(?:x|ext\.?)[ \t]?\d{1,6})?)")),
    ("ID", _r(rf"(?i:\b(?:{_ID_LABELS}))(?![A-Za-z])[ \t]*[:#=]?[ \t]*"
              r"(?P<phi>(?=[A-Za-z0-9-]{3,})[A-Za-z0-9-]*\d[A-Za-z0-9-]*)")),
    ("PHONE", _r(r"(?<![\w.,/+-])(?:(?:\+|00)\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,12}(?:[ .-]\d{2,12}){0,5}"
                 r"(?:[ \t]?(?:x|ext\.?)[ \t]?\d{1,6})?(?![\w/]|[.,-]\d)")),
    ("ID", _r(r"\b[A-Za-z]{0,3}\d{6,}\b")),
    ("AGE", _r(r"\b(?P<phi>9\d|1[0-4]\d)(?=[ \t-]*(?i:years?|yrs?|y/?o|yo|-?year-old)\b)")),
    ("AGE", _r(r"(?i:\bage(?:d|/sex|/gender)?[ \t]*[:=]?)[ \t]*(?P<phi>9\d|1[0-4]\d)\b")),
)
# After an institution or address placeholder, the city that follows it ("[INSTITUTION], Lyon").
_PLACE_AFTER = re.compile(rf"((?:\[INSTITUTION\]|\[ADDRESS\]),?[ \t]+)({_CAP_WORD}(?:[ \t-]+{_CAP_WORD}){{0,3}})")

_TITLES = {"DR", "MD", "MR", "MRS", "MS", "MISS", "PROF", "PHD", "JR", "SR", "II", "III", "RN", "RDCS"}


class ScrubResult(NamedTuple):
    text: str
    counts: dict[str, int]  # placeholders inserted, per type


def scrub_text(text: str, deny: Iterable[str] = ()) -> ScrubResult:
    """Replace PHI in ``text`` by typed placeholders: ``RULES``, names by lexicon (``medvid.report.names``),
    cities after an address or institution, then ``deny`` terms (exact, case-insensitive), repeated to a fixed
    point. Measurements, ratios and eponym phrases are never touched by the first three layers. Idempotent;
    placeholders are never touched."""
    counts: Counter[str] = Counter()
    deny_re = _deny_pattern(deny)
    previous, text = None, text or ""
    while text != previous:  # to a fixed point: a placeholder can expose a new match (idempotence)
        previous = text
        text = _outside(_KEEP, text, lambda s: _rules_and_names(s, counts))
        text = _PLACE_AFTER.sub(lambda m: m.group(1) + _count(counts, "ADDRESS"), text)
        if deny_re is not None:
            text = _outside(_PLACEHOLDER, text,
                            lambda s: deny_re.sub(lambda m: _count(counts, _deny_type(m.group(0))), s))
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
        if kind == "PHONE" and (sum(c.isdigit() for c in m.group(0)) < 7 or m.group(0).isdigit()):
            return m.group(0)  # a bare phone number has 7+ digits in groups (a lone long number is an ID)
        return _count(counts, kind)
    start, end = m.start("phi") - m.start(), m.end("phi") - m.start()
    whole = m.group(0)
    if m.re in _GUARDED and _ordinary(whole[start:end]):
        return whole  # "Tech: Difficult windows", "confirmed by echo": a role word before ordinary text
    if m.re in _TRIMMED:  # lower-case words: keep the name, not the ordinary words beside it
        cut_start, cut_end = _trimmed(whole[start:end], leading=m.re is _BEFORE_CREDENTIAL)
        if m.re is _BEFORE_CREDENTIAL and _ordinary(whole[start + cut_start:start + cut_end]):
            return whole
        start, end = start + cut_start, start + cut_end
    return whole[:start] + _count(counts, kind) + whole[end:]


_WORDS = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


def _ordinary(phi: str) -> bool:
    """Whether ``phi`` is ordinary vocabulary rather than a name or login (``Difficult windows``, ``echo``):
    every word (particles and initials aside) common, no digit."""
    words = [w for w in _WORDS.findall(phi) if len(w) > 1 and w.lower() not in PARTICLES]
    return bool(words) and not any(c.isdigit() for c in phi) and all(is_common_word(w) for w in words)


def _trimmed(phi: str, leading: bool) -> tuple[int, int]:
    """``(start, end)`` of ``phi`` without its leading (else trailing) common words; one word always stays."""
    words = [m for m in _WORDS.finditer(phi) if m.group(0).lower() not in PARTICLES]
    while len(words) > 1 and is_common_word(words[0 if leading else -1].group(0)):
        words.pop(0 if leading else -1)
    if not words:
        return 0, len(phi)
    start = words[0].start() if leading else 0
    return start, (len(phi) if leading else words[-1].end())


def _rules_and_names(text: str, counts: Counter[str]) -> str:
    """Layers 1-2 on a stretch of text that holds no measurement or eponym (placeholders stay untouched)."""
    for kind, pattern in RULES:
        text = _outside(_PLACEHOLDER, text, lambda s, k=kind, p=pattern: p.sub(lambda m: _replace(m, k, counts), s))
    return _outside(_PLACEHOLDER, text, lambda s: _names(s, counts))


def _names(text: str, counts: Counter[str]) -> str:
    """``text`` with every lexicon name (``name_spans``) and user ID (``jkim``) replaced."""
    parts, last = [], 0
    for start, end, kind in name_spans(text):
        parts += [text[last:start], _count(counts, kind)]
        last = end
    return "".join(parts + [text[last:]])


def _outside(protected: re.Pattern[str], text: str, fn: Callable[[str], str]) -> str:
    """Apply ``fn`` to the stretches of ``text`` between the matches of ``protected``."""
    parts, last = [], 0
    for m in protected.finditer(text):
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
