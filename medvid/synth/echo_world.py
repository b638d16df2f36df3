"""Echo worlds drawn per seed (``medvid synth echo style=random``): every seed another world.

``random_echo_world(seed)`` draws how the machines image (probe sector angle and depth, gain, speckle
grain and decorrelation, depth attenuation, a colour map), how hearts beat (heart-rate range, systole
share and curve, how the LV shortens across vs along its axis) and how the readers write (a phrasing
subset per section from wider pools, which optional sections they leave out, the section order).
Findings, labels and what the report states stay tied to the same hidden truth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from medvid.synth.echo import EchoLook, Findings
from medvid.vocab import ECHO_SECTIONS

SEV = ("", "mild", "moderate", "severe")
# Phrase pools per statement; {ef}, {sev}, {Sev}, {size}, {Size} are filled from the findings.
POOLS: dict[str, tuple[str, ...]] = {
    "lv_normal": ("normal in size", "normal in cavity size", "of normal size", "normal in dimension", "not dilated"),
    "lv_dilated": ("moderately dilated", "dilated", "enlarged", "severely dilated", "increased in size"),
    "function_lead": ("Systolic function is", "Global left ventricular systolic function is", "LV systolic function is",
                      "Overall systolic function is"),
    "grade_normal": ("normal", "preserved", "within normal limits"),
    "grade_mild": ("mildly reduced", "mildly depressed", "mildly impaired"),
    "grade_moderate": ("moderately reduced", "moderately depressed", "moderately impaired"),
    "grade_severe": ("severely reduced", "severely depressed", "severely impaired"),
    "ef": ("LV ejection fraction is {ef}%.", "The left ventricular ejection fraction is estimated at {ef}%.", "LVEF {ef}%.",
           "Ejection fraction is approximately {ef} %.", "EF estimated at {ef} percent.", "Visually estimated LVEF {ef}%.",
           "Biplane ejection fraction {ef}%.", "The ejection fraction measures {ef}%."),
    "wall_normal": ("No regional wall motion abnormalities.", "Normal regional wall motion.", "Wall motion is normal.",
                    "No segmental wall motion abnormality."),
    "wall_reduced": ("Global hypokinesis.", "Diffuse hypokinesis of the left ventricle.",
                     "Global hypokinesis with no focal wall motion abnormality.", "Diffusely hypokinetic left ventricle.",
                     "Generalised hypokinesis."),
    "rv": ("The right ventricle is normal in size and function.", "Normal right ventricular size and systolic function.",
           "RV size and function are normal.", "Normal right ventricle."),
    "la_dilated": ("The left atrium is dilated.", "Moderately dilated left atrium.", "Left atrial enlargement.",
                   "The left atrium is enlarged."),
    "la_normal": ("The left atrium is normal in size.", "Normal left atrial size.", "Left atrium of normal size."),
    "ra": ("The right atrium is normal in size.", "Normal right atrial size.", "Right atrium of normal size."),
    "septum": ("The interatrial septum appears intact.", "No atrial septal defect is seen.", "Intact atrial septum."),
    "valve_regurg": ("{Sev} {valve} regurgitation.", "There is {sev} {valve} regurgitation.", "{Valve} regurgitation is {sev}.",
                     "{Sev} regurgitation of the {valve} valve."),
    "mitral_none": ("No mitral regurgitation.", "The mitral valve is normal without regurgitation.",
                    "Mitral valve without regurgitation."),
    "tricuspid_none": ("No tricuspid regurgitation.", "Trivial tricuspid regurgitation.", "No significant tricuspid regurgitation."),
    "aortic": ("The aortic valve is trileaflet and opens normally.", "Normal aortic valve.", "Aortic valve opens well."),
    "pulmonic": ("The pulmonic valve is not well seen.", "Pulmonic valve not visualised.", "Normal pulmonic valve."),
    "effusion": ("There is a {size} pericardial effusion.", "{Size} circumferential pericardial effusion.",
                 "A {size} pericardial effusion is present.", "{Size} effusion around the heart."),
    "effusion_none": ("No pericardial effusion.", "There is no pericardial effusion.", "Pericardium without effusion."),
    "aorta": ("The aortic root is normal in size.", "Normal aortic root.", "Aortic root of normal dimension."),
    "ivc": ("The inferior vena cava is normal in size with normal respiratory variation.", "Normal IVC size and collapsibility.",
            "IVC normal with more than 50 percent collapse."),
}
OPTIONAL = ("Pulmonic Valve", "Aorta", "IVC", "Atrial Septum", "Right Atrium")


@dataclass(frozen=True)
class ReportPhrasing:
    """A world's readers: the phrasings they use, their LV statement order, the sections they may omit."""

    pools: dict[str, tuple[str, ...]]
    ef_first: bool
    omit: dict[str, float]  # section -> probability a report leaves it out

    def _pick(self, rng: np.random.Generator, key: str, **fill: str) -> str:
        options = self.pools[key]
        return options[int(rng.integers(len(options)))].format(**fill)

    def _regurg(self, rng: np.random.Generator, valve: str, severity: int) -> str:
        if not severity:
            return self._pick(rng, f"{valve}_none")
        sev = SEV[severity]
        return self._pick(rng, "valve_regurg", sev=sev, Sev=sev.capitalize(), valve=valve, Valve=valve.capitalize())

    def __call__(self, f: Findings, rng: np.random.Generator) -> dict[str, str]:
        """Report text per section for the findings ``f`` (the ``sections`` of ``medvid.synth.echo.synthesize``)."""
        ef = int(round(f.ef))
        grade = ("normal" if ef >= 55 else "mild" if ef >= 45 else "moderate" if ef >= 35 else "severe")
        size = self._pick(rng, "lv_dilated" if f.lv_dilation else "lv_normal")
        parts = [f"The left ventricle is {size}.", f"{self._pick(rng, 'function_lead')} {self._pick(rng, f'grade_{grade}')}.",
                 self._pick(rng, "ef", ef=str(ef))]
        eff = ("", "small", "moderate")[f.pericardial_effusion]
        sections = {
            "Left Ventricle": " ".join(parts[::-1] if self.ef_first else parts),
            "Resting Segmental Wall Motion Analysis": self._pick(rng, "wall_normal" if ef >= 50 else "wall_reduced"),
            "Right Ventricle": self._pick(rng, "rv"),
            "Left Atrium": self._pick(rng, "la_dilated" if f.la_dilation else "la_normal"),
            "Right Atrium": self._pick(rng, "ra"),
            "Atrial Septum": self._pick(rng, "septum"),
            "Mitral Valve": self._regurg(rng, "mitral", f.mitral_regurgitation),
            "Aortic Valve": self._pick(rng, "aortic"),
            "Tricuspid Valve": self._regurg(rng, "tricuspid", f.tricuspid_regurgitation),
            "Pulmonic Valve": self._pick(rng, "pulmonic"),
            "Pericardium": (self._pick(rng, "effusion", size=eff, Size=eff.capitalize()) if eff
                            else self._pick(rng, "effusion_none")),
            "Aorta": self._pick(rng, "aorta"),
            "IVC": self._pick(rng, "ivc"),
        }
        for name, p in self.omit.items():
            if rng.random() < p:
                del sections[name]
        return sections


