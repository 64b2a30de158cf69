"""The `[otlp]` config section: whether, where and how polled points are pushed over OTLP.

Every transport key defaults to "unset" (None), not to a value: an unset key
falls back to the standard `OTEL_EXPORTER_OTLP_*` variables and only then to
the OTLP default (see `exporter.sinks.otlp_transport.resolve`). Keys here win.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from exporter.config.types import Duration, FieldError, StrictModel, check_secret, read_secret_file

Protocol = Literal["grpc", "http/protobuf"]
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token


class OtlpConfig(StrictModel):
    """`[otlp]`: push every new polled point to an OpenTelemetry collector (docs/otlp.md).
    Unset transport keys fall back to the OTEL_EXPORTER_OTLP_* variables."""

    enabled: bool = Field(default=False, description="push over OTLP")
    endpoint: str | None = Field(
        default=None, examples=["http://otel-collector:4317"],
        description="grpc: http://host:4317 (plaintext), https://host:4317 or host:4317; http/protobuf: a base URL "
                    "(/v1/metrics is appended) or the full URL")
    protocol: Protocol | None = Field(default=None, description="default: http/protobuf")
    # Header (gRPC metadata) values are secrets: `name_file = "/path"` reads
    # header `name` from a file.
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, json_schema_extra={
            "patternProperties": {"_file$": {"type": "string", "description": "a file holding the header's value"}},
            "additionalProperties": {"type": "string", "pattern": "^[ -~]+$"}},
        description="headers (gRPC metadata) on every request; `<name>_file` reads header <name> from a file. "
                    "Values are secrets: printable ASCII, never logged")
    compression: Literal["gzip", "none"] | None = Field(default=None, description="default: none")
    timeout: Duration | None = Field(default=None, description="deadline of one export attempt; default: 10s")
    insecure: bool | None = Field(default=None, description="grpc only: true sends plaintext; default: from the "
                                                            "endpoint's scheme")
    ca_file: FilePath | None = Field(default=None, description="CA to trust")
    cert_file: FilePath | None = Field(default=None, description="client certificate (mTLS), with key_file")
    key_file: FilePath | None = Field(default=None, description="client key (mTLS), with cert_file")
    resource_attributes: dict[str, str] = Field(default_factory=dict, description="resource attributes, over "
                                                "OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME")
    max_queue_points: int = Field(default=100_000, ge=1, description="points held while the collector is slow or "
                                                                     "down; when full the oldest are dropped")
    max_batch_points: int = Field(default=1000, ge=1, description="points per export request")
    backoff: Duration = Field(default=1.0, description="first wait before retrying a failed export")
    max_backoff: Duration = Field(default=60.0, description="longest wait between export retries")
    shutdown_grace: Duration = Field(default=10.0, description="how long queued points are flushed at shutdown")

    @field_validator("headers", mode="before")
    @classmethod
    def _header_files(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        headers = {str(k): v for k, v in value.items() if not str(k).endswith("_file")}
        for key, path in value.items():
            key = str(key)
            if not key.endswith("_file"):
                continue
            name = key.removesuffix("_file")
            if name in headers:
                raise ValueError(f"give either {name} or {key}, not both")
            headers[name] = read_secret_file(key, path)
        return headers

    @field_validator("headers")
    @classmethod
    def _sendable(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """Header values are secrets sent as they are: printable ASCII, one
        line (checked here, so that `check` and a reload refuse them)."""
        for name, value in headers.items():
            if not HEADER_NAME.fullmatch(name):
                raise FieldError(name, "not a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
            check_secret(name, value.get_secret_value())
        return headers

    @model_validator(mode="after")
    def _consistent(self) -> OtlpConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate and its key)")
        if self.max_backoff < self.backoff:
            raise ValueError("max_backoff must not be below backoff")
        if self.endpoint is not None and self.protocol == "http/protobuf" and \
                not self.endpoint.startswith(("http://", "https://")):
            raise ValueError("endpoint: http/protobuf needs an http:// or https:// URL")
        return self
