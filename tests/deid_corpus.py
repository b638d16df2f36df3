"""Synthetic echo reports with span-level truth, for measuring the report scrubber (``bench/deid.py``, tests).

Identifiers come from Faker (names, streets, cities, postcodes, phone numbers, e-mails, URLs in the given
locales), so the corpus is not our own word list; their shapes (case, order, particles, hyphens, apostrophes,
initials, credentials after the name, user IDs, dates in many spellings) are varied here. Each report also
carries hard clinical sentences whose numbers, units and eponyms must survive byte-identical.

``DEV`` is what the scrubber was developed on; ``HELD_OUT`` (other seeds, other locales) is only measured.
"""
from __future__ import annotations

import difflib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Callable

from faker import Faker

DEV = {"seed": 7, "locales": ("en_US", "en_IE", "it_IT", "nl_NL")}
HELD_OUT = {"seed": 20261207, "locales": ("en_GB", "de_DE", "es_ES", "fr_FR")}

# Hard clinical sentences: each protected piece (number + unit, ratio, range, grade, eponym) must survive exactly.
CLINICAL = [
    ("LV volumes confirmed by Simpson's biplane method; LVEF 58%.", ["Simpson's biplane", "58%"]),
    ("A mobile 1.5-2.0 cm echodensity is attached to the anterior leaflet.", ["1.5-2.0 cm"]),
    ("E/A/e' 0.9/0.7/10, E/e' 9.", ["0.9/0.7/10", "9"]),
    ("Agitated saline diluted 1:10 was injected.", ["1:10"]),
    ("Peak gradient by the simplified Bernoulli equation 4V^2 = 36 mmHg.", ["Bernoulli", "4V^2", "36 mmHg"]),
    ("Tech: Difficult windows.", ["Difficult windows"]),
    ("Continuous wave Doppler peak velocity 3.1 m/s across the aortic valve.", ["Doppler", "3.1 m/s"]),
    ("LV dimensions by Teichholz: LVIDd 5.2 cm, LVIDs 3.6 cm.", ["Teichholz", "5.2 cm", "3.6 cm"]),
    ("Carpentier type II mitral regurgitation, P2 prolapse, ERO 0.3 cm2.", ["Carpentier", "P2", "0.3 cm2"]),
    ("Mitral regurgitation 2+ (moderate), vena contracta 0.5 cm.", ["2+", "0.5 cm"]),
    ("Grade 2/4 diastolic dysfunction; E/A 1.8; DT 140 ms.", ["2/4", "1.8", "140 ms"]),
    ("BP 132/78 mmHg, HR 64 bpm, BSA 1.92 m2.", ["132/78 mmHg", "64 bpm", "1.92 m2"]),
    ("RVSP 38 mmHg assuming RAP 3 mmHg; TAPSE 2.1 cm.", ["38 mmHg", "3 mmHg", "2.1 cm"]),
    ("Aortic valve area 0.9 cm2 by continuity equation, mean gradient 42 mmHg.", ["0.9 cm2", "42 mmHg"]),
    ("2:1 AV block noted on the ECG strip; QRS 120 ms.", ["2:1", "120 ms"]),
    ("Lambl's excrescence on the aortic valve, no vegetation.", ["Lambl's"]),
    ("Chiari network in the right atrium, a normal variant.", ["Chiari"]),
    ("No Ebstein anomaly; tricuspid annulus 3.4 cm.", ["Ebstein", "3.4 cm"]),
    ("Valsalva maneuver produced a 25% fall in E velocity.", ["Valsalva", "25%"]),
    ("The sinuses of Valsalva measure 3.8 cm, ascending aorta 3.6-3.9 cm.", ["Valsalva", "3.8 cm", "3.6-3.9 cm"]),
    ("Wilkins score 8/16; MVA by PHT 1.1 cm2.", ["Wilkins", "8/16", "1.1 cm2"]),
    ("PISA radius 0.8 cm at aliasing velocity 38 cm/s, ERO 0.35 cm2, RV 52 mL.", ["0.8 cm", "38 cm/s", "0.35 cm2", "52 mL"]),
    ("Contrast: Definity 1.3 mL in 8.7 mL saline, 3:1 dilution.", ["Definity", "1.3 mL", "8.7 mL", "3:1"]),
    ("Global longitudinal strain -18.5%; LA volume index 34 mL/m2.", ["-18.5%", "34 mL/m2"]),
    ("Ross procedure 2011; Bentall graft 27 mm intact.", ["Ross", "Bentall", "27 mm"]),
    ("Marfan phenotype excluded; Z-score +1.2 at the sinotubular junction.", ["Marfan", "+1.2"]),
    ("Duke criteria: 1 major, 2 minor.", ["Duke", "1 major", "2 minor"]),
    ("Heart rate 110/min during dobutamine 40 mcg/kg/min, 85% of target.", ["110/min", "40 mcg/kg/min", "85%"]),
    ("Holter 24 h showed 3% ectopy; Bruce protocol stage 3, 9:00 min.", ["Holter", "24 h", "3%", "Bruce", "9:00 min"]),
    ("LVOT diameter 2.0 cm, VTI 22 cm, SV 69 mL, CO 4.4 L/min.", ["2.0 cm", "22 cm", "69 mL", "4.4 L/min"]),
    ("Qp:Qs 1.6:1 across the secundum ASD.", ["1.6:1"]),
    ("Austin Flint murmur suspected; AR pressure half-time 250 ms.", ["Austin Flint", "250 ms"]),
    ("A 67-year-old with NYHA class III dyspnoea, Age 45 at first repair.", ["67-year-old", "III", "45"]),
    ("Normal study. Left ventricle: normal size, LVEF 60-65%.", ["60-65%"]),
    ("Mild MR. Trace TR. No AS. Mean gradient 4 mmHg at HR 72.", ["4 mmHg", "72"]),
]

