"""Logging: one line per event, text or JSON, with secrets masked.

Secrets are kept out of messages by construction (headers are never logged);
`Redactor` is the second line of defence, for text that comes from elsewhere
(a vendor that echoes the `Authorization` header in its error body, an
exception's text). The same `REDACTOR` masks the log lines and, where they
are stored, the error texts that the status page and its JSON show.

What counts as a secret's trace in a text:
- the value itself and its escaped forms: JSON (`\\"`, `\\u00e9`), Python
  repr and ascii(), URL-encoding (`+` or `%20` for a space), HTML entities,
  compared regardless of ASCII case (hex escapes come as `%2f` or `%2F`);
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
# Texts and forms are compared regardless of ASCII case: hex escapes come in
# either case (`%2f`, `%2F`, `\u00E9`), even mixed, and a slice may start in
# the middle of one. One character for one keeps every position in place.
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _canonical(text: str) -> str:
    return text.translate(_ASCII_UPPER)


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
    forms.update((quote(secret, safe=""), quote(secret), quote_plus(secret, safe="")))
    return {form for form in forms if len(form) >= MIN_SECRET}


class _Index:
    """Every `MIN_PART`-long slice of every form, for a one-pass scan of a text.

    Grown by `add` (under the redactor's lock) while other threads scan it
    without one: a form is appended before any slice points at it, and a
    slice's list is replaced, never changed in place, so a reader sees each
    secret wholly or not at all. Each secret costs only its own slices, so
    thousands of sources start in linear time."""

    def __init__(self) -> None:
        self.forms: list[str] = []
        self.known: set[str] = set()
        self.short: tuple[str, ...] = ()
        self.slices: dict[str, tuple[tuple[int, int], ...]] = {}

    def add(self, secret: str) -> None:
        for form in sorted({_canonical(form) for form in escaped_forms(secret)} - self.known):
            number = len(self.forms)
            self.forms.append(form)
            self.known.add(form)
            if len(form) < MIN_PART:
                self.short = (*self.short, form)
                continue
            for offset in range(len(form) - MIN_PART + 1):
                key = form[offset:offset + MIN_PART]
                self.slices[key] = (*self.slices.get(key, ()), (number, offset))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every run of `text` that is a slice of a form, each as long as it goes."""
        text = _canonical(text)
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
        for form in self.short:  # too short for slices: only whole
            start = text.find(form)
            while start >= 0:
                found.append((start, start + len(form)))
                start = text.find(form, start + 1)
        return sorted(found)

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
        return "".join(pieces)


class Redactor(logging.Filter):
    """Masks every registered secret; a logging filter and, through `redact`, a function for stored text."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._index = _Index()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if len(secret) < MIN_SECRET:
            return
        with self._lock:
            if secret not in self._secrets:
                self._secrets.add(secret)
                self._index.add(secret)

    def reset(self) -> None:
        """Forget every secret (for tests that build many apps in one process)."""
        with self._lock:
            self._secrets = set()
            self._index = _Index()

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
