"""Reading vendor bodies: errors name the field, and half UTF-16 pairs are cleaned in both decoding paths."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter
from typing_extensions import TypedDict

from exporter.errors import InvalidResponse
from exporter.sources.kit.payloads import decode_json, read_body


class _Item(TypedDict):
    name: str
    value: float


ITEMS = TypeAdapter(TypedDict("Items", {"items": list[_Item]}))


@pytest.mark.parametrize(("body", "expected"), [
    (rb'{"a": "x\ud800"}', {"a": "x\ufffd"}),                # lone high half
    (rb'{"a": "\udc00y"}', {"a": "\ufffdy"}),                # lone low half
    (rb'{"k\ud800": ["\ud800", 1]}', {"k\ufffd": ["\ufffd", 1]}),
    (rb'{"a": "\ud83d\ude00"}', {"a": "\U0001F600"}),       # a whole pair is a character
    (rb'{"a": "\\ud800"}', {"a": "\\ud800"}),                # an escaped backslash, not an escape
])
def test_decode_json_replaces_only_lone_halves(body: bytes, expected: object) -> None:
    assert decode_json(body) == expected


def test_read_body_cleans_lone_halves_too() -> None:
    body = rb'{"items": [{"name": "a\ud800", "value": 1}, {"name": "b", "value": "2.5"}]}'
    assert read_body(ITEMS, body, "items") == {"items": [{"name": "a\ufffd", "value": 1.0},
                                                         {"name": "b", "value": 2.5}]}


@pytest.mark.parametrize(("body", "message"), [
    (b'{"items": [{"name": "a"}]}', "items: items.0.value: Field required"),
    (b'{"items": [', "items: body is not JSON"),
    (rb'{"items": ["\ud800', "items: body is not JSON"),
    (rb'{"items": [{"name": "\ud800", "value": "x"}]}', "items: items.0.value: Input should be a valid number"),
])
def test_read_body_errors_name_the_field(body: bytes, message: str) -> None:
    with pytest.raises(InvalidResponse) as info:
        read_body(ITEMS, body, "items")
    assert str(info.value).startswith(message)
