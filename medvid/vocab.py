"""Domain vocabularies shared by every layer (label sets fixed by public datasets and models)."""
from __future__ import annotations

# EchoPrime's released view classifier: 11 coarse views.
ECHO_VIEWS: tuple[str, ...] = (
    "A2C", "A3C", "A4C", "A5C", "Apical_Doppler", "Doppler_Parasternal_Long",
    "Doppler_Parasternal_Short", "Parasternal_Long", "Parasternal_Short", "SSN", "Subcostal",
)

# EchoPrime's 15 anatomical report sections, plus postoperative findings.
ECHO_SECTIONS: tuple[str, ...] = (
    "Left Ventricle", "Resting Segmental Wall Motion Analysis", "Right Ventricle", "Left Atrium",
    "Right Atrium", "Atrial Septum", "Mitral Valve", "Aortic Valve", "Tricuspid Valve",
    "Pulmonic Valve", "Pericardium", "Aorta", "IVC", "Pulmonary Artery", "Pulmonary Veins",
    "Postoperative Findings",
)

CHOLEC80_PHASES: tuple[str, ...] = (
    "Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection",
    "GallbladderPackaging", "CleaningCoagulation", "GallbladderRetraction",
)

CHOLEC80_TOOLS: tuple[str, ...] = (
    "Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag",
)

# AutoLaparo (laparoscopic hysterectomy) phases, in the dataset's order.
AUTOLAPARO_PHASES: tuple[str, ...] = (
    "Preparation", "Dividing Ligament and Peritoneum", "Dividing Uterine Vessels and Ligament",
    "Transecting the Vagina", "Specimen Removal", "Suturing", "Washing",
)

LECTURE_FRAME_TYPES: tuple[str, ...] = ("slide", "operative", "other")
