"""Synthetic surgical lectures: slides, a talking head and operative footage from the same world
``medvid synth surgery`` renders, narrated in varied surgeon's language, with two "ASR" transcripts.

Each lecture is ``<name>.mp4`` (25 fps) with

- ``<name>.whisper.json``: the narration script, one segment per spoken sentence;
- ``<name>.aws.csv``: the same speech as another ASR system would give it: different sentence
  boundaries (merged and split), lower case, no punctuation, spelling variants, fillers, dropped words;
- optionally narration audio (espeak-ng, when installed) muxed into the mp4 at the script's times;
- ``truth/<name>.json``: what is on screen each second (frame type, phase, tools) for evaluation.

Operative narration says what the viewer sees: the phase's action and visual cues and the tools in
view (the tools drawn during a sentence are exactly those it names, plus sometimes unnamed ones).
The sentences are written for this module and differ from the zero-shot prompt files. Style ``"b"``
speaks its own phrasing set (no sentence template shared with ``"a"``) and shows style b's world.
Style ``"random"`` shows the seed's drawn world (``medvid.synth.surgery.random_world``) and speaks its
drawn language (``medvid.synth.narration``): generated phrasings, speaking rate, fillers, and speech
that lags or leads the action on screen.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medvid.io.transcripts import Segment, write_whisper_json
from medvid.io.video import write_video
from medvid.synth.narration import RandomNarration, random_narration
from medvid.synth.surgery import CLIP_TO_CUT, FPS, STYLE_CHOICES, TOOL_PROB, SurgicalWorld, world_for
from medvid.utils import atomic_path, atomic_write_text
from medvid.vocab import CHOLEC80_PHASES, CHOLEC80_TOOLS

WORDS_PER_SECOND = 2.5  # espeak-ng at 150 wpm; used for timing when no audio is made
AUDIO_RATE = 22050

TOOL_WORDS: dict[str, list[str]] = {
    "Grasper": ["grasper", "grasping forceps", "atraumatic grasper", "fenestrated grasper"],
    "Bipolar": ["bipolar", "bipolar forceps", "bipolar coagulation forceps"],
    "Hook": ["hook", "electrocautery hook", "monopolar hook", "L hook"],
    "Scissors": ["scissors", "laparoscopic scissors", "curved scissors"],
    "Clipper": ["clip applier", "clipper", "clip applicator"],
    "Irrigator": ["irrigator", "suction irrigation cannula", "suction device"],
    "SpecimenBag": ["specimen bag", "retrieval bag", "endobag"],
}

# What each tool looks like on screen (ties words to the renderer's colours and shapes).
TOOL_LOOKS: dict[str, list[str]] = {
    "Grasper": ["The {t} with its silver fenestrated jaws is holding the tissue.",
                "You can see the dark shaft of the {t} coming in from above."],
    "Bipolar": ["The blue tipped {t} is coming in from the left side.",
                "Notice the {t}, the instrument with the blue jaws."],
    "Hook": ["The white L shaped tip of the {t} is what makes the smoke here.",
             "Watch the {t}, a thin black shaft with a bent white tip."],
    "Scissors": ["The golden curved blades of the {t} are now in view.",
                 "Here come the {t} with their yellow blades."],
    "Clipper": ["The {t} has a purple collar and a clip loaded between its jaws.",
                "The thick {t} comes in from the right with a new clip."],
    "Irrigator": ["The white {t} sprays a jet of saline.",
                  "The {t} is the plain white tube, washing the field."],
    "SpecimenBag": ["The white plastic {t} with its blue rim is open in the field.",
                    "You see the {t}, a white pouch with a blue string."],
}

# Per phase: (tools a sentence names, sentence). {Tool} is replaced by a word for that tool.
PHASE_LINES: dict[str, list[tuple[tuple[str, ...], str]]] = {
    "Preparation": [
        ((), "At the start the gallbladder is still hidden under yellow fat and nothing has been divided."),
        ((), "This is the opening view, the liver on top and the green gallbladder below it with fat over the neck."),
        ((), "Before any dissection we orient ourselves and look at the fat around the infundibulum."),
        (("Grasper",), "The {Grasper} takes hold of the fundus and pushes it up over the liver."),
        (("Grasper",), "My assistant keeps the gallbladder under tension with the {Grasper} so we can orient ourselves."),
        (("Hook",), "I only touch the fatty tissue with the {Hook} to find the right plane, no cutting yet."),
        (("Grasper", "Hook"), "With the {Grasper} on the gallbladder I bring the {Hook} close to the yellow fat."),
    ],
    "CalotTriangleDissection": [
        ((), "Little by little the fat is cleared from the hepatocystic triangle around the cystic duct and artery."),
        ((), "The pale cystic duct and the red cystic artery start to appear out of the fat."),
        ((), "We dissect the triangle until only the cystic duct and the cystic artery enter the gallbladder, the critical view of safety."),
        (("Hook",), "The {Hook} strips the peritoneum over Calot's triangle, you can see the smoke."),
        (("Hook",), "I use short bursts with the {Hook} to open the tissue in front of the duct."),
        (("Grasper", "Hook"), "The {Grasper} pulls the neck laterally while the {Hook} opens the triangle."),
        (("Grasper",), "Traction with the {Grasper} on the infundibulum opens up the triangle."),
    ],
    "ClippingCutting": [
        ((), "Both cystic structures are now controlled, the duct and the artery."),
        (("Clipper",), "The {Clipper} places a silver clip across the cystic duct."),
        (("Clipper",), "Two clips go on the cystic duct on the patient side and one towards the gallbladder, fired with the {Clipper}."),
        (("Clipper", "Grasper"), "Holding the neck with the {Grasper}, I fire the {Clipper} on the artery."),
        (("Scissors",), "Now the {Scissors} divide the duct between the clips."),
        (("Scissors",), "The artery is cut with the {Scissors}, leaving the clips on both sides."),
        (("Scissors", "Grasper"), "The {Grasper} holds the neck up and the {Scissors} cut the cystic duct between the clips."),
    ],
    "GallbladderDissection": [
        ((), "The gallbladder is being taken off the liver bed, which turns dark where it is burned."),
        ((), "We separate the gallbladder wall from the liver bed and work up towards the fundus."),
        ((), "The clipped stumps stay behind while we free the gallbladder from the liver bed."),
        (("Hook",), "The {Hook} burns through the attachments between the gallbladder and the liver bed."),
        (("Grasper", "Hook"), "With the {Grasper} pulling the gallbladder up, the {Hook} frees it from the liver."),
        (("Grasper",), "The {Grasper} rolls the gallbladder over while we dissect it off the liver."),
        (("Bipolar",), "A small bleeder on the liver bed gets a touch of the {Bipolar}."),
    ],
    "GallbladderPackaging": [
        ((), "The gallbladder is free now and goes into a bag before it comes out."),
        ((), "The detached gallbladder lies on top of the liver, ready to be bagged."),
        (("SpecimenBag",), "We open the {SpecimenBag} and slide the gallbladder inside."),
        (("SpecimenBag", "Grasper"), "The {Grasper} drops the gallbladder into the {SpecimenBag}."),
        (("SpecimenBag",), "Everything goes into the {SpecimenBag} so that no stones are spilled."),
    ],
    "CleaningCoagulation": [
        ((), "Now we wash the field and look for any bleeding on the liver bed."),
        ((), "There are some dark red blood clots that we have to clear away."),
        (("Irrigator",), "The {Irrigator} washes the liver bed with saline and sucks it back."),
        (("Irrigator",), "A few rounds of washing and suction with the {Irrigator} until the fluid is clear."),
        (("Bipolar",), "The oozing points are sealed with the {Bipolar}."),
        (("Bipolar", "Irrigator"), "The {Irrigator} clears the blood so that the {Bipolar} can seal the bleeding point."),
        (("Grasper",), "The {Grasper} moves the clot aside so we can wash and check for bleeding."),
    ],
    "GallbladderRetraction": [
        ((), "The last step is taking the specimen out of the abdomen through the umbilical port."),
        ((), "The specimen in its bag leaves the abdomen through the port at the umbilicus."),
        (("SpecimenBag",), "The {SpecimenBag} is pulled towards the port and out of the patient."),
        (("SpecimenBag", "Grasper"), "The {Grasper} takes the string of the {SpecimenBag} and draws it out through the port."),
        (("Grasper",), "The {Grasper} brings the bag opening up to the trocar."),
    ],
}

SLIDE_TITLES: dict[str, str] = {
    "Preparation": "Setup and exposure", "CalotTriangleDissection": "The hepatocystic triangle",
    "ClippingCutting": "Control of the cystic structures", "GallbladderDissection": "Off the liver bed",
    "GallbladderPackaging": "Bagging the specimen", "CleaningCoagulation": "Haemostasis and lavage",
    "GallbladderRetraction": "Extraction",
}
SLIDE_LINES: list[str] = [
    "Let me put the next step on a slide before we watch it.",
    "This slide summarises the key points of this step.",
    "A few words of theory before the video.",
    "Here are the things to keep in mind at this stage.",
    "On this slide you see the main pitfalls.",
    "The literature on this step is quite clear.",
    "Let us go through the bullet points one by one.",
]
HEAD_LINES: list[str] = [
    "Good morning everyone and thank you for having me.",
    "Today I will show you a standard case from our department.",
    "Thank you for your attention, I am happy to take questions.",
    "I have been doing this operation for many years and this is how we teach it.",
    "Let me tell you a little about how we set up the theatre.",
]


# ---- style "b": the shifted world's narration, written apart from style "a" (no template shared) ----
TOOL_WORDS_B: dict[str, list[str]] = {
    "Grasper": ["grasper", "jaw forceps", "holding clamp", "tissue grasper"],
    "Bipolar": ["bipolar", "bipolar sealer", "maryland bipolar"],
    "Hook": ["hook", "diathermy hook", "cautery probe", "hook electrode"],
    "Scissors": ["scissors", "metzenbaum scissors", "cutting shears"],
    "Clipper": ["clipper", "clip gun", "ligating clip device"],
    "Irrigator": ["irrigator", "lavage wand", "suction irrigator"],
    "SpecimenBag": ["specimen bag", "extraction pouch", "retrieval sack"],
}
TOOL_LOOKS_B: dict[str, list[str]] = {
    "Grasper": ["Those khaki coloured tips belong to the {t}.",
                "A grey rod ends in the olive jaws of the {t}."],
    "Bipolar": ["Green jaws on a brown rod, that is the {t}.",
                "Look for the {t}, its paddles are green."],
    "Hook": ["That peach coloured bent wire is the {t}.",
             "A slim slate rod carries the {t} with its pale orange bend."],
    "Scissors": ["Orange blades, so those are the {t}.",
                 "The {t} arrive, blades glowing orange."],
    "Clipper": ["The {t} is the heavy one with the pink ring.",
                "A brown rod and a rose coloured ring mark the {t}."],
    "Irrigator": ["The sandy beige tube spraying a pale stream is the {t}.",
                  "The {t} squirts a light cyan stream across the surface."],
    "SpecimenBag": ["A pale blue pouch with an orange rim, the {t}, sits open.",
                    "Notice the {t}, light blue with an orange cord."],
}
PHASE_LINES_B: dict[str, list[tuple[tuple[str, ...], str]]] = {
    "Preparation": [
        ((), "First glimpse: cream coloured fatty covering hides the gallbladder and nothing is divided."),
        ((), "Purple liver above, grey green gallbladder beneath, fat draped across its neck."),
        ((), "Survey first, we check the anatomy and where the cystic pedicle should lie."),
        (("Grasper",), "The {Grasper} lifts the fundus cranially, over the liver edge."),
        (("Grasper",), "Countertraction from the {Grasper} keeps everything stretched while we orient."),
        (("Hook",), "Gently probing the fatty layer with the {Hook}, not cutting anything yet."),
        (("Grasper", "Hook"), "{Grasper} on the fundus, {Hook} approaching the fatty covering."),
    ],
    "CalotTriangleDissection": [
        ((), "Fatty tissue is peeled away bit by bit around the cystic pedicle."),
        ((), "A cream coloured duct and a crimson artery emerge as the fat goes."),
        ((), "Clearing continues until two structures alone reach the gallbladder, our safety view."),
        (("Hook",), "Plumes rise as the {Hook} scores the peritoneal covering over the pedicle."),
        (("Hook",), "Brief activations of the {Hook} open the plane ahead of the duct."),
        (("Grasper", "Hook"), "Lateral pull by the {Grasper}, dissection by the {Hook}."),
        (("Grasper",), "Pulling Hartmann's pouch outward with the {Grasper} widens this space."),
    ],
    "ClippingCutting": [
        ((), "Duct plus artery, both secured before any division."),
        (("Clipper",), "A metal clip from the {Clipper} closes across the duct."),
        (("Clipper",), "Using the {Clipper}, two clips go proximally and one distally."),
        (("Clipper", "Grasper"), "With the {Grasper} steadying the neck, the {Clipper} fires onto the artery."),
        (("Scissors",), "Division follows, the {Scissors} snipping between the clips."),
        (("Scissors",), "Artery divided by the {Scissors}, clips remaining on each stump."),
        (("Scissors", "Grasper"), "Neck elevated by the {Grasper}, the {Scissors} transect the duct."),
    ],
    "GallbladderDissection": [
        ((), "Detachment from the hepatic bed leaves a brownish charred surface behind."),
        ((), "Plane by plane, the wall comes off the hepatic bed toward the fundus."),
        ((), "Stumps with their clips remain while the organ is freed from the hepatic bed."),
        (("Hook",), "Adhesions to the hepatic bed are divided using the {Hook}."),
        (("Grasper", "Hook"), "{Grasper} retracting upward, {Hook} releasing the attachments."),
        (("Grasper",), "By flipping the organ with the {Grasper}, the posterior plane comes into view."),
        (("Bipolar",), "One oozing vessel on the hepatic bed, sealed by the {Bipolar}."),
    ],
    "GallbladderPackaging": [
        ((), "Completely detached, the organ now needs a container for extraction."),
        ((), "Resting free above the liver, the organ waits for packing."),
        (("SpecimenBag",), "Unfolding the {SpecimenBag}, we tuck the organ inside."),
        (("SpecimenBag", "Grasper"), "Released by the {Grasper}, the organ falls into the {SpecimenBag}."),
        (("SpecimenBag",), "Inside the {SpecimenBag}, no stone can escape."),
    ],
    "CleaningCoagulation": [
        ((), "Lavage time, checking the hepatic bed for oozing."),
        ((), "Several maroon clots remain and must be cleared."),
        (("Irrigator",), "Flushing and aspirating with the {Irrigator} over the hepatic bed."),
        (("Irrigator",), "Repeated flushes from the {Irrigator} until returns run clear."),
        (("Bipolar",), "Any ooze is stopped with the {Bipolar}."),
        (("Bipolar", "Irrigator"), "Once the {Irrigator} rinses the clot off, the {Bipolar} seals the spot."),
        (("Grasper",), "Clots get pushed away by the {Grasper} for a better look."),
    ],
    "GallbladderRetraction": [
        ((), "Finally, extraction of the specimen via the navel incision."),
        ((), "Packed specimen exits through the umbilical opening."),
        (("SpecimenBag",), "Drawing the {SpecimenBag} toward the umbilical trocar and outside."),
        (("SpecimenBag", "Grasper"), "Catching the cord of the {SpecimenBag}, the {Grasper} drags it outside."),
        (("Grasper",), "Its mouth is guided toward the trocar by the {Grasper}."),
    ],
}
SLIDE_TITLES_B: dict[str, str] = {
    "Preparation": "Orientation", "CalotTriangleDissection": "Critical view",
    "ClippingCutting": "Securing the pedicle", "GallbladderDissection": "Hepatic bed separation",
    "GallbladderPackaging": "Containment", "CleaningCoagulation": "Lavage and bleeding check",
    "GallbladderRetraction": "Specimen removal",
}
SLIDE_LINES_B: list[str] = [
    "Next, a summary slide for this stage.",
    "Some background first, then footage.",
    "These are typical errors trainees make here.",
    "Quick recap of evidence for this stage.",
    "Points worth remembering before watching.",
    "Keep these numbers in mind.",
    "Here is our checklist for this stage.",
]
HEAD_LINES_B: list[str] = [
    "Hello and welcome, thanks for joining this session.",
    "What follows is a routine case recorded at our hospital.",
    "That concludes my talk, questions are welcome.",
    "Our residents learn this procedure exactly this way.",
    "A word about port placement before we begin.",
]


@dataclass(frozen=True)
class Narration:
    """One style's spoken language: tool words and looks, phase sentences, slides, talking-head lines.
    Its methods draw one utterance each (the same calls as ``RandomNarration``'s)."""

    tool_words: dict[str, list[str]]
    tool_looks: dict[str, list[str]]
    phase_lines: dict[str, list[tuple[tuple[str, ...], str]]]
    slide_titles: dict[str, str]
    slide_lines: list[str]
    head_lines: list[str]
    words_per_second: float = WORDS_PER_SECOND
    filler_sentence_rate: float = 0.0  # written styles never say a filler-only sentence ...
    delay: float = 0.0  # ... and speak exactly when the action is on screen
    delay_jitter: float = 0.0

    def open_line(self, rng: np.random.Generator) -> str:
        return self.head_lines[int(rng.integers(2))]

    def close_line(self, rng: np.random.Generator) -> str:
        return self.head_lines[2 + int(rng.integers(len(self.head_lines) - 2))]

    def slide(self, rng: np.random.Generator, phase: str, probs: dict[str, float]) -> tuple[str, list[str], list[str]]:
        """A slide's title, three bullets and the one or two sentences said over it."""
        lines = self.phase_lines[phase]
        bullets = [_fill(s, rng, self.tool_words) for _, s in (lines[i] for i in rng.choice(len(lines), 3, replace=False))]
        n = int(rng.integers(1, 3))
        return self.slide_titles[phase], bullets, [self.slide_lines[i] for i in rng.choice(len(self.slide_lines), n, replace=False)]

    def operative(self, rng: np.random.Generator, phase: str, progress: float,
                  probs: dict[str, float]) -> tuple[str, tuple[str, ...]]:
        """One sentence for an operative moment and the tools to draw while it is spoken."""
        probs = dict(probs)
        if phase == "ClippingCutting":  # the clipper works first, the scissors afterwards
            probs.pop("Scissors" if progress < CLIP_TO_CUT else "Clipper")
        shown = {t for t, p in probs.items() if rng.random() < p}
        if not shown:
            shown = {max(probs, key=probs.get)}
        options = [(need, s) for need, s in self.phase_lines[phase] if set(need) <= set(probs)]
        if rng.random() < 0.2:  # describe how a tool in view looks
            tool = sorted(shown)[rng.integers(len(shown))]
            looks = self.tool_looks[tool]
            tmpl = looks[rng.integers(len(looks))].replace("{t}", "{" + tool + "}")
            return _fill(tmpl, rng, self.tool_words), tuple(sorted(shown))
        need, tmpl = options[rng.integers(len(options))]
        return _fill(tmpl, rng, self.tool_words), tuple(sorted(shown | set(need)))


NARRATION: dict[str, Narration] = {
    "a": Narration(TOOL_WORDS, TOOL_LOOKS, PHASE_LINES, SLIDE_TITLES, SLIDE_LINES, HEAD_LINES),
    "b": Narration(TOOL_WORDS_B, TOOL_LOOKS_B, PHASE_LINES_B, SLIDE_TITLES_B, SLIDE_LINES_B, HEAD_LINES_B),
}

# Spelling and wording of the second ASR source (lower case, no punctuation after this).
ASR_B_SUBS: list[tuple[str, str]] = [
    (r"\bgallbladder\b", "gall bladder"), (r"\bcalot's\b", "callots"), (r"\bhepatocystic\b", "hepato cystic"),
    (r"\binfundibulum\b", "infundibular"), (r"\bendobag\b", "endo bag"), (r"\bclip applier\b", "clip applicator"),
    (r"\bsaline\b", "saline solution"), (r"\bhaemostasis\b", "hemostasis"), (r"\bl hook\b", "el hook"),
]
FILLERS = ("uh", "um", "so", "you know", "okay")


@dataclass
class Sentence:
    start: float
    end: float
    text: str
    kind: str  # slide / operative / other
    phase: int = -1
    tools: tuple[str, ...] = ()
    audio: np.ndarray | None = None
    lag: float = 0.0  # the speech comes this long after its action is on screen (negative: before)


@dataclass
class Shot:
    """A stretch of the lecture showing one thing: a slide, the talking head or an operative phase."""

    kind: str
    start: float
    end: float
    phase: int = -1
    progress: tuple[float, float] = (0.0, 1.0)
    title: str = ""
    bullets: list[str] = field(default_factory=list)
    sentences: list[Sentence] = field(default_factory=list)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", rate_wpm: int = 150) -> np.ndarray:
    """Narration audio (float32 mono at ``AUDIO_RATE``) from espeak-ng."""
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(wav), text],
                       check=True, capture_output=True, timeout=60)
        with wave.open(str(wav)) as w:
            if w.getframerate() != AUDIO_RATE or w.getsampwidth() != 2:
                raise RuntimeError(f"unexpected espeak-ng output: {w.getframerate()} Hz, {w.getsampwidth()} bytes")
            x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    return x


