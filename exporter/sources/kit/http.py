"""One `httpx.AsyncClient` per source, with the retry rules every source shares.

- connect/read timeouts from `HttpConfig`;
- bounded retries with exponential backoff and full jitter on connection
  errors, timeouts and 5xx;
- `Retry-After` honoured on 429 and 503 (capped by `max_retry_after`; a longer
  wait fails the poll as `rate_limited` instead of sleeping past the interval);
- no retry on other 4xx;
- a cap on response size, enforced while streaming;
- `User-Agent: api-metrics-exporter/<version>`.

The credential lives only in the client's default headers; URLs, log lines and
error messages never contain it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from exporter import __version__
from exporter.config.source import HttpConfig
from exporter.errors import InvalidResponse, PollError, UpstreamHTTPError, reason_for_status
from exporter.retry import full_jitter, parse_retry_after
from exporter.sources.kit.payloads import decode_json
from exporter.sources.kit.ratelimit import RateBudget

log = logging.getLogger(__name__)

USER_AGENT = f"api-metrics-exporter/{__version__}"

Params = Mapping[str, Any] | list[tuple[str, Any]] | None
# Called with every error response before the default mapping; a source returns
# a PollError of its own (e.g. a vendor's "retired" or "insufficient data") or None.
ErrorClassifier = Callable[[int, bytes, str], PollError | None]
Sent = tuple[int, httpx.Headers, bytes]


class HttpClient:
    """GET/POST JSON with retries. `transport` is the test seam, as in httpx."""

    def __init__(
        self,
        *,
        base_url: str,
        config: HttpConfig,
        headers: Mapping[str, str] | None = None,
        source: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
        on_retry: Callable[[str], None] | None = None,
        budget: RateBudget | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self._on_retry = on_retry
        # Every attempt (retries included) takes a token of the budget, shared
        # by every client on the same key and server; a 429 holds it for all.
        self.budget = budget
        # Requests sent so far, retries included (a backfill's ETA: what is left, through the budget).
        self.attempts = 0
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
            transport=transport,
            follow_redirects=False,
        )

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    async def get_json(
        self, path: str, *, params: Params = None, classify: ErrorClassifier | None = None
    ) -> Any:
        return await self.request_json("GET", path, params=params, classify=classify)

    async def post_json(
        self, path: str, body: Any, *, params: Params = None, classify: ErrorClassifier | None = None
    ) -> Any:
        return await self.request_json("POST", path, params=params, json_body=body, classify=classify)

    async def get(
        self, path: str, *, params: Params = None, classify: ErrorClassifier | None = None
    ) -> bytes:
        """The raw body, for sources that decode and validate in one pass (payloads.read_body)."""
        return await self.request("GET", path, params=params, classify=classify)

    async def post(
        self, path: str, body: Any, *, params: Params = None, classify: ErrorClassifier | None = None
    ) -> bytes:
        """POST a JSON body; the raw answer, as `get`."""
        return await self.request("POST", path, params=params, json_body=body, classify=classify)

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        json_body: Any = None,
        classify: ErrorClassifier | None = None,
    ) -> Any:
        """Send with retries and return the decoded JSON body."""
        body = await self.request(method, path, params=params, json_body=json_body, classify=classify)
        try:
            return decode_json(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidResponse(f"{method} {path}: body is not JSON ({exc})") from None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        json_body: Any = None,
        classify: ErrorClassifier | None = None,
    ) -> bytes:
        attempts = self.config.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                status, headers, body = await self._attempt(method, path, params, json_body)
            except httpx.TimeoutException as exc:
                error: PollError = PollError("timeout", f"{method} {path}: timed out ({type(exc).__name__})")
                delay = None if last else self._backoff(attempt)
            except httpx.TransportError as exc:
                error = PollError("connection", f"{method} {path}: {type(exc).__name__}: {exc}")
                delay = None if last else self._backoff(attempt)
            else:
                if 200 <= status < 300:
                    return body
                error = self._status_error(method, path, status, headers, body, classify)
                delay = None if last else self._retry_delay(attempt, error)
            if delay is None:
                raise error
            log.debug("retrying %s %s in %.2fs after %s", method, path, delay, error.reason,
                      extra={"source": self.source})
            if self._on_retry is not None:
                self._on_retry(error.reason)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, method: str, path: str, params: Params, json_body: Any) -> Sent:
        self.attempts += 1
        if self.budget is None:
            return await self._send_once(method, path, params, json_body)
        async with self.budget.slot():
            sent = await self._send_once(method, path, params, json_body)
        if sent[0] == 429:
            wait = parse_retry_after(sent[1].get("Retry-After"))
            self.budget.hold(wait if wait is not None else self.budget.per)
        return sent

    async def _send_once(
        self, method: str, path: str, params: Params, json_body: Any
    ) -> tuple[int, httpx.Headers, bytes]:
        request = self._client.build_request(method, path, params=params, json=json_body)
        response = await self._client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.config.max_response_bytes:
                    raise PollError(
                        "response_too_large",
                        f"{method} {path}: response larger than {self.config.max_response_bytes} bytes",
                    )
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)
        finally:
            await response.aclose()

    def _status_error(
        self,
        method: str,
        path: str,
        status: int,
        headers: httpx.Headers,
        body: bytes,
        classify: ErrorClassifier | None,
    ) -> PollError:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if classify is not None:
            custom = classify(status, body, path)
            if custom is not None:
                if retry_after is not None and isinstance(custom, UpstreamHTTPError) and custom.retry_after is None:
                    custom.retry_after = retry_after
                return custom
        snippet = body[:200].decode("utf-8", "replace").replace("\n", " ")
        return UpstreamHTTPError(
            reason_for_status(status),
            f"{method} {path}: HTTP {status}: {snippet}",
            status=status,
            body=body,
            retry_after=retry_after,
        )

    def _retry_delay(self, attempt: int, error: PollError) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        retry_after = error.retry_after if isinstance(error, UpstreamHTTPError) else None
        if retry_after is not None and (error.reason == "rate_limited" or getattr(error, "status", 0) == 503):
            # A wait longer than we accept would outlive the poll: fail now and
            # let the next scheduled poll try again.
            return retry_after if retry_after <= self.config.max_retry_after else None
        if error.reason == "rate_limited":
            # No hint from the server: wait the full backoff ceiling, not a
            # jittered fraction of it, so we do not hammer a throttled API.
            return float(min(self.config.max_backoff, self.config.backoff * (2**attempt)))
        if error.reason == "http_5xx":
            return self._backoff(attempt)
        return None

    def _backoff(self, attempt: int) -> float:
        return full_jitter(attempt, self.config.backoff, self.config.max_backoff)

    async def aclose(self) -> None:
        await self._client.aclose()
