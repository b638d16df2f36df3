"""The ``medvid`` command. Each job lives in ``pipelines/<job>.py`` (``medvid.pipelines.<job>``) as a ``Config``
dataclass and ``run(cfg) -> dict``; this module only turns arguments into config overrides and prints the summary.

Every command takes ``--config FILE`` and trailing ``key=value`` overrides of any config field.
"""
from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any, List, Optional

import typer
from typer.core import TyperGroup


class _Group(TyperGroup):
    """Settings are ``key=value`` words, not options: a job's ``--help`` lists them (types and meanings from its
    typed config, defaults after the shipped YAML), and an unknown ``--fps 2`` gets a hint to write ``fps=2``."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        job = getattr(getattr(cmd, "callback", None), "medvid_job", None)
        if job is not None and ("--help" in rest or "-h" in rest):
            cmd.epilog = _settings_help(*job)
        return name, cmd, rest

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # By name: typer may raise its vendored copy of click's NoSuchOption. Nested groups (medvid synth
            # echo) each see the error: the hint is added once.
            if type(exc).__name__ != "NoSuchOption" or getattr(exc, "medvid_hint", False):
                raise
            key = exc.option_name.lstrip("-").replace("-", "_")
            exc.message += (f". Settings are key=value words after the arguments: write {key}=VALUE "
                            f"(lists as {key}=[1,2]); `--help` lists the options")
            exc.medvid_hint = True
            raise


def _settings_help(job: str, config_name: str | None) -> str:
    """The ``key=value`` settings of a job, one per line, for its ``--help``; escaped, as typer renders help as
    Rich markup, which would swallow ``[a,b]`` and ``list[str]``."""
    from rich.markup import escape

    from medvid.config import describe_settings

    module = importlib.import_module(f"medvid.pipelines.{job}")
    rows = describe_settings(module.Config, config_name)
    lines = [f"{key}={default}  ({kind}){'  ' + meaning if meaning else ''}" for key, kind, default, meaning in rows]
    return escape("Settings (key=value after the arguments; lists as key=[a,b]; shipped defaults in configs/):\n\n"
                  + "\n\n".join(lines))


def _job(job: str, config_name: str | None = "") -> Any:
    """Mark a command as running ``medvid.pipelines.<job>`` with ``configs/<config_name>.yaml`` (default: the job's name)."""
    def mark(fn: Any) -> Any:
        fn.medvid_job = (job, job if config_name == "" else config_name)
        return fn
    return mark


app = typer.Typer(help="medvid: clinical and surgical video foundation models.", no_args_is_help=True, cls=_Group)


def _version(value: bool) -> None:
    if value:
        from medvid import __version__

        typer.echo(f"medvid {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """medvid: clinical and surgical video foundation models."""
synth_app = typer.Typer(help="Make synthetic datasets (real DICOM files, real video codecs).", no_args_is_help=True,
                        cls=_Group)
lectures_app = typer.Typer(help="Lecture corpora: clip-text pairs.", no_args_is_help=True, cls=_Group)
zero_shot_app = typer.Typer(help="Zero-shot surgical phase and tool recognition.", no_args_is_help=True, cls=_Group)
bank_app = typer.Typer(help="Report banks: build from reports, calibrate phenotype thresholds.", no_args_is_help=True,
                       cls=_Group)
app.add_typer(synth_app, name="synth")
app.add_typer(lectures_app, name="lectures")
app.add_typer(zero_shot_app, name="zero-shot")
app.add_typer(bank_app, name="bank")
pacs_app = typer.Typer(help="The hospital's PACS: pull studies, push reviewed reports (DICOMweb or DIMSE).",
                       no_args_is_help=True, cls=_Group)
app.add_typer(pacs_app, name="pacs")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file layered over the shipped defaults.")
OutOpt = typer.Option(None, "--out", "-o", help="Output folder (same as out=).")
OverridesArg = typer.Argument(None, help="key=value overrides of config fields.", show_default=False)


def _kv(**values: Any) -> list[str]:
    """Turn CLI options into ``key=value`` overrides, skipping unset ones."""
    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in values.items() if v is not None]


def run_job(job: str, config: Optional[Path], overrides: list[str], name: str | None = None) -> dict:
    """Load ``medvid.pipelines.<job>``, build its config and run it; returns its summary."""
    from omegaconf.errors import OmegaConfBaseException

    from medvid.config import load_config
    from medvid.errors import MedvidError
    from medvid.utils import setup_logging

    setup_logging()
    module = importlib.import_module(f"medvid.pipelines.{job}")
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
@_job("demo")
def demo(out: Path = typer.Option(Path("demo_out"), help="Output folder."),
         quick: bool = typer.Option(False, "--quick", help="Smoke run: smaller data, fewer steps (same as quick=true)."),
         config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """The main job: synthesize data, ingest it and run every stage end to end on it; ends with a results table."""
    from medvid.pipelines.demo import render

    summary = run_job("demo", config, _kv(out=out, quick=True if quick else None) + (overrides or []))
    typer.echo("\n" + render(summary), err=True)  # the readable table last on the terminal (JSON on stdout)


@app.command()
@_job("ingest")
def ingest(dicom_root: Path = typer.Argument(..., help="Folder tree of DICOM files."),
           out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
           config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Index an echo DICOM export into de-identified cine-loop tables (videos.parquet, errors.jsonl)."""
    run_job("ingest", config, _kv(dicom_root=dicom_root, out=out) + (overrides or []))


@synth_app.command("echo")
@_job("synth_echo")
def synth_echo(out: Path, studies: int = typer.Option(None, help="Number of studies."),
               seed: int = typer.Option(None, help="Random seed."),
               config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Synthetic echo studies as ultrasound machines write them, with reports.csv and labels.csv."""
    run_job("synth_echo", config, _kv(out=out, studies=studies, seed=seed) + (overrides or []))


@synth_app.command("surgery")
@_job("synth_surgery")
def synth_surgery(out: Path, videos: int = typer.Option(None, help="Number of videos."),
                  seed: int = typer.Option(None, help="Random seed."),
                  config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Synthetic Cholec80-layout surgical videos with phase and tool annotations."""
    run_job("synth_surgery", config, _kv(out=out, videos=videos, seed=seed) + (overrides or []))


@synth_app.command("lectures")
@_job("synth_lectures")
def synth_lectures(out: Path, lectures: int = typer.Option(None, help="Number of lectures."),
                   seed: int = typer.Option(None, help="Random seed."),
                   config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Synthetic surgical lectures (slides + operative footage) with transcripts from two ASR sources."""
    run_job("synth_lectures", config, _kv(out=out, lectures=lectures, seed=seed) + (overrides or []))


@app.command()
@_job("transcribe")
def transcribe(path: Path = typer.Argument(..., help="A video, or a folder of videos."),
               config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Offline speech recognition (faster-whisper) writing <name>.whisper.json beside each video."""
    run_job("transcribe", config, _kv(path=path) + (overrides or []))


@lectures_app.command("index")
@_job("lectures_index")
def lectures_index(root: Path, out: Path = typer.Option(..., "--out", "-o"),
                   config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Build clip-text pairs (pairs.jsonl) from lecture videos and their transcripts."""
    run_job("lectures_index", config, _kv(root=root, out=out) + (overrides or []))


@app.command()
@_job("pretrain", None)
def pretrain(config: Path = typer.Argument(..., help="Job config: a YAML path, or a shipped name (echo_pretrain, "
                                                      "surgical_pretrain)."),
             out: Optional[Path] = OutOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Contrastive pretraining (echo video-report or surgical clip-speech); works under torchrun."""
    run_job("pretrain", config, _kv(out=out) + (overrides or []), name=None)


@app.command("train-views")
@_job("train_views", "view_classifier")
def train_views(out: Optional[Path] = OutOpt, config: Optional[Path] = ConfigOpt,
                overrides: Optional[List[str]] = OverridesArg) -> None:
    """Supervised view-classifier training from views.csv."""
    run_job("train_views", config, _kv(out=out) + (overrides or []), name="view_classifier")


@app.command("import")
@_job("import_model")
def import_model(family: str = typer.Argument(..., help="echoprime | echoprime-view | echonet | panecho | "
                                                        "surgvlp | hecvl | peskavlp | echoprime-bank"),
                 src: Path = typer.Argument(..., help="The publisher's checkpoint file (echoprime-bank: the "
                                                      "downloaded EchoPrime folder)."),
                 out: Path = typer.Option(..., "--out", "-o", help="medvid model (or bank) folder to write."),
                 config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Import a published checkpoint (weights-only read) as a medvid model folder usable by every job."""
    run_job("import_model", config, _kv(family=family, src=src, out=out) + (overrides or []))


def _zero_shot(task: str, data_root: Path, model: Path, out: Path, prompts: Optional[Path],
               config: Optional[Path], overrides: Optional[List[str]]) -> None:
    run_job("zero_shot", config,
            _kv(task=task, data_root=data_root, model=model, out=out, prompts=prompts) + (overrides or []))


@zero_shot_app.command("phase")
@_job("zero_shot")
def zero_shot_phase(data_root: Path, model: Path = typer.Option(..., "--model"), out: Path = typer.Option(..., "--out"),
                    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Prompt file (YAML/JSON)."),
                    config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Zero-shot phase recognition on a Cholec80-layout root (or a folder of videos)."""
    _zero_shot("phase", data_root, model, out, prompts, config, overrides)


@zero_shot_app.command("tools")
@_job("zero_shot")
def zero_shot_tools(data_root: Path, model: Path = typer.Option(..., "--model"), out: Path = typer.Option(..., "--out"),
                    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Prompt file (YAML/JSON)."),
                    config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Zero-shot multi-label tool recognition on a Cholec80-layout root."""
    _zero_shot("tools", data_root, model, out, prompts, config, overrides)


@bank_app.command("build")
@_job("bank")
def bank_build(input: Path = typer.Argument(..., help="Ingest folder, or a reports CSV for a text-only bank."),
               model: Path = typer.Option(..., "--model", help="Saved video-text model folder."),
               out: Path = typer.Option(..., "--out", "-o", help="Bank folder to write."),
               config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Build a scrubbed, memory-mapped report bank (section texts + study section embeddings)."""
    run_job("bank", config, _kv(action="build", input=input, model=model, bank=out) + (overrides or []))


@bank_app.command("calibrate")
@_job("bank")
def bank_calibrate(bank: Path = typer.Argument(..., help="Bank folder."),
                   ingest: Path = typer.Option(..., "--ingest", help="Labelled ingest folder (val split)."),
                   config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Fit binary phenotype thresholds (Youden's J) on a labelled split; stored in the bank manifest."""
    run_job("bank", config, _kv(action="calibrate", bank=bank, input=ingest) + (overrides or []))


@pacs_app.command("pull")
@_job("pacs")
def pacs_pull(url: str = typer.Argument(..., help="http(s)://host/dicom-web or dimse://AET@host:port"),
              out: Path = typer.Option(..., "--out", "-o", help="Export folder to write (then: medvid ingest DIR)."),
              config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Pull studies from a PACS into an export folder; resumable, identifiers read from files only."""
    run_job("pacs", config, _kv(action="pull", url=url, out=out) + (overrides or []))


@pacs_app.command("push")
@_job("pacs")
def pacs_push(drafts: Path = typer.Argument(..., help="A medvid draft output folder (drafts.jsonl, reviewed/)."),
              url: str = typer.Argument(..., help="http(s)://host/dicom-web or dimse://AET@host:port"),
              ingest: Path = typer.Option(..., "--ingest", help="The ingest folder the drafts were made from (its "
                                                                "private key folder re-identifies each study)."),
              include_unverified: bool = typer.Option(False, "--include-unverified",
                                                      help="Also send reports nobody signed off, as UNVERIFIED."),
              config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Send signed-off reports to the PACS as SRs under each patient's own study; resending sends nothing twice."""
    run_job("pacs", config, _kv(action="push", url=url, drafts=drafts, ingest=ingest,
                                include_unverified=True if include_unverified else None) + (overrides or []))


@app.command()
@_job("draft")
def draft(input: Path = typer.Argument(..., help="Ingest folder or DICOM folder."),
          model: Path = typer.Option(..., "--model", help="Saved video-text model folder."),
          views: Optional[Path] = typer.Option(None, "--views", help="Saved view classifier folder."),
          bank: Path = typer.Option(..., "--bank", help="Report bank folder."),
          out: Path = typer.Option(..., "--out", "-o", help="Output folder (drafts.jsonl, drafts/, errors.jsonl)."),
          shard: Optional[str] = typer.Option(None, "--shard", help="K/N: draft every N-th study from the K-th."),
          config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Draft reports (text, DICOM SR, phenotypes) for every study; resumable, errors isolated per study."""
    run_job("draft", config, _kv(input=input, model=model, views=views, bank=bank, out=out, shard=shard)
            + (overrides or []))


evaluate_app = typer.Typer(help="Evaluate outputs against ground truth, beside baselines.", no_args_is_help=True,
                           cls=_Group)
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("drafts")
@_job("evaluate")
def evaluate_drafts(drafts: Path = typer.Argument(..., help="Output folder of `medvid draft` (drafts.jsonl)."),
                    ingest: Path = typer.Option(..., "--ingest", help="Ingest folder (labels.csv, reports.csv)."),
                    config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """EF MAE, phenotype AUROCs and section agreement of drafts vs the true reports, with baselines."""
    run_job("evaluate", config, _kv(drafts=drafts, ingest=ingest) + (overrides or []))


@app.command()
@_job("probe")
def probe(task: str = typer.Argument(..., help="echo-ef | echo-phenotypes | phase | tools"),
          model: Path = typer.Option(..., "--model", help="Saved video-text model folder."),
          data: Path = typer.Option(..., "--data", help="EchoNet-Dynamic root or ingest folder (echo); "
                                                        "Cholec80-layout root (phase, tools)."),
          out: Path = typer.Option(..., "--out", "-o", help="Output folder (metrics.json, learning_curve.png)."),
          config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """Downstream transfer of a frozen model: linear probe, few-shot, temporal head / fine-tuning vs zero-shot."""
    run_job("probe", config, _kv(task=task, model=model, data=data, out=out) + (overrides or []))


@app.command("app")
@_job("app")
def review_app(data: List[Path] = typer.Option(..., "--data", help="Output folder to review (repeatable): ingest, "
                                                                   "draft, zero-shot, Cholec80 root, or a folder above."),
               dicom_root: Optional[List[Path]] = typer.Option(None, "--dicom-root",
                                                               help="DICOM folder given to ingest (to show loops)."),
               port: Optional[int] = typer.Option(None, "--port"),
               address: Optional[str] = typer.Option(None, "--address", help="Bind address (default 127.0.0.1)."),
               allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-local bind address."),
               config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg) -> None:
    """The review app (Streamlit): echo studies, drafts and review; surgical zero-shot results."""
    run_job("app", config, _kv(data=[str(p) for p in data], dicom_root=[str(p) for p in dicom_root or []] or None,
                               port=port, address=address, allow_remote=allow_remote or None) + (overrides or []))


if __name__ == "__main__":  # pragma: no cover
    app()