def _fill(template: str, rng: np.random.Generator, words: dict[str, list[str]] = TOOL_WORDS) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: words[m.group(1)][rng.integers(len(words[m.group(1)]))], template)


@dataclass
class LecturePlan:
    shots: list[Shot]
    duration: float

    @property
    def sentences(self) -> list[Sentence]:
        return [s for shot in self.shots for s in shot.sentences]


def plan_lecture(rng: np.random.Generator, with_audio: bool, phases: tuple[int, int] = (4, 7),
                 narration: Narration | RandomNarration = NARRATION["a"],
                 tool_prob: dict[str, dict[str, float]] = TOOL_PROB) -> LecturePlan:
    """Shots and timed sentences: intro, then ``phases`` (min, max) phases (slide, then footage), then a
    close, in ``narration``'s language, with the world's ``tool_prob``. Sentence times are when they are
    spoken; with a narration ``delay`` the action they describe is on screen ``Sentence.lag`` earlier."""
    nar = narration
    n_phases = int(rng.integers(phases[0], min(phases[1], len(CHOLEC80_PHASES)) + 1))
    chosen = sorted(rng.choice(len(CHOLEC80_PHASES), n_phases, replace=False).tolist())
    t = 0.0
    shots: list[Shot] = []

    def add(shot: Shot, texts: list[tuple[str, tuple[str, ...]]]) -> None:
        nonlocal t
        shot.start = t
        t += float(rng.uniform(0.3, 0.8))
        for text, tools in texts:
            audio = speak(text, rate_wpm=int(round(60 * nar.words_per_second))) if with_audio else None
            dur = len(audio) / AUDIO_RATE if audio is not None else len(text.split()) / nar.words_per_second
            shot.sentences.append(Sentence(t, t + dur, text, shot.kind, shot.phase, tools, audio))
            t += dur + float(rng.uniform(0.3, 0.9))
        shot.end = t
        shots.append(shot)

    add(Shot("other", 0, 0), [(nar.open_line(rng), ())])
    for p in chosen:
        name = CHOLEC80_PHASES[p]
        if rng.random() < 0.6:
            title, bullets, said = nar.slide(rng, name, tool_prob[name])
            add(Shot("slide", 0, 0, phase=p, title=title, bullets=bullets), [(line, ()) for line in said])
        n = int(rng.integers(3, 6))
        p0, p1 = sorted(rng.uniform(0.0, 1.0, 2))
        p0, p1 = min(p0, 0.2), max(p1, 0.8)
        texts: list[tuple[str, tuple[str, ...]]] = []
        while len(texts) < n:  # no sentence twice in one shot
            if texts and nar.filler_sentence_rate and rng.random() < nar.filler_sentence_rate:
                texts.append((nar.filler(rng), texts[-1][1]))  # "okay, let's see": the same tools stay in view
                continue
            line = nar.operative(rng, name, p0 + (p1 - p0) * (len(texts) + 0.5) / n, tool_prob[name])
            if all(line[0] != prev for prev, _ in texts):
                texts.append(line)
        add(Shot("operative", 0, 0, phase=p, progress=(p0, p1)), texts)
    add(Shot("other", 0, 0), [(nar.close_line(rng), ())])
    end = _lag_speech(shots, rng, nar.delay, nar.delay_jitter) if nar.delay or nar.delay_jitter else t
    return LecturePlan(shots, max(t, end) + 0.5)