def _subset(rng: np.random.Generator, pool: Sequence[str], low: int) -> tuple[str, ...]:
    k = int(rng.integers(min(low, len(pool)), len(pool) + 1))
    return tuple(pool[i] for i in sorted(rng.choice(len(pool), k, replace=False)))


def random_echo_look(rng: np.random.Generator) -> EchoLook:
    """Imaging and heart motion drawn from wide distributions, and a report section order."""
    order = list(ECHO_SECTIONS)
    if rng.random() < 0.7:  # most readers keep the usual order; the others have their own
        order = [order[i] for i in rng.permutation(len(order))]
    lo = float(rng.uniform(45, 75))
    shape = float(rng.uniform(1.5, 12.0))
    fresh = float(rng.uniform(0.05, 0.6))
    along = float(rng.uniform(0.5, 1.5))
    return EchoLook(half_angle=float(rng.uniform(-10, 6)), depth=float(rng.uniform(0.75, 1.0)),
                    gain=float(rng.uniform(0.7, 1.35)), speckle_shape=shape, speckle_mix=(1 - fresh, fresh),
                    attenuation=float(rng.uniform(0.15, 0.7)),
                    tint=tuple(float(v) for v in rng.uniform(0.75, 1.15, 3)) if rng.random() < 0.6 else (1.0, 1.0, 1.0),
                    heart_rate=(lo, lo + float(rng.uniform(20, 60))), systole=float(rng.uniform(0.28, 0.45)),
                    sharpness=float(rng.uniform(1.0, 3.0)), wall=(2 - along, along), section_order=tuple(order))


def random_phrasing(rng: np.random.Generator) -> ReportPhrasing:
    return ReportPhrasing(pools={k: _subset(rng, v, 1) for k, v in POOLS.items()}, ef_first=bool(rng.random() < 0.3),
                          omit={name: float(rng.uniform(0.0, 0.6)) for name in OPTIONAL})


def random_echo_world(seed: int) -> tuple[EchoLook, ReportPhrasing]:
    """World ``seed`` of style ``"random"``: its look and its readers' phrasing."""
    rng = np.random.default_rng([seed, 2030])
    return random_echo_look(rng), random_phrasing(rng)
