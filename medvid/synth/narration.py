"""Lecture narration drawn per world (``style="random"``): phrasings generated combinatorially.

A world (``random_narration(seed, look)``) draws, from wide pools, which sentence families its
surgeon speaks in (agent, first person, "we", passive, gerund, teaching, "here"), which words it
uses (tool synonyms, verbs, objects, openers, colour words taken from the world's own look), how
fast it speaks, how often it says fillers ("uh", "okay, let's see") and how far its words lag or
lead the action on screen. Each sentence is then assembled from those parts, so phrasings are not
picked from a fixed list. Meaning is kept: an operative sentence names only tools that are drawn
while its action is on screen, and describes the phase being shown.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from medvid.synth.surgery import CLIP_TO_CUT, Style

# Regular forms are derived; these are not: base -> (3rd person, gerund, past participle).
IRREGULAR: dict[str, tuple[str, str, str]] = {
    "cut": ("cuts", "cutting", "cut"), "strip": ("strips", "stripping", "stripped"), "snip": ("snips", "snipping", "snipped"),
    "clip": ("clips", "clipping", "clipped"), "grip": ("grips", "gripping", "gripped"), "drop": ("drops", "dropping", "dropped"),
    "hold": ("holds", "holding", "held"), "bring": ("brings", "bringing", "brought"), "free": ("frees", "freeing", "freed"),
    "slide": ("slides", "sliding", "slid"), "put": ("puts", "putting", "put"), "draw": ("draws", "drawing", "drawn"),
    "stop": ("stops", "stopping", "stopped"), "apply": ("applies", "applying", "applied"),
}


def verb_forms(verb: str) -> tuple[str, str, str, str]:
    """(base, 3rd person, gerund, past participle) of ``verb``; a particle after the verb ("lift up") is kept."""
    head, _, rest = verb.partition(" ")
    if head in IRREGULAR:
        s3, ger, pp = IRREGULAR[head]
    elif head.endswith(("sh", "ch", "s", "x")):
        s3, ger, pp = head + "es", head + "ing", head + "ed"
    elif head.endswith("e"):
        s3, ger, pp = head + "s", head[:-1] + "ing", head + "d"
    else:
        s3, ger, pp = head + "s", head + "ing", head + "ed"
    tail = f" {rest}" if rest else ""
    return verb, s3 + tail, ger + tail, pp + tail


@dataclass(frozen=True)
class Act:
    """What a tool does in a phase: ``verbs`` applied to ``objects`` ``prep`` the tool ("with", "into")."""

    tool: str
    verbs: tuple[str, ...]
    objects: tuple[str, ...]
    prep: str = "with"


ACTS: dict[str, tuple[Act, ...]] = {
    "Preparation": (
        Act("Grasper", ("lift", "push", "hold", "grasp", "retract"), ("the fundus", "the gallbladder", "the fundus over the liver")),
        Act("Hook", ("touch", "probe", "test"), ("the fatty tissue", "the fat over the neck", "the fatty layer"))),
    "CalotTriangleDissection": (
        Act("Hook", ("strip", "dissect", "open", "divide", "burn through"),
            ("the peritoneum over the triangle", "the tissue in front of the cystic duct", "the fat around the cystic artery")),
        Act("Grasper", ("pull", "retract", "hold"), ("the neck of the gallbladder", "the infundibulum", "Hartmann's pouch"))),
    "ClippingCutting": (
        Act("Clipper", ("clip", "secure", "close", "occlude"), ("the cystic duct", "the cystic artery", "the duct on the patient side")),
        Act("Scissors", ("cut", "divide", "transect", "snip"), ("the duct between the clips", "the cystic artery", "the clipped duct")),
        Act("Grasper", ("hold", "lift", "steady"), ("the neck", "the gallbladder neck"))),
    "GallbladderDissection": (
        Act("Hook", ("free", "separate", "detach", "release"), ("the gallbladder from the {bed_word}", "the attachments to the {bed_word}",
                                                               "the gallbladder wall")),
        Act("Grasper", ("lift", "roll over", "retract"), ("the gallbladder", "the fundus")),
        Act("Bipolar", ("coagulate", "seal", "stop"), ("a small bleeder on the {bed_word}", "an oozing vessel"))),
    "GallbladderPackaging": (
        Act("SpecimenBag", ("put", "place", "slide", "drop"), ("the gallbladder", "the specimen", "the free gallbladder"), "into"),
        Act("Grasper", ("guide", "push", "hold"), ("the gallbladder", "the specimen"))),
    "CleaningCoagulation": (
        Act("Irrigator", ("wash", "rinse", "irrigate", "flush"), ("the {bed_word}", "the blood clots", "the operative field")),
        Act("Bipolar", ("seal", "coagulate", "stop"), ("the oozing points", "a bleeding point", "the last bleeder")),
        Act("Grasper", ("move", "push away", "lift"), ("the clot", "the liver edge"))),
    "GallbladderRetraction": (
        Act("SpecimenBag", ("pull out", "extract", "bring out", "remove"), ("the specimen", "the gallbladder"), "inside"),
        Act("Grasper", ("pull", "draw", "guide"), ("the bag string", "the bag opening", "the neck of the bag"))),
}
# Acts of a tool that only happen in part of a phase: ClippingCutting clips before CLIP_TO_CUT, cuts after.
_LATE_TOOL, _EARLY_TOOL = "Scissors", "Clipper"

CUES: dict[str, tuple[str, ...]] = {
    "Preparation": ("the {fat} fat covering the gallbladder neck", "the {liver} liver above the {gb} gallbladder",
                    "the gallbladder still hidden under fat", "the opening view of the upper abdomen"),
    "CalotTriangleDissection": ("the {duct} cystic duct and the {artery} artery coming out of the fat",
                                "the hepatocystic triangle opening up", "the fat being cleared from the triangle",
                                "the critical view of safety"),
    "ClippingCutting": ("the silver clips on the cystic duct", "the divided duct between the clips",
                        "both cystic structures under control", "the clips across the artery"),
    "GallbladderDissection": ("the {bed} burned {bed_word}", "the gallbladder coming off the liver",
                              "the clipped stumps left behind", "the plane between gallbladder and liver"),
    "GallbladderPackaging": ("the free gallbladder lying on the liver", "the detached gallbladder ready for the bag",
                             "the specimen going into its bag"),
    "CleaningCoagulation": ("the {blood} blood clots on the {bed_word}", "the {fluid} irrigation fluid pooling",
                            "the field being washed clean", "a last check for bleeding"),
    "GallbladderRetraction": ("the trocar port at the umbilicus", "the bag leaving through the port",
                              "the specimen on its way out"),
}
CUE_FRAMES = ("you can see {cue}", "look at {cue}", "note {cue}", "in this view we have {cue}", "pay attention to {cue}",
              "we are looking at {cue}", "this shows {cue}", "what matters here is {cue}")
FAMILIES = ("agent", "first", "we", "passive", "gerund", "teaching", "here")
OPENERS = ("", "now", "here", "so", "at this point", "next", "then", "okay", "as you can see", "right")
FILLERS = ("uh", "um", "you know", "so", "okay", "well", "basically", "I mean")
FILLER_SENTENCES = ("Okay.", "Right.", "Uh, one moment.", "Alright, so.", "Let's see here.", "Um, yes.",
                    "Okay, good.", "Hmm.", "So, there we go.")
TOOL_POOL: dict[str, tuple[str, ...]] = {
    "Grasper": ("grasper", "grasping forceps", "atraumatic grasper", "fenestrated grasper", "jaw forceps", "holding forceps",
                "tissue grasper"),
    "Bipolar": ("bipolar", "bipolar forceps", "bipolar sealer", "coagulation forceps", "maryland bipolar"),
    "Hook": ("hook", "electrocautery hook", "monopolar hook", "diathermy hook", "L hook", "hook electrode"),
    "Scissors": ("scissors", "laparoscopic scissors", "curved scissors", "metzenbaum scissors", "cutting shears"),
    "Clipper": ("clip applier", "clipper", "clip applicator", "clip gun", "ligating clip device"),
    "Irrigator": ("irrigator", "suction irrigation cannula", "suction device", "lavage cannula", "suction irrigator"),
    "SpecimenBag": ("specimen bag", "retrieval bag", "endobag", "extraction pouch", "retrieval pouch"),
}
TIP_PART = {"Grasper": "jaws", "Bipolar": "jaws", "Hook": "tip", "Scissors": "blades", "Clipper": "jaws",
            "Irrigator": "nozzle", "SpecimenBag": "rim"}
LOOK_FRAMES = ("the {t} is the one with the {tip} {part}", "notice the {shaft} shaft of the {t}",
               "that {tip} {part} belongs to the {t}", "the {t} comes in with its {tip} {part}",
               "you recognise the {t} by its {tip} {part}")
BED_WORDS = ("liver bed", "hepatic bed", "gallbladder fossa", "liver surface")
SLIDE_TITLES: dict[str, tuple[str, ...]] = {
    "Preparation": ("Setup and exposure", "Orientation", "Getting started"),
    "CalotTriangleDissection": ("The hepatocystic triangle", "Critical view", "Calot's triangle"),
    "ClippingCutting": ("Control of the cystic structures", "Clip and divide", "Securing the pedicle"),
    "GallbladderDissection": ("Off the liver bed", "Fossa dissection", "Freeing the gallbladder"),
    "GallbladderPackaging": ("Bagging the specimen", "Containment", "Specimen bag"),
    "CleaningCoagulation": ("Haemostasis and lavage", "Final check", "Irrigation"),
    "GallbladderRetraction": ("Extraction", "Specimen removal", "Getting it out"),
}
SLIDE_PARTS = (("let me", "let us", "I want to", "allow me to"), ("show", "go through", "summarise", "list"),
               ("the key points", "the pitfalls", "the evidence", "a few facts", "our checklist"),
               ("of this step", "for this stage", "before the video", "about this part"))
OPEN_PARTS = (("good morning", "hello", "welcome", "hi everyone"),
              ("thank you for having me", "thanks for coming", "it is a pleasure to be here"),
              ("today I will show you", "we will look at", "I present", "this talk covers"),
              ("a standard case", "a routine cholecystectomy", "one of our cases", "a typical procedure"))
CLOSE_PARTS = (("thank you for your attention", "that is all from me", "that concludes the case", "that was the case"),
               ("questions are welcome", "I am happy to take questions", "any questions", "see you next time"))
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 30), "dark red": (120, 10, 20), "pink": (230, 140, 160), "orange": (235, 130, 30),
    "brown": (120, 70, 35), "yellow": (235, 215, 60), "cream": (240, 225, 180), "olive": (130, 130, 50),
    "green": (60, 160, 60), "teal": (40, 150, 150), "cyan": (80, 210, 230), "blue": (40, 80, 220),
    "purple": (130, 50, 170), "magenta": (210, 50, 180), "white": (240, 240, 240), "grey": (128, 128, 128),
    "black": (25, 25, 25), "silver": (190, 190, 200), "maroon": (110, 25, 40), "beige": (210, 190, 150),
}


def colour_name(rgb: Sequence[int]) -> str:
    """The nearest name in ``PALETTE`` (plain RGB distance): colour words that match what is drawn."""
    c = np.asarray(rgb, float)
    return min(PALETTE, key=lambda k: float(((np.asarray(PALETTE[k], float) - c) ** 2).sum()))


def _subset(rng: np.random.Generator, pool: Sequence[str], low: int) -> tuple[str, ...]:
    """A random non-empty subset of ``pool`` with at least ``min(low, len(pool))`` members, in pool order."""
    k = int(rng.integers(min(low, len(pool)), len(pool) + 1))
    return tuple(pool[i] for i in sorted(rng.choice(len(pool), k, replace=False)))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


@dataclass(frozen=True)
class RandomNarration:
    """A world's spoken language (``random_narration``); methods draw one utterance each."""

    families: tuple[str, ...]
    openers: tuple[str, ...]
    tool_words: dict[str, tuple[str, ...]]
    acts: dict[str, tuple[Act, ...]]
    cues: dict[str, tuple[str, ...]]
    cue_frames: tuple[str, ...]
    look_frames: tuple[str, ...]
    colours: dict[str, str]
    slide_titles: dict[str, str]
    slide_parts: tuple[tuple[str, ...], ...]
    open_parts: tuple[tuple[str, ...], ...]
    close_parts: tuple[tuple[str, ...], ...]
    fillers: tuple[str, ...]
    filler_sentences: tuple[str, ...]
    filler_rate: float  # share of sentences with a filler word in them
    filler_sentence_rate: float  # share of operative utterances that are only a filler
    look_rate: float  # share of operative sentences about how a tool looks
    cue_rate: float  # share of operative sentences without a tool (what is seen)
    words_per_second: float
    delay: float  # mean lag of speech after the action on screen (s; negative: speech leads)
    delay_jitter: float

    def _pick(self, rng: np.random.Generator, options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    def _words(self, text: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: self.colours.get(m.group(1), m.group(0)), text)

    def _with_filler(self, rng: np.random.Generator, text: str) -> str:
        if rng.random() >= self.filler_rate:
            return text
        words = text.split()
        if words[0] != "I":
            words[0] = words[0].lower()
        words.insert(int(rng.integers(len(words))), self._pick(rng, self.fillers))
        return _cap(" ".join(words))

    def _opener(self, rng: np.random.Generator, clause: str) -> str:
        op = self._pick(rng, self.openers)
        return _cap(f"{op}, {clause}" if op else clause) + "."

    def act_sentence(self, rng: np.random.Generator, act: Act, helper: str | None) -> str:
        """One sentence of ``act`` in one of the world's families, optionally with a holding grasper."""
        base, s3, ger, pp = verb_forms(self._pick(rng, act.verbs))
        obj = self._words(self._pick(rng, act.objects))
        tool = self._pick(rng, self.tool_words[act.tool])
        fams = [f for f in self.families if f != "agent" or act.prep == "with"] or ["first"]
        fam = self._pick(rng, fams)
        instr = f"{act.prep} the {tool}"
        clause = {"agent": f"the {tool} {s3} {obj}", "first": f"I {base} {obj} {instr}", "we": f"we {base} {obj} {instr}",
                  "passive": f"{obj} is {pp} {instr}", "gerund": f"{ger} {obj} {instr}",
                  "teaching": f"notice how we {base} {obj} {instr}", "here": f"here {obj} is being {pp} {instr}"}[fam]
        if helper:
            clause += f", with the {self._pick(rng, self.tool_words['Grasper'])} holding {self._words(helper)}"
        return self._opener(rng, clause)

    def operative(self, rng: np.random.Generator, phase: str, progress: float,
                  probs: dict[str, float]) -> tuple[str, tuple[str, ...]]:
        """One sentence for an operative moment and the tools to draw while its action is on screen."""
        probs = dict(probs)
        if phase == "ClippingCutting":
            probs.pop(_LATE_TOOL if progress < CLIP_TO_CUT else _EARLY_TOOL, None)
        shown = {t for t, p in probs.items() if rng.random() < p} or {max(probs, key=probs.get)}
        acts = [a for a in self.acts[phase] if a.tool in probs]
        r = rng.random()
        if r < self.look_rate:
            tool = sorted(shown)[int(rng.integers(len(shown)))]
            text = self._opener(rng, self._pick(rng, self.look_frames).format(
                t=self._pick(rng, self.tool_words[tool]), part=TIP_PART[tool], tip=self.colours[f"tip_{tool}"],
                shaft=self.colours[f"shaft_{tool}"]))
            return self._with_filler(rng, text), tuple(sorted(shown))
        if r < self.look_rate + self.cue_rate or not acts:
            cue = self._words(self._pick(rng, self.cues[phase]))
            return self._with_filler(rng, self._opener(rng, self._pick(rng, self.cue_frames).format(cue=cue))), tuple(sorted(shown))
        act = acts[int(rng.integers(len(acts)))]
        grasp = [a for a in self.acts[phase] if a.tool == "Grasper"]
        helper = None
        if act.tool != "Grasper" and grasp and "Grasper" in probs and rng.random() < 0.3:
            helper = self._pick(rng, grasp[0].objects)
        text = self._with_filler(rng, self.act_sentence(rng, act, helper))
        return text, tuple(sorted(shown | {act.tool} | ({"Grasper"} if helper else set())))

    def filler(self, rng: np.random.Generator) -> str:
        return self._pick(rng, self.filler_sentences)

    def slide(self, rng: np.random.Generator, phase: str, probs: dict[str, float]) -> tuple[str, list[str], list[str]]:
        """A slide's title, three bullets and the one or two sentences said over it."""
        bullets = [self.operative(rng, phase, float(rng.random()), probs)[0] for _ in range(3)]
        said = [_cap(" ".join(self._pick(rng, part) for part in self.slide_parts)) + "."
                for _ in range(int(rng.integers(1, 3)))]
        return self.slide_titles[phase], bullets, said

    def open_line(self, rng: np.random.Generator) -> str:
        a, b, c, d = (self._pick(rng, p) for p in self.open_parts)
        return f"{_cap(a)}, {b}. {_cap(c)} {d}."

    def close_line(self, rng: np.random.Generator) -> str:
        a, b = (self._pick(rng, p) for p in self.close_parts)
        return f"{_cap(a)}, {b}."


def random_narration(seed: int, look: Style) -> RandomNarration:
    """World ``seed``'s narration, its colour words taken from ``look`` (the world's ``random_look``)."""
    rng = np.random.default_rng([seed, 2029])
    colours = {k: colour_name(getattr(look, k)) for k in ("fat", "liver", "duct", "artery", "bed", "blood", "fluid")}
    colours["gb"] = colour_name(look.gallbladder)
    colours["bed_word"] = _subset(rng, BED_WORDS, 1)[0]
    for tool, st in look.tools.items():
        colours[f"tip_{tool}"], colours[f"shaft_{tool}"] = colour_name(st["tip"]), colour_name(st["shaft"])
    acts = {phase: tuple(Act(a.tool, _subset(rng, a.verbs, 2), _subset(rng, a.objects, 1), a.prep) for a in phase_acts)
            for phase, phase_acts in ACTS.items()}
    return RandomNarration(
        families=_subset(rng, FAMILIES, 3), openers=_subset(rng, OPENERS, 3),
        tool_words={t: _subset(rng, pool, 2) for t, pool in TOOL_POOL.items()}, acts=acts,
        cues={p: _subset(rng, c, 2) for p, c in CUES.items()}, cue_frames=_subset(rng, CUE_FRAMES, 3),
        look_frames=_subset(rng, LOOK_FRAMES, 2), colours=colours,
        slide_titles={p: t[int(rng.integers(len(t)))] for p, t in SLIDE_TITLES.items()},
        slide_parts=tuple(_subset(rng, p, 2) for p in SLIDE_PARTS), open_parts=tuple(_subset(rng, p, 2) for p in OPEN_PARTS),
        close_parts=tuple(_subset(rng, p, 2) for p in CLOSE_PARTS), fillers=_subset(rng, FILLERS, 2),
        filler_sentences=_subset(rng, FILLER_SENTENCES, 2), filler_rate=float(rng.uniform(0.0, 0.4)),
        filler_sentence_rate=float(rng.uniform(0.0, 0.25)), look_rate=float(rng.uniform(0.05, 0.3)),
        cue_rate=float(rng.uniform(0.1, 0.4)), words_per_second=float(rng.uniform(1.7, 3.6)),
        delay=float(rng.uniform(-1.0, 3.0)), delay_jitter=float(rng.uniform(0.0, 1.5)))
