"""The `[otlp]` config section: whether, where and how polled points are pushed over OTLP.

Every transport key defaults to "unset" (None), not to a value: an unset key
falls back to the standard `OTEL_EXPORTER_OTLP_*` variables and only then to
the OTLP default (see `exporter.sinks.otlp_transport.resolve`). Keys here win.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from exporter.config.types import Duration, StrictModel, read_secret_file

Protocol = Literal["grpc", "http/protobuf"]


class OtlpConfig(StrictModel):
    enabled: bool = False
    # grpc: `http://host:4317` (plaintext), `https://host:4317` or `host:4317`;
    # http/protobuf: a base URL (`/v1/metrics` is appended) or the full URL.
    endpoint: str | None = None
    protocol: Protocol | None = None
    # Header (gRPC metadata) values are secrets: `name_file = "/path"` reads
    # header `name` from a file.
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    compression: Literal["gzip", "none"] | None = None
    timeout: Duration | None = None
    insecure: bool | None = None
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    max_queue_points: int = Field(default=100_000, ge=1)
    max_batch_points: int = Field(default=1000, ge=1)
    backoff: Duration = 1.0
    max_backoff: Duration = 60.0
    shutdown_grace: Duration = 10.0

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
