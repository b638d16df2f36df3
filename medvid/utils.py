"""Small shared helpers: atomic writes, JSON lines, pseudonyms, seeding, logging and progress."""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import random
import shutil
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

log = logging.getLogger("medvid")


@contextmanager
def atomic_path(path: str | os.PathLike, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.
    ``private``: the file is readable by its owner only (0600), for key material."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give outputs the usual umask-based mode
            os.chmod(tmp_path, 0o600 if private else 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(directory: str | os.PathLike, is_own: Callable[[Path], bool], what: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``directory``; if the block succeeds, swap it into place by renames
    (a reader never sees a half-written folder). An existing ``directory`` is replaced only when it is
    empty or ``is_own(directory)`` proves it is an earlier output of the same kind (``what`` names it in
    the refusal): anything else may hold someone's data and is refused untouched."""
    from medvid.errors import MedvidError

    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir()) and not is_own(directory))):
        raise MedvidError(f"refusing to overwrite {directory}: it exists and is not {what}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; outputs get the usual mode
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old)
        else:
            tmp.rename(directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str, private: bool = False) -> None:
    with atomic_path(path, private) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]], private: bool = False) -> int:
    """Write rows as JSON lines atomically (``private``: mode 0600); returns the row count."""
    n = 0
    with atomic_path(path, private) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=_json_default) + "\n")
            n += 1
    return n


def private_dir(path: str | os.PathLike) -> Path:
    """Create (or tighten) a folder for key material: mode 0700, owner only."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def open_private(path: str | os.PathLike, mode: str = "a"):
    """Open a text file for writing (``a`` or ``w``) that only its owner can read (0600, also if it existed)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode, encoding="utf-8")


def resolve_under(root: str | os.PathLike, rel: str | os.PathLike,
                  within: Sequence[str | os.PathLike] | None = None) -> Path:
    """``root / rel`` for a path read from a table or a request, resolved (symlinks followed) and refused
    (``PathRefused``) unless it stays inside ``within`` (default: ``root``): no absolute path, no ``..``, no
    symlink out. Messages never repeat the path: source paths can name patients."""
    from medvid.errors import PathRefused

    rel_path = Path(rel)
    if rel_path.is_absolute() or re.match(r"^([A-Za-z]:|[/\\])", str(rel)) or not str(rel).strip():
        raise PathRefused("refusing path: not a plain path relative to the data root")
    if ".." in rel_path.parts:
        raise PathRefused("refusing path: '..' is not allowed")
    target = (Path(root) / rel_path).resolve()
    if not any(target.is_relative_to(Path(r).resolve()) for r in (within or [root])):
        raise PathRefused("refusing path: it leads outside the data root (a symlink out of it?)")
    return target


def relative_message(message: object, root: str | os.PathLike) -> str:
    """``str(message)`` with every path under ``root`` written relative to it (for logs and error files:
    no absolute paths of the data, which can name patients, hosts or users)."""
    text = str(message)
    for prefix in sorted({str(Path(root).resolve()), os.path.abspath(root), str(root)}, key=len, reverse=True):
        text = text.replace(prefix.rstrip(os.sep) + os.sep, "")
    return text


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of a JSON-lines file; a line that is not JSON is a
    MedvidError naming the file and line."""
    from medvid.errors import MedvidError

    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise MedvidError(f"{path}:{number}: not a JSON line ({exc.msg})") from exc


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [row for _, row in iter_jsonl(path)]


def jsonable(o: Any) -> Any:
    """Plain JSON values for a metrics file: NumPy scalars/arrays unwrapped, tuples as lists, and an undefined
    metric (NaN, ±inf) as null."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")  # pseudonymous keys and zero-shot video names


def valid_key(key: Any) -> bool:
    """True for a plausible pseudonymous key / video name (letters, digits, ``_``, ``-``; no path characters)."""
    return isinstance(key, str) and bool(_KEY.match(key))


def pseudonym(value: str, salt: str, prefix: str = "", length: int = 16) -> str:
    """Stable keyed pseudonym (HMAC-SHA256) for an identifier; irreversible without the salt."""
    digest = hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()[:length]
    return f"{prefix}{digest}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (if imported) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def setup_logging(level: str = "INFO") -> None:
    """Configure medvid's logger on stderr (stdout carries data: a job's JSON summary). Rich output on a
    terminal; plain, unwrapped lines when stderr is piped, and no repainting bars (``progress``). Log messages
    must never carry patient identifiers: callers log pseudonyms and relative paths only."""
    import sys

    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(levelname)s %(name)s: %(message)s"
        # transformers' own bars (loading weights) repaint too: off, unless the user set it (read at import)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A progress bar on stderr (tqdm, all its arguments): the one place jobs make bars, so one rule holds.
    On a terminal it repaints; when stderr is redirected (a log file, a pipe) it writes plain log lines instead
    (``INFO medvid: draft: 40/120 study [...]``: at the start, at most every 30 s, at the end), never
    carriage-return repaints. ``enabled=False`` shows nothing."""
    import sys

    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    return _LoggedProgress(iterable, **kwargs)


class _LoggedProgress(tqdm):
    """tqdm that logs its state as one line (tqdm's documented ``display`` override) instead of painting a bar:
    the first state, then at most one line per ``interval`` seconds (``set_postfix`` and tqdm's monitor thread
    refresh more often), and the final state on close."""

    interval = 30.0

    def __init__(self, iterable: Iterable | None = None, **kwargs: Any) -> None:
        self._logged_at: float | None = None  # before tqdm's __init__, which displays the first state
        self._logged_n = -1
        kwargs.update(file=io.StringIO(), dynamic_ncols=False, mininterval=self.interval, maxinterval=self.interval,
                      bar_format="{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        super().__init__(iterable, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        now = time.monotonic()
        if msg != "" and (self._logged_at is None or now - self._logged_at >= self.interval):
            self._logged_at, self._logged_n = now, self.n
            log.info("%s", msg or str(self))
        return True

    def close(self) -> None:
        if not self.disable and self.n != self._logged_n:
            self._logged_at = None  # the final state is always logged
        super().close()
