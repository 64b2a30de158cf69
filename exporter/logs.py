"""Logging: one line per event, text or JSON, with secrets masked.

Secrets are kept out of messages by construction (headers are never logged);
`Redactor` is the second line of defence, for text that comes from elsewhere
(a vendor that echoes the `Authorization` header in its error body, an
exception's text). The same `REDACTOR` masks the log lines and, where they
are stored, the error texts that the status page and its JSON show.

What counts as a secret's trace in a text:
- the value itself and its escaped forms: JSON (`\\"`, `\\u00e9`), Python
  repr and ascii(), URL-encoding (either hex case, `+` or `%20` for a
  space), HTML entities;
- any part of one of those of at least `MIN_PART` characters: a vendor that
  echoes only the first 20 characters of a token, a message cut at 200 bytes
  in the middle of it, one line of a value that spans several.
Secrets shorter than `MIN_SECRET` are not masked: that would garble
unrelated text, and such a value protects nothing anyway.
"""

from __future__ import annotations

import html
import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus

_EXTRA_FIELDS = ("source", "target", "reason")
MASK = "***"
MIN_SECRET = 4
# A shorter run is too likely to occur by chance (a common word, a URL part),
# and reveals too little of a token to matter.
MIN_PART = 8
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def escaped_forms(secret: str) -> set[str]:
    """The secret as it may appear in text: raw and in every escaping a vendor or a library applies."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
        repr(secret.encode("utf-8", "surrogatepass"))[2:-1],
        html.escape(secret),
        html.escape(secret, quote=False),
    }
    for encoded in (quote(secret, safe=""), quote(secret), quote_plus(secret, safe="")):
        forms.add(encoded)
        forms.add(_PERCENT.sub(lambda m: m.group().lower(), encoded))
    return {form for form in forms if len(form) >= MIN_SECRET}


class _Index:
    """Every `MIN_PART`-long slice of every form, for a one-pass scan of a text.
    Immutable: `Redactor.add` builds a new one, so readers never lock."""

    def __init__(self, secrets: frozenset[str]) -> None:
        self.forms: list[str] = sorted({form for secret in secrets for form in escaped_forms(secret)})
        self.short = [form for form in self.forms if len(form) < MIN_PART]
        self.slices: dict[str, list[tuple[int, int]]] = {}
        for number, form in enumerate(self.forms):
            for offset in range(len(form) - MIN_PART + 1):
                self.slices.setdefault(form[offset:offset + MIN_PART], []).append((number, offset))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every run of `text` that is a slice of a form, each as long as it goes."""
        found: list[tuple[int, int]] = []
        for start in range(len(text) - MIN_PART + 1):
            hits = self.slices.get(text[start:start + MIN_PART])
            if hits is None:
                continue
            end = start + MIN_PART
            for number, offset in hits:
                form, here, there = self.forms[number], start + MIN_PART, offset + MIN_PART
                while here < len(text) and there < len(form) and text[here] == form[there]:
                    here, there = here + 1, there + 1
                end = max(end, here)
            found.append((start, end))
        return found

    def redact(self, text: str) -> str:
        merged: list[list[int]] = []  # overlapping and touching runs become one mask
        for start, end in self.spans(text):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        pieces: list[str] = []
        done = 0
        for start, end in merged:
            pieces += [text[done:start], MASK]
            done = end
        pieces.append(text[done:])
        masked = "".join(pieces)
        for form in self.short:
            masked = masked.replace(form, MASK)
        return masked


class Redactor(logging.Filter):
    """Masks every registered secret; a logging filter and, through `redact`, a function for stored text."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._index = _Index(self._secrets)
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if len(secret) < MIN_SECRET:
            return
        with self._lock:
            if secret not in self._secrets:
                self._secrets = self._secrets | {secret}
                self._index = _Index(self._secrets)

    def redact(self, text: str) -> str:
        """`text` with every trace of a registered secret replaced by `***`."""
        index = self._index
        return index.redact(text) if index.forms else text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._index.forms:
            return True
        message = record.getMessage()
        masked = self.redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # The formatters use exc_text when it is set: the traceback's text is masked too.
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True


REDACTOR = Redactor()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _EXTRA_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # One event, one line: a traceback or a vendor message with newlines
        # is folded so log shippers do not split it.
        return text.replace("\n", "\\n")


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(REDACTOR)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO; our own lines say what matters.
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
