"""The built-in simulator never receives a credential: a source that sets one
(or a base_url) goes to its vendor even with `[simulator] enabled = true`.

Over real sockets: an embedded simulator as `run` starts it, and a second
simulator standing in for the vendors' real APIs (which cannot be reached
from here: their default URLs are pointed at it, the one thing mocked). Every
request each one received is read from its in-process record, which keeps the
Authorization header as sent (`/_sim/requests` redacts foreign ones).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.app import App
from exporter.app.settings import load_settings
from exporter.simulator import SIMULATOR_TOKEN, Simulator
from exporter.sources import REGISTRY
from tests.conftest import FROZEN_NOW, write_config


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    with Simulator("127.0.0.1:0", seed=5, freeze_time=FROZEN_NOW) as sim:
        for cls in REGISTRY.values():
            monkeypatch.setattr(cls, "default_base_url", sim.base_url(cls.simulator_prefix))
        yield sim


def source_entry(source_type: str, name: str, extra: str = "") -> str:
    model = REGISTRY[source_type].config_model
    keys = "\n".join(f"{key} = {json.dumps(value)}" for key, value in model.sample.items())
    return f'[[sources]]\ntype = "{source_type}"\nname = "{name}"\n{keys}\n{extra}\nhttp = {{ retries = 0 }}\n'


def test_the_simulator_never_receives_a_credential(simulator: Simulator, vendor: Simulator, tmp_path: Path) -> None:
    text = "[simulator]\nenabled = true\n"
    credentials = {}
    for source_type, cls in REGISTRY.items():
        model = cls.config_model
        (secret,) = model.secret_fields
        credentials[source_type] = f"real-{source_type}-credential"
        text += source_entry(source_type, f"{source_type}-demo")  # neither: the simulator serves it
        text += source_entry(source_type, f"{source_type}-prod", f'{secret} = "{credentials[source_type]}"')
    secret_file = tmp_path / "k6-secret"
    secret_file.write_text("real-credential-from-a-file\n")
    text += source_entry("k6_cloud", "k6-file", f'token_file = "{secret_file}"')
    settings = load_settings(write_config(tmp_path, text), environ={
        "APIMETRICS_SOURCES__PLUTO_DEMO__API_KEY": "real-credential-from-the-environment"})
    assert settings.endpoint(settings.sources[0]) == "simulator"

    app = App(settings, simulator_url=simulator.url)

    async def poll() -> None:
        app.build()
        try:
            await app.poll_all()
        finally:
            for source in app.sources:
                await source.aclose()

    asyncio.run(poll())
    sent_to_simulator = [r.headers.get("authorization") for r in simulator.requests]
    assert sent_to_simulator, "the sources without a credential were polled"
    assert all(auth is not None and auth.endswith(f" {SIMULATOR_TOKEN}") for auth in sent_to_simulator)
    # Every credential reached the vendor, and only the vendor.
    sent_to_vendor = {r.headers.get("authorization") for r in vendor.requests}
    for source_type, credential in credentials.items():
        scheme = REGISTRY[source_type].auth_scheme
        assert f"{scheme} {credential}" in sent_to_vendor, source_type
    assert "Token real-credential-from-a-file" in sent_to_vendor
    assert "Bearer real-credential-from-the-environment" in sent_to_vendor
    assert not any("real" in (auth or "") for auth in sent_to_simulator)