def _lag_speech(shots: list[Shot], rng: np.random.Generator, delay: float, jitter: float) -> float:
    """Move operative speech ``delay`` ± ``jitter`` s after its action, keeping sentences in order without
    overlap; returns when the last one ends."""
    prev_end = 0.0
    for shot in shots:
        for s in shot.sentences:
            lag = delay + float(rng.uniform(-jitter, jitter)) if shot.kind == "operative" else 0.0
            lag = max(lag, -s.start, prev_end + 0.05 - s.start if prev_end else -s.start)
            s.start, s.end, s.lag = s.start + lag, s.end + lag, lag
            prev_end = s.end
    return prev_end


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_slide(shot: Shot, size: tuple[int, int], style: dict) -> np.ndarray:
    """A text slide: light background, coloured title bar, bullet lines."""
    h, w = size
    img = Image.new("RGB", (w, h), style["bg"])
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, w, int(0.18 * h)], fill=style["bar"])
    d.text((int(0.05 * w), int(0.05 * h)), shot.title, fill=(255, 255, 255), font=_font(max(8, h // 14)))
    body = _font(max(6, h // 22))
    y = int(0.25 * h)
    for b in shot.bullets:
        words, line = b.split(), ""
        lines = []
        for wd in words:
            if len(line) + len(wd) + 1 > max(12, w // max(4, h // 40)):
                lines.append(line)
                line = wd
            else:
                line = f"{line} {wd}".strip()
        lines.append(line)
        d.ellipse([int(0.04 * w), y + 2, int(0.04 * w) + 4, y + 6], fill=style["bar"])
        for ln in lines[:2]:
            d.text((int(0.08 * w), y), ln, fill=(40, 40, 40), font=body)
            y += max(8, h // 18)
        y += max(3, h // 40)
        if y > 0.9 * h:
            break
    return np.asarray(img)


def render_head(t: float, size: tuple[int, int], style: dict) -> np.ndarray:
    """The speaker at a lectern: a simple figure over a blue-grey gradient."""
    h, w = size
    grad = np.linspace(0.6, 1.0, h, dtype=np.float32)[:, None, None] * np.array(style["wall"], np.float32)
    img = Image.fromarray(np.broadcast_to(grad, (h, w, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    cx = w * 0.5 + 4 * np.sin(0.7 * t)
    d.ellipse([cx - 0.3 * w, 0.62 * h, cx + 0.3 * w, 1.3 * h], fill=style["suit"])
    d.ellipse([cx - 0.12 * w, 0.25 * h, cx + 0.12 * w, 0.6 * h], fill=(225, 180, 150))
    mouth = 0.01 * h * (1 + np.sin(9 * t))
    d.ellipse([cx - 0.04 * w, 0.5 * h - mouth, cx + 0.04 * w, 0.5 * h + mouth], fill=(120, 50, 50))
    d.rectangle([0.2 * w, 0.8 * h, 0.8 * w, h], fill=(110, 80, 50))
    return np.asarray(img)


def lecture_frames(plan: LecturePlan, world: SurgicalWorld, size: tuple[int, int], style: dict):
    """Frames of the lecture in order (uint8 HWC)."""
    n = int(round(plan.duration * FPS))
    slide_cache: dict[int, np.ndarray] = {}
    k = 0
    for f in range(n):
        t = f / FPS
        while k < len(plan.shots) - 1 and t >= plan.shots[k].end:
            k += 1
        shot = plan.shots[k]
        if shot.kind == "slide":
            if k not in slide_cache:
                slide_cache = {k: render_slide(shot, size, style)}
            yield slide_cache[k]
        elif shot.kind == "other":
            yield render_head(t, size, style)
        else:
            yield world.render(t, shot.phase, _progress(shot, t), _tools_at(shot, t))


def _progress(shot: Shot, t: float) -> float:
    a = (t - shot.start) / max(shot.end - shot.start, 1e-6)
    return float(np.clip(shot.progress[0] + a * (shot.progress[1] - shot.progress[0]), 0, 0.999))


def _tools_at(shot: Shot, t: float) -> np.ndarray:
    """The tools of the sentence being spoken (or the last one spoken) at ``t``."""
    current = shot.sentences[0]
    for s in shot.sentences:
        if s.start - s.lag <= t:  # its action is on screen
            current = s
    out = np.zeros(len(CHOLEC80_TOOLS), np.int64)
    for tool in current.tools:
        out[CHOLEC80_TOOLS.index(tool)] = 1
    return out


def truth_rows(plan: LecturePlan) -> list[dict]:
    """At each whole second: frame type, phase and tools on screen."""
    rows = []
    for sec in range(int(np.ceil(plan.duration))):
        t = float(sec)
        shot = next((s for s in plan.shots if s.start <= t < s.end), plan.shots[-1])
        tools = _tools_at(shot, t) if shot.kind == "operative" else np.zeros(len(CHOLEC80_TOOLS), np.int64)
        rows.append({"t": sec, "frame_type": shot.kind,
                     "phase": CHOLEC80_PHASES[shot.phase] if shot.kind == "operative" else None,
                     "tools": [CHOLEC80_TOOLS[i] for i in np.flatnonzero(tools)]})
    return rows


def asr_b(sentences: list[Sentence], rng: np.random.Generator) -> list[Segment]:
    """The second ASR source: merged/split sentences, lower case without punctuation, variants, fillers."""
    segs: list[Segment] = []
    i = 0
    while i < len(sentences):
        s = sentences[i]
        start, end, text = s.start, s.end, s.text
        if i + 1 < len(sentences) and rng.random() < 0.3 and sentences[i + 1].start - end < 1.0:
            nxt = sentences[i + 1]
            end, text = nxt.end, f"{text} {nxt.text}"
            i += 1
        i += 1
        text = text.lower()
        for pat, rep in ASR_B_SUBS:
            text = re.sub(pat, rep, text)
        words = re.sub(r"[^\w' ]", " ", text).split()
        words = [wd for wd in words if rng.random() > 0.05] or words  # an occasional dropped word
        if rng.random() < 0.25:
            words.insert(int(rng.integers(len(words) + 1)), FILLERS[int(rng.integers(len(FILLERS)))])
        jit = rng.uniform(-0.15, 0.15, 2)
        start, end = max(0.0, start + jit[0]), max(start + jit[0] + 0.3, end + jit[1])
        if len(words) > 10 and rng.random() < 0.4:  # split a long one in two
            cut = len(words) // 2
            mid = start + (end - start) * cut / len(words)
            segs += [Segment(start, mid, " ".join(words[:cut])), Segment(mid, end, " ".join(words[cut:]))]
        else:
            segs.append(Segment(start, end, " ".join(words)))
    # keep them ordered and non-overlapping, as a real ASR output is
    fixed: list[Segment] = []
    for s in segs:
        if fixed and s.start < fixed[-1].end:
            s = Segment(fixed[-1].end, max(s.end, fixed[-1].end + 0.2), s.text)
        fixed.append(s)
    return fixed


def _audio_track(plan: LecturePlan) -> np.ndarray:
    x = np.zeros(int(plan.duration * AUDIO_RATE) + 1, np.float32)
    for s in plan.sentences:
        if s.audio is not None:
            i = int(s.start * AUDIO_RATE)
            seg = s.audio[: len(x) - i]
            x[i : i + len(seg)] += seg
    return x


def write_csv(path: Path, segments: list[Segment]) -> None:
    import csv
    import io

    buf = io.StringIO()
    wr = csv.writer(buf)
    wr.writerow(["start", "end", "text"])
    for s in segments:
        wr.writerow([f"{s.start:.3f}", f"{s.end:.3f}", s.text])
    atomic_write_text(path, buf.getvalue())


def synthesize_lecture(out: str | Path, index: int, seed: int, size: tuple[int, int] = (224, 224),
                       audio: bool = True, crf: int = 23, phases: tuple[int, int] = (4, 7), style: str = "a") -> dict:
    """Write lecture ``talkNN`` in ``style`` (the world's look and the narration's language, see
    ``medvid.synth.surgery.STYLES`` and ``NARRATION``; ``"random"``: world ``seed``'s drawn look and
    language): video (+ narration audio when espeak-ng exists), two transcripts, truth."""
    if style not in STYLE_CHOICES:
        raise ValueError(f"style must be one of {list(STYLE_CHOICES)}, got {style!r}")
    out = Path(out)
    name = f"talk{index:02d}"
    look, procedure = world_for(style, seed)
    narration = random_narration(seed, look) if style == "random" else NARRATION[style]
    rng = np.random.default_rng([seed, index, 1])
    with_audio = audio and espeak_available()
    plan = plan_lecture(rng, with_audio, phases, narration, procedure.tool_prob)
    world = SurgicalWorld(rng, size=tuple(size), style=look)
    style = {"bg": tuple(int(v) for v in rng.integers(232, 256, 3)),
             "bar": tuple(int(v) for v in rng.integers(20, 120, 3)),
             "wall": tuple(int(v) for v in (rng.integers(60, 110), rng.integers(80, 130), rng.integers(120, 180))),
             "suit": tuple(int(v) for v in rng.integers(20, 70, 3))}
    sound = (_audio_track(plan), AUDIO_RATE) if with_audio else None
    n = write_video(out / f"{name}.mp4", lecture_frames(plan, world, tuple(size), style), FPS, crf=crf, gop=2 * FPS,
                    audio=sound)
    sents = plan.sentences
    write_whisper_json(out / f"{name}.whisper.json", [Segment(s.start, s.end, s.text) for s in sents],
                       language="en", synthetic=True)
    write_csv(out / f"{name}.aws.csv", asr_b(sents, rng))
    truth = {"video": f"{name}.mp4", "duration_s": n / FPS, "audio": with_audio, "seconds": truth_rows(plan),
             "sentences": [{"start": s.start, "end": s.end, "text": s.text, "frame_type": s.kind,
                            "phase": CHOLEC80_PHASES[s.phase] if s.phase >= 0 and s.kind == "operative" else None,
                            "tools": list(s.tools)} for s in sents]}
    with atomic_path(out / "truth" / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(truth, indent=1))
    return {"lecture": name, "seconds": n / FPS, "sentences": len(sents), "audio": with_audio}

