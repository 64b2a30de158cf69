"""Ledger state files under `[state] dir`: one JSON file per (source, target), replaced atomically.

Files are JSON: ``{"format": "api-metrics-exporter/ledger", "version": 1,
"source": ..., "target": ..., "ledger": {...}}`` (`PeriodLedger.to_dict`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from exporter.ledger.period import LedgerStateError, PeriodLedger

__all__ = ["LEDGER_FILE_FORMAT", "LEDGER_FILE_VERSION", "LedgerStateStore", "quarantine", "state_path",
           "write_atomically"]

log = logging.getLogger("exporter.ledger")

LEDGER_FILE_FORMAT = "api-metrics-exporter/ledger"
LEDGER_FILE_VERSION = 1

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# The temporary files `save` writes: `.<state file name>.<random>.tmp`.
_TEMPORARY = re.compile(r"\..*-[0-9a-f]{16}\.ledger\.json\.[^/]+\.tmp")


class LedgerStateStore:
    """Saves/loads one ledger per (source name, target id) under a state dir.

    Files are JSON: ``{"format": "api-metrics-exporter/ledger", "version": 1,
    "source": ..., "target": ..., "ledger": {...}}``. The source and target are
    stored inside so a file that was copied or hash-collided into the wrong
    place is detected instead of silently merged into another target's counters.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def remove_temporaries(self) -> int:
        """Delete the temporary files a save killed mid-write left behind
        (ours only, by their name); how many. At start no save of this
        process runs, and the state dir is one process's own."""
        removed = 0
        try:
            names = [entry.name for entry in os.scandir(self.directory)]
        except OSError:
            return 0  # missing (created on the first save) or unreadable (the save will say)
        for name in names:
            if _TEMPORARY.fullmatch(name):
                try:
                    os.unlink(self.directory / name)
                    removed += 1
                except OSError as exc:
                    log.warning("cannot remove the stale temporary file %s: %s", self.directory / name, exc)
        if removed:
            log.info("removed %d temporary file(s) left in %s by an interrupted save", removed, self.directory)
        return removed

    def path_for(self, source: str, target: str) -> Path:
        """State file path for one (source, target); stable across runs.

        The readable prefix is for humans; the sha256 of the exact pair is what
        keeps two targets that sanitise to the same prefix apart.
        """
        return state_path(self.directory, source, target, ".ledger.json")

    def save(self, source: str, target: str, ledger: PeriodLedger) -> None:
        """Atomically replace the state file for (source, target).

        Raises OSError (after removing its temp file) when the write fails;
        the previous state file, if any, is then untouched.
        """
        document = {
            "format": LEDGER_FILE_FORMAT,
            "version": LEDGER_FILE_VERSION,
            "source": source,
            "target": target,
            "ledger": ledger.to_dict(),
        }
        # allow_nan=False: the ledger never holds NaN/inf, and if it ever did
        # we want a loud failure rather than a file that other tools reject.
        payload = json.dumps(document, allow_nan=False, ensure_ascii=False, indent=1).encode("utf-8")
        write_atomically(self.directory, self.path_for(source, target), payload)

    def load(self, source: str, target: str) -> PeriodLedger | None:
        """The saved ledger, or None when there is none usable.

        A corrupt or foreign file is logged (one ERROR line) and moved aside
        to ``<name>.corrupt-<UTC timestamp>`` so the caller can start fresh
        without destroying evidence. An unreadable file or directory is logged
        and yields None; it is left in place.
        """
        path = self.path_for(source, target)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error(
                "cannot read ledger state file %s (%s); starting a fresh ledger "
                "for source %r target %r",
                path,
                exc,
                source,
                target,
            )
            return None

        try:
            ledger = self._decode(data, source, target)
        except LedgerStateError as exc:
            quarantine(path, str(exc), "ledger state file")
            return None
        return ledger

    @staticmethod
    def _decode(data: bytes, source: str, target: str) -> PeriodLedger:
        try:
            document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise LedgerStateError(f"not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise LedgerStateError("top level is not a JSON object")
        if document.get("format") != LEDGER_FILE_FORMAT:
            raise LedgerStateError(
                f"format is {document.get('format')!r}, expected {LEDGER_FILE_FORMAT!r}"
            )
        version = document.get("version")
        if version != LEDGER_FILE_VERSION or isinstance(version, bool):
            raise LedgerStateError(f"version is {version!r}, expected {LEDGER_FILE_VERSION}")
        if document.get("source") != source or document.get("target") != target:
            raise LedgerStateError(
                f"file belongs to source {document.get('source')!r} target "
                f"{document.get('target')!r}, not source {source!r} target {target!r}"
            )
        if "ledger" not in document:
            raise LedgerStateError("missing 'ledger'")
        return PeriodLedger.from_dict(document["ledger"])


def _reject_constant(name: str) -> float:
    # json accepts NaN/Infinity by default; a state file holding them was not
    # written by us (save uses allow_nan=False).
    raise ValueError(f"non-standard JSON constant {name}")


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        # Some platforms (Windows) cannot open a directory; the rename is
        # still atomic there, just not guaranteed durable.
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- shared by every state file under [state] dir (the ledger's and the OTLP sink's) ---------------


def state_path(directory: Path, source: str, target: str, suffix: str) -> Path:
    """State file path for one (source, target); stable across runs.

    The readable prefix is for humans; the sha256 of the exact pair is what
    keeps two targets that sanitise to the same prefix apart.
    """
    digest = hashlib.sha256(json.dumps([source, target], ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    readable = _UNSAFE.sub("_", f"{source}__{target}").strip("._")[:80] or "ledger"
    return directory / f"{readable}-{digest}{suffix}"


def write_atomically(directory: Path, path: Path, payload: bytes) -> None:
    """Replace `path` with `payload` through a temp file in `directory`, fsynced.

    Raises OSError (after removing its temp file) when the write fails; the
    previous file, if any, is then untouched.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    # Without a directory fsync the rename itself may be lost on power
    # failure, leaving the old state (or none) behind.
    _fsync_directory(directory)


def quarantine(path: Path, problem: str, what: str = "state file") -> None:
    """Move an unusable state file aside to `<name>.corrupt-<UTC timestamp>`
    (one ERROR line), so the caller starts fresh without destroying evidence."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    suffix = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{suffix}")
        suffix += 1
    try:
        os.rename(path, aside)
    except OSError as exc:
        log.error("%s %s is unusable (%s) and could not be moved aside (%s); starting afresh", what, path, problem, exc)
        return
    log.error("%s %s is unusable (%s); moved it to %s and starting afresh", what, path, problem, aside)
