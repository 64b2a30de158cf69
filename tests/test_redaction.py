"""The redactor (exporter/logs.py): every escaped and partial form of a secret, in text and in log records."""

from __future__ import annotations

import html
import io
import json
import logging
from urllib.parse import quote, quote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.logs import MASK, MIN_PART, JsonFormatter, Redactor, TextFormatter

SECRET = 'sk_live/"Aa+b=c\\d&e<f>-9XkQ2mW7pL4tR8vZ'


def forms(secret: str) -> list[str]:
    """How a secret may reach a text, written here independently of the redactor's list."""
    return [secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=True)[1:-1], repr(secret)[1:-1],
            quote(secret, safe=""), quote(secret, safe="").replace("%2F", "%2f"), quote_plus(secret),
            html.escape(secret)]


def redactor(*secrets: str) -> Redactor:
    r = Redactor()
    for secret in secrets:
        r.add(secret)
    return r


def traces(text: str, secret: str) -> list[str]:
    return [form[i:i + MIN_PART] for form in forms(secret) for i in range(len(form) - MIN_PART + 1)
            if form[i:i + MIN_PART] in text]


def test_every_escaped_form_is_masked_in_context() -> None:
    r = redactor(SECRET)
    for form in forms(SECRET):
        text = f"HTTP 401: header was 'Bearer {form}' (rejected)"
        masked = r.redact(text)
        assert masked == "HTTP 401: header was 'Bearer ***' (rejected)", form


def test_a_secret_cut_at_any_length_from_the_minimum_is_masked() -> None:
    r = redactor(SECRET)
    for form in forms(SECRET):
        for length in range(MIN_PART, len(form) + 1):
            for cut in (form[:length], form[-length:], form[3:3 + length]):
                if len(cut) < MIN_PART:
                    continue
                masked = r.redact(f"echo: {cut}…")
                assert not traces(masked, SECRET), (form, cut, masked)
                assert masked.startswith("echo: ") and MASK in masked


def test_escapes_in_any_case_and_cut_mid_escape() -> None:
    r = redactor(SECRET)
    encoded = quote(SECRET, safe="")
    mixed = "".join(c.lower() if i % 2 else c for i, c in enumerate(encoded))  # %2f, %3D, %22...
    assert r.redact(f"auth={mixed}") == f"auth={MASK}"
    slash = encoded.index("%2F")
    assert not traces(r.redact("x" + encoded[slash + 1:slash + 12].lower()), SECRET)


def test_unrelated_text_is_left_alone() -> None:
    r = redactor(SECRET, "tiny")
    text = "GET /v25.0/3456789012345678: HTTP 400 (a 7-character prefix is too short to mask: sk_live)"
    assert r.redact(text) == text
    assert r.redact("the tiny word") == f"the {MASK} word"  # short secrets: only whole
    assert redactor("abc").redact("abc") == "abc"  # too short to mask at all


def test_several_secrets_and_repeats() -> None:
    other = "ghp_0A1b2C3d4E5f6G7h8I9j"
    r = redactor(SECRET, other)
    masked = r.redact(f"{SECRET} and {other[:12]}, again {SECRET}{other}")
    assert masked == f"{MASK} and {MASK}, again {MASK}"


@settings(max_examples=500, deadline=None)
@given(secret=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=MIN_PART, max_size=60),
       start=st.integers(0, 60), length=st.integers(MIN_PART, 60), form=st.integers(0, 7),
       before=st.text(max_size=20), after=st.text(max_size=20))
def test_no_part_of_any_form_survives(secret: str, start: int, length: int, form: int, before: str,
                                      after: str) -> None:
    shown = forms(secret)[form]
    cut = shown[start:start + length]
    if len(cut) < MIN_PART:
        cut = shown[:length]
    masked = redactor(secret).redact(before + cut + after)
    assert cut not in masked
    assert MASK in masked


def capture(formatter: logging.Formatter, r: Redactor) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(r)
    logger = logging.getLogger(f"test-redaction-{id(formatter)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger, stream


def test_log_records_messages_and_tracebacks_are_masked() -> None:
    r = redactor(SECRET)
    for formatter in (TextFormatter(), JsonFormatter()):
        logger, stream = capture(formatter, r)
        logger.warning("vendor said %s", json.dumps({"auth": f"Bearer {SECRET}"}))
        try:
            raise ValueError(f"bad header {quote(SECRET)}")
        except ValueError:
            logger.exception("poll crashed: %s", SECRET[:20])
        text = stream.getvalue()
        assert "vendor said" in text and "ValueError: bad header" in text and "poll crashed" in text
        assert not traces(text, SECRET), text
        # A JSON line stays valid JSON.
        if isinstance(formatter, JsonFormatter):
            for line in text.splitlines():
                json.loads(line)