_CREDENTIALS = ("NP", "RN", "MD", "PA-C", "RDCS", "DO", "MBBS", "PhD")
_PARTICLES = ("van der", "van", "de", "von", "di", "da", "de la", "del", "Mac", "le")


@dataclass
class Report:
    """One synthetic report: its text, identifier spans ``(start, end, kind)`` and protected clinical spans."""
    text: str = ""
    identifiers: list[tuple[int, int, str]] = field(default_factory=list)
    protected: list[tuple[int, int]] = field(default_factory=list)

    def add(self, *parts: str | tuple[str, str]) -> None:
        """Append plain strings and ``(value, kind)`` identifier pieces."""
        for part in parts:
            if isinstance(part, tuple):
                value, kind = part
                self.identifiers.append((len(self.text), len(self.text) + len(value), kind))
                self.text += value
            else:
                self.text += part

    def add_clinical(self, sentence: str, keep: list[str]) -> None:
        start = len(self.text)
        self.text += sentence
        for piece in keep:
            at = sentence.index(piece)
            self.protected.append((start + at, start + at + len(piece)))


class _Forms:
    """Identifier shapes drawn from one Faker instance."""

    def __init__(self, fake: Faker, rng: random.Random):
        self.fake, self.rng = fake, rng

    def last(self) -> str:
        last = self.fake.last_name()
        r = self.rng.random()
        if " " in last:  # already has a particle ("van der Leek")
            return last
        if r < 0.12:
            return f"{last}-{self.fake.last_name()}"
        if r < 0.2:
            return f"{self.rng.choice(('O', 'D'))}'{last}"
        if r < 0.28:
            return f"{self.rng.choice(_PARTICLES)} {last}"
        return last

    def first(self) -> str:
        first = self.fake.first_name()
        return f"{first}-{self.fake.first_name()}" if self.rng.random() < 0.1 else first

    def person(self) -> str:
        first, last = self.first(), self.last()
        form = self.rng.randrange(7)
        return [f"{first} {last}", f"{last}, {first}", f"{first[0]}. {last}",
                f"{first} {self.fake.first_name()[0]}. {last}", f"{last.upper()} {first.upper()}",
                f"{first.lower()} {last.lower()}", f"{first} {last}"][form]

    def date(self) -> str:
        d = self.fake.date_between(date(1930, 1, 1), date(2025, 12, 31))
        return self.rng.choice([f"{d:%m/%d/%Y}", f"{d:%d.%m.%Y}", d.isoformat(), f"{d:%B} {d.day}, {d.year}",
                                f"{d.day} {d:%B} {d.year}", f"{d:%d-%b-%Y}", f"{d:%b} {d.day}th, {d.year}", f"{d:%Y%m%d}",
                                f"{d:%d/%m/%y}", f"{d:%B %Y}"])

    def hospital(self) -> str:
        f = self.fake
        return self.rng.choice([f"{f.city()} General Hospital", f"St. {f.first_name()}'s Medical Center",
                                f"{f.last_name()} Memorial Hospital", f"Klinikum {f.city()}", f"Hôpital {f.last_name()}",
                                f"University of {f.city()} Heart Institute", f"{f.city()} Cardiology Clinic"])

    def userid(self) -> str:
        first, last = self.fake.first_name(), self.fake.last_name()
        clean = "".join(c for c in last.lower() if c.isalpha() and c.isascii())
        return self.rng.choice([f"{first[0].lower()}{clean}", f"{clean}{self.rng.randint(1, 99)}",
                                f"{first[0].lower()}{clean[:6]}"])


