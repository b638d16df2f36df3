"""The ``medvid`` command. Each job lives in ``pipelines/<job>.py`` as a ``Config`` dataclass and
``run(cfg) -> dict``; this module only turns arguments into config overrides and prints the summary.

Every command takes ``--config FILE`` and trailing ``key=value`` overrides of any config field.
"""
from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any, List, Optional

import typer

app = typer.Typer(help="medvid: clinical and surgical video foundation models.", no_args_is_help=True)
synth_app = typer.Typer(help="Make synthetic datasets (real DICOM files, real video codecs).", no_args_is_help=True)
lectures_app = typer.Typer(help="Lecture corpora: clip-text pairs.", no_args_is_help=True)
zero_shot_app = typer.Typer(help="Zero-shot surgical phase and tool recognition.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
app.add_typer(lectures_app, name="lectures")
app.add_typer(zero_shot_app, name="zero-shot")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file layered over the shipped defaults.")
OverridesArg = typer.Argument(None, help="key=value overrides of config fields.", show_default=False)


def _kv(**values: Any) -> list[str]:
    """Turn CLI options into ``key=value`` overrides, skipping unset ones."""
    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in values.items() if v is not None]


def run_job(job: str, config: Optional[Path], overrides: list[str], name: str | None = None) -> dict:
    """Load ``pipelines.<job>``, build its config and run it; returns its summary."""
    from omegaconf.errors import OmegaConfBaseException

    from medvid.config import load_config
    from medvid.errors import MedvidError
    from medvid.utils import setup_logging

    setup_logging()
    module = importlib.import_module(f"pipelines.{job}")
    try:
        cfg = load_config(module.Config, name or job, config, overrides)
        summary = module.run(cfg)
    except (MedvidError, OmegaConfBaseException, FileNotFoundError) as exc:
        logging.getLogger("medvid").error("%s", exc)
        raise typer.Exit(code=1) from exc
    if summary:  # data on stdout, logs and progress on stderr
        typer.echo(json.dumps(summary, indent=1, default=str))
    return summary


@app.command()
def demo(out: Path = typer.Option(Path("demo_out"), help="Output folder."), config: Optional[Path] = ConfigOpt,
         overrides: Optional[List[str]] = OverridesArg) -> None:
    """The main job: synthesize data, ingest it and run every stage end to end on it."""
    run_job("demo", config, _kv(out=out) + (overrides or []))


@app.command()
def ingest(dicom_root: Path = typer.Argument(..., help="Folder tree of DICOM files."),
           out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
           config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Index an echo DICOM export into de-identified cine-loop tables (videos.parquet, errors.jsonl)."""
    run_job("ingest", config, _kv(dicom_root=dicom_root, out=out) + (overrides or []))


@synth_app.command("echo")
def synth_echo(out: Path, studies: int = typer.Option(None, help="Number of studies."),
               seed: int = typer.Option(None, help="Random seed."),
               config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Synthetic echo studies as ultrasound machines write them, with reports.csv and labels.csv."""
    run_job("synth_echo", config, _kv(out=out, studies=studies, seed=seed) + (overrides or []))


@synth_app.command("surgery")
def synth_surgery(out: Path, videos: int = typer.Option(None, help="Number of videos."),
                  seed: int = typer.Option(None, help="Random seed."),
                  config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Synthetic Cholec80-layout surgical videos with phase and tool annotations."""
    run_job("synth_surgery", config, _kv(out=out, videos=videos, seed=seed) + (overrides or []))


@synth_app.command("lectures")
def synth_lectures(out: Path, lectures: int = typer.Option(None, help="Number of lectures."),
                   seed: int = typer.Option(None, help="Random seed."),
                   config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Synthetic surgical lectures (slides + operative footage) with transcripts from two ASR sources."""
    run_job("synth_lectures", config, _kv(out=out, lectures=lectures, seed=seed) + (overrides or []))


@app.command()
def transcribe(path: Path = typer.Argument(..., help="A video, or a folder of videos."),
               config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Offline speech recognition (faster-whisper) writing <name>.whisper.json beside each video."""
    run_job("transcribe", config, _kv(path=path) + (overrides or []))


@lectures_app.command("index")
def lectures_index(root: Path, out: Path = typer.Option(..., "--out", "-o"),
                   config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Build clip-text pairs (pairs.jsonl) from lecture videos and their transcripts."""
    run_job("lectures_index", config, _kv(root=root, out=out) + (overrides or []))


@app.command()
def pretrain(config: Path = typer.Argument(..., help="Job config, e.g. configs/echo_pretrain.yaml."),
             overrides: Optional[List[str]] = OverridesArg) -> None:
    """Contrastive pretraining (echo video-report or surgical clip-speech); works under torchrun."""
    run_job("pretrain", config, overrides or [], name=None)


@app.command("train-views")
def train_views(config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Supervised view-classifier training from views.csv."""
    run_job("train_views", config, overrides or [], name="view_classifier")


def _zero_shot(task: str, data_root: Path, model: Path, out: Path, prompts: Optional[Path],
               config: Optional[Path], overrides: Optional[List[str]]) -> None:
    run_job("zero_shot", config,
            _kv(task=task, data_root=data_root, model=model, out=out, prompts=prompts) + (overrides or []))


@zero_shot_app.command("phase")
def zero_shot_phase(data_root: Path, model: Path = typer.Option(..., "--model"), out: Path = typer.Option(..., "--out"),
                    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Prompt file (YAML/JSON)."),
                    config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Zero-shot phase recognition on a Cholec80-layout root (or a folder of videos)."""
    _zero_shot("phase", data_root, model, out, prompts, config, overrides)


@zero_shot_app.command("tools")
def zero_shot_tools(data_root: Path, model: Path = typer.Option(..., "--model"), out: Path = typer.Option(..., "--out"),
                    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Prompt file (YAML/JSON)."),
                    config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Zero-shot multi-label tool recognition on a Cholec80-layout root."""
    _zero_shot("tools", data_root, model, out, prompts, config, overrides)


if __name__ == "__main__":  # pragma: no cover
    app()