def _report(fake: Faker, rng: random.Random) -> Report:
    f, r = _Forms(fake, rng), Report()
    last, first = f.last(), f.first()
    r.add(rng.choice(["Patient: ", "Patient Name: ", "Name: "]),
          rng.choice([(f"{last.upper()}^{first.upper()}", "NAME"), (f"{first} {last}", "NAME"),
                      (f"{last}, {first}", "NAME")]),
          "   MRN: ", (f"{rng.choice(['', 'P', 'MR'])}{rng.randint(10**5, 10**9)}", "ID"),
          "   DOB: ", (f.date(), "DATE"), "\nAccession: ", (f"A{rng.randint(10**6, 10**9)}", "ID"),
          "  Study date: ", (f.date(), "DATE"), " ", (rng.choice(["10:15 AM", "14:32", "9:05 pm", "08:40"]), "TIME"),
          "\nReferring physician: Dr. ", (f.person(), "NAME"), "\nInstitution: ", (f.hospital(), "INSTITUTION"), "\n")
    running = [
        lambda: r.add("Findings discussed with ", (f"{f.first()} {f.last()}", "NAME"), f", {rng.choice(_CREDENTIALS)}. "),
        lambda: r.add("Pt ", (f"{f.first()} {f.last()}", "NAME"), " tolerated the study well. "),
        lambda: r.add("Patient ", (f"{f.last().upper()} {f.first().upper()}", "NAME"), " was scanned supine. "),
        lambda: r.add("Results called to dr ", (f.last().lower(), "NAME"), " at ",
                      (f"{rng.randint(10, 23)}:{rng.randint(10, 59)}", "TIME"), ". "),
        lambda: r.add("Reviewed with Dr. ", (f"{rng.choice(_PARTICLES)} {fake.last_name()}", "NAME"), ". "),
        lambda: r.add("Images acquired by ", (f.userid(), "ID"), ". "),
        lambda: r.add("Sonographer: ", (f.person(), "NAME"), ", RDCS. "),
        lambda: r.add("Page ", (f"{f.first()[0]}. {f.last()}", "NAME"), " at pager ",
                      (str(rng.randint(1000, 99999)), "PHONE"), ". "),
        lambda: r.add("Questions: call ", (fake.phone_number(), "PHONE"), ". "),
        lambda: r.add("Fax report to ", (fake.phone_number(), "PHONE"), ". "),
        lambda: r.add("Copy to ", (fake.email(), "EMAIL"), ". "),
        lambda: r.add("Images at ", (f"https://{fake.domain_name()}/study/{rng.randint(1, 9999)}", "URL"), ". "),
        lambda: r.add("Home address: ", (fake.street_address(), "ADDRESS"), ", ", (fake.postcode(), "ADDRESS"), " ",
                      (fake.city(), "ADDRESS"), ". "),
        lambda: r.add("Patient lives at ", (fake.street_address(), "ADDRESS"), ". "),
        lambda: r.add("Transferred from ", (f.hospital(), "INSTITUTION"), ", ", (fake.city(), "ADDRESS"), ". "),
        lambda: r.add("A ", (str(rng.randint(90, 104)), "AGE"), "-year-old ", rng.choice(["man", "woman"]), ". "),
        lambda: r.add("Compared with the study of ", (f.date(), "DATE"), ". "),
        lambda: r.add("Signed by ", (f"{f.first()} {f.last()}", "NAME"), ", ", rng.choice(_CREDENTIALS), " on ",
                      (f.date(), "DATE"), ". "),
        lambda: r.add("Case discussed with ", (f"{f.first()} {f.last()}", "NAME"), " (cardiology fellow). "),
        lambda: r.add("Medical record number ", (str(rng.randint(10**6, 10**8)), "ID"), ". "),
    ]
    for make in rng.sample(running, 6):
        make()
    r.add("\nFindings: ")
    for sentence, keep in rng.sample(CLINICAL, 4):
        r.add_clinical(sentence, keep)
        r.add(" ")
    return r


def generate(n: int = 200, seed: int = DEV["seed"], locales: tuple[str, ...] = DEV["locales"]) -> list[Report]:
    """``n`` synthetic reports; the same arguments give the same reports."""
    fake = Faker(list(locales))
    fake.seed_instance(seed)
    rng = random.Random(seed)
    return [_report(fake, rng) for _ in range(n)]


_PLACEHOLDER = re.compile(r"\[[A-Z]+\]")


def survivors(original: str, scrubbed: str) -> list[bool]:
    """Per character of ``original``: whether it is still readable in ``scrubbed`` (aligned by difflib, with each
    placeholder collapsed to one character that no original text contains)."""
    collapsed = _PLACEHOLDER.sub("\0", scrubbed)
    kept = [False] * len(original)
    for block in difflib.SequenceMatcher(None, original, collapsed, autojunk=False).get_matching_blocks():
        kept[block.a:block.a + block.size] = [True] * block.size
    return kept


def score(reports: list[Report], scrub: Callable[[str], str]) -> dict:
    """Recall (an identifier is caught only when none of its letters or digits stays readable), per kind; the
    share of non-identifier characters removed (over-scrub); clinical pieces not kept byte-identical; the
    leaked identifiers (for development only, never printed by the benchmark's summary)."""
    caught, total, leaks = Counter(), Counter(), []
    removed = clean = altered = pieces = 0
    for report in reports:
        scrubbed = scrub(report.text)
        kept = survivors(report.text, scrubbed)
        inside = [False] * len(report.text)
        for start, end, kind in report.identifiers:
            total[kind] += 1
            inside[start:end] = [True] * (end - start)
            if any(kept[i] and report.text[i].isalnum() for i in range(start, end)):
                leaks.append((kind, report.text[start:end]))
            else:
                caught[kind] += 1
        for i, ch in enumerate(report.text):
            if not inside[i] and not ch.isspace():
                clean += 1
                removed += not kept[i]
        for start, end in report.protected:
            pieces += 1
            altered += report.text[start:end] not in scrubbed or not all(kept[start:end])
    n = sum(total.values())
    return {"reports": len(reports), "identifiers": n, "recall": sum(caught.values()) / n,
            "recall_by_kind": {k: round(caught[k] / total[k], 4) for k in sorted(total)},
            "over_scrub_chars": removed / clean, "clinical_pieces": pieces, "clinical_altered": altered,
            "leaks": leaks}
