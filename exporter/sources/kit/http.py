"""One aiohttp client session per source, with the retry rules every source shares.

- connect/read timeouts from `HttpConfig`;
- bounded retries with exponential backoff and full jitter on connection
  errors, timeouts and 5xx;
- `Retry-After` honoured on 429 and 503 (capped by `max_retry_after`; a longer
  wait fails the poll as `rate_limited` instead of sleeping past the interval);
  a source may mark an answer as not worth retrying within the poll
  (`UpstreamHTTPError.retryable`: Graph throttling lasts minutes);
- no retry wait that would end after the poll's deadline: the poll fails at
  once under the reason of the failed attempt (`inflight.remaining`);
- no retry on other 4xx;
- at most `max_in_flight` requests of the source, and `[limits]
  max_in_flight_per_host` of all sources to one host, at once (`inflight`);
- a cap on response size, enforced while streaming; every body reserves its
  bytes from the process-wide budget first, and is read into one buffer of
  its announced length (not joined from chunks: after a burst of large
  answers the memory goes back to the system);
- the proxy the environment names (`proxy_for`), TLS verified against the
  system's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured), no
  redirects followed, no cookies kept;
- `User-Agent: api-metrics-exporter/<version>`.

Why aiohttp's client (#19; `benchmarks/clients.py`, docs/performance.md):
httpx's pool (httpcore 1.0) does a pass over queued requests x connections
at every change of state (encode/httpcore#1035) and can leave a request
hanging (#1110); httpx2 fixed both, but its request and response models,
h11 and the pool's anyio locks cost ~0.9 ms of CPU per Bird POST here, where
aiohttp (a C HTTP parser, multidict and yarl in C, one connector) costs
~0.4 ms. aiohttp is already the exporter's server, so no dependency is added.

The credential lives only in the session's default headers; URLs, log lines
and error messages never contain it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from typing import Any
from urllib.request import getproxies, proxy_bypass

import aiohttp
from yarl import URL

from exporter import __version__
from exporter.config.source import HttpConfig
from exporter.errors import InvalidResponse, PollError, UpstreamHTTPError, reason_for_status
from exporter.retry import full_jitter, parse_retry_after
from exporter.sources.kit.inflight import ByteBudget, HostSlots, remaining
from exporter.sources.kit.payloads import decode_json
from exporter.sources.kit.ratelimit import RateBudget

log = logging.getLogger(__name__)

USER_AGENT = f"api-metrics-exporter/{__version__}"

Params = Mapping[str, Any] | list[tuple[str, Any]] | None
# Called with every error response before the default mapping; a source returns
# a PollError of its own (e.g. a vendor's "retired" or "insufficient data") or None.
ErrorClassifier = Callable[[int, bytes, str], PollError | None]
Headers = Mapping[str, str]  # case-insensitive, as aiohttp gives them
Sent = tuple[int, Headers, bytes]
# What a body of unknown length reserves before its first byte.
FIRST_RESERVATION = 256 * 1024
# How long an idle connection is kept for the next request: httpx's default,
# well under the idle timeouts of common servers and load balancers (60 s and
# more), so a request rarely meets a connection the server is closing.
KEEPALIVE_SECONDS = 5.0
# The longest response header line accepted. aiohttp's default is 8 KiB a
# line; httpx (h11) took any line within a 16 KiB head, and vendors send long
# ones (Graph's X-Business-Use-Case-Usage grows with the businesses a token
# serves).
MAX_HEADER_LINE = 16 * 1024


class HttpClient:
    """GET/POST JSON with retries. `connector` is the test seam (aiohttp's
    connection layer); without one the client makes its own."""

    def __init__(
        self,
        *,
        base_url: str,
        config: HttpConfig,
        headers: Mapping[str, str] | None = None,
        source: str = "",
        connector: aiohttp.BaseConnector | None = None,
        on_retry: Callable[[str], None] | None = None,
        budget: RateBudget | None = None,
        host_slots: HostSlots | None = None,
        body_budget: ByteBudget | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self._on_retry = on_retry
        # Every attempt (retries included) takes a token of the budget, shared
        # by every client on the same key and server; a 429 holds it for all.
        self.budget = budget
        # Requests sent so far, retries included (a backfill's ETA: what is left, through the budget).
        self.attempts = 0
        self._base = base_url.rstrip("/")  # an absolute http(s) URL (checked at load: config.source)
        url = URL(self._base)
        self._proxy = proxy_for(url)
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        self._connector = connector
        # Made at the first request, on the event loop that polls (a client
        # is built before the loop runs: `check`, start-up).
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._host_slots = host_slots.of(f"{url.scheme}://{url.host_port_subcomponent}") if host_slots else None
        self._bodies = body_budget

    @property
    def base_url(self) -> str:
        return self._base

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
            except TimeoutError as exc:
                # aiohttp's connect and read timeouts (`ServerTimeoutError`
                # is a `ClientError` too: caught here first).
                error: PollError = PollError("timeout", f"{method} {path}: timed out ({type(exc).__name__})")
                delay = None if last else self._backoff(attempt)
            except aiohttp.ClientError as exc:
                # Refused, reset, TLS failures, a malformed HTTP answer, a body
                # cut short: the server or the network, worth another attempt.
                error = PollError("connection", f"{method} {path}: {type(exc).__name__}: {exc}")
                delay = None if last else self._backoff(attempt)
            else:
                if 200 <= status < 300:
                    return body
                error = self._status_error(method, path, status, headers, body, classify)
                delay = None if last else self._retry_delay(attempt, error)
            if delay is not None and delay >= remaining():
                # The wait would outlive the poll: fail now, counted under
                # what failed rather than as a timeout.
                delay = None
            if delay is None:
                raise error
            log.debug("retrying %s %s in %.2fs after %s", method, path, delay, error.reason,
                      extra={"source": self.source})
            if self._on_retry is not None:
                self._on_retry(error.reason)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, method: str, path: str, params: Params, json_body: Any) -> Sent:
        """One request: a rate-budget token first (if any), then a slot of
        the source and of the host, held until the body is read."""
        self.attempts += 1
        if self.budget is None:
            return await self._in_slots(method, path, params, json_body)
        async with self.budget.slot():
            sent = await self._in_slots(method, path, params, json_body)
        if sent[0] == 429:
            wait = parse_retry_after(sent[1].get("Retry-After"))
            self.budget.hold(wait if wait is not None else self.budget.per)
        return sent

    async def _in_slots(self, method: str, path: str, params: Params, json_body: Any) -> Sent:
        async with self._slots:
            if self._host_slots is None:
                return await self._send_once(method, path, params, json_body)
            async with self._host_slots:
                return await self._send_once(method, path, params, json_body)

    async def _send_once(self, method: str, path: str, params: Params, json_body: Any) -> Sent:
        """One request and its body."""
        session = self._session or self._open()
        async with session.request(
            method,
            f"{self._base}/{path.lstrip('/')}",
            params=query(params),
            data=None if json_body is None else json_bytes(json_body),
            headers=JSON_CONTENT if json_body is not None else None,
            proxy=self._proxy,
            # A redirect is an error answer: the vendors' APIs do not
            # redirect, and following one could carry the credential elsewhere.
            allow_redirects=False,
        ) as response:
            return response.status, response.headers, await self._read(response, f"{method} {path}")

    def _open(self) -> aiohttp.ClientSession:
        connector = self._connector or aiohttp.TCPConnector(
            # As many connections as requests may be in flight, all kept
            # alive: a smaller pool would close and reopen them all through
            # a burst.
            limit=self.config.max_in_flight,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ssl=tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout,
                                          sock_read=self.config.read_timeout),
            # The APIs authenticate by header: a cookie a server sets is not
            # sent back (nor kept: a jar is a cost on every request).
            cookie_jar=aiohttp.DummyCookieJar(),
            # Proxies come from `proxy_for`; trust_env would also read
            # ~/.netrc and send its passwords to the vendors.
            trust_env=False,
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
        )
        return self._session

    async def _read(self, response: aiohttp.ClientResponse, where: str) -> bytes:
        """The body, within `max_response_bytes` and the process-wide byte budget."""
        limit = self.config.max_response_bytes
        length = _known_length(response.headers)
        if length is not None and length > limit:
            raise PollError("response_too_large", f"{where}: response of {length} bytes, more than {limit}")
        reservation = _Reservation(self._bodies)
        await reservation.take(min(length if length is not None else FIRST_RESERVATION, limit), where)
        try:
            # One buffer of the announced length: a large one is a mapping of
            # its own that goes back to the system when freed, where chunks
            # joined at the end fragment the heap and stay held.
            buffer = bytearray(length or 0)
            size = 0
            async for chunk in response.content.iter_any():
                end = size + len(chunk)
                if end > limit:
                    raise PollError("response_too_large", f"{where}: response larger than {limit} bytes")
                reservation.grow(end, limit, where)
                if length is not None and end <= length:
                    buffer[size:end] = chunk
                else:
                    buffer += chunk
                size = end
            if size < len(buffer):
                del buffer[size:]
            return bytes(buffer)
        finally:
            reservation.release()

    def _status_error(
        self,
        method: str,
        path: str,
        status: int,
        headers: Headers,
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
        if isinstance(error, UpstreamHTTPError) and not error.retryable:
            return None
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
        if self._session is not None:
            await self._session.close()
        elif self._connector is not None:
            await self._connector.close()


JSON_CONTENT = {"Content-Type": "application/json"}


def json_bytes(body: Any) -> bytes:
    """A request body as httpx encodes JSON: compact, UTF-8, no NaN."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def query(params: Params) -> list[tuple[str, str]] | None:
    """Query parameters as httpx writes values: True and False as `true` and
    `false`, None as empty (yarl refuses booleans and None)."""
    if not params:
        return None
    pairs = params.items() if isinstance(params, Mapping) else params
    return [(key, _query_value(value)) for key, value in pairs]


def _query_value(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


def proxy_for(url: URL) -> str | None:
    """The proxy the environment names for requests to `url`, as curl and
    httpx read it: `<SCHEME>_PROXY`, then `ALL_PROXY`, none for hosts in
    `NO_PROXY`. aiohttp speaks to HTTP(S) proxies only (CONNECT for https
    URLs); a SOCKS proxy is refused here, naming the variable, rather than
    failing every request."""
    proxies = getproxies()
    scheme = url.scheme
    name = scheme if scheme in proxies else "all"
    proxy = proxies.get(name)
    if not proxy or proxy_bypass(url.host or ""):
        return None
    if "://" not in proxy:
        proxy = f"http://{proxy}"  # curl's reading of a bare host:port
    kind = URL(proxy).scheme
    if kind not in ("http", "https"):
        raise ValueError(f"{name.upper()}_PROXY: a {kind}:// proxy; only http:// and https:// proxies are supported")
    return proxy


@functools.cache
def tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """Certificates checked against the system's trust store, or against the
    bundle `SSL_CERT_FILE` / `SSL_CERT_DIR` name, as OpenSSL and httpx read
    them. One context for every source: loading a trust store costs ~30 ms."""
    return ssl.create_default_context(cafile=cafile, capath=capath)


def _known_length(headers: Headers) -> int | None:
    """The body's length when the server announces it and it arrives as is
    (a compressed body's Content-Length is not its decoded length)."""
    if headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return None
    try:
        length = int(headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


class _Reservation:
    """The bytes one body holds of the process-wide budget (none without one)."""

    def __init__(self, budget: ByteBudget | None) -> None:
        self.budget = budget
        self.held = 0

    async def take(self, size: int, where: str) -> None:
        """Wait for `size` bytes; a body that could never fit fails at once."""
        if self.budget is None:
            return
        if size > self.budget.total:
            raise PollError("response_too_large", f"{where}: response of {size} bytes, more than "
                                                  f"[limits] max_response_bytes_in_flight ({self.budget.total})")
        await self.budget.reserve(size)
        self.held = size

    def grow(self, size: int, limit: int, where: str) -> None:
        """Hold at least `size` bytes, taking more (doubling) without waiting:
        a body that waited while holding bytes could wait for another forever."""
        if self.budget is None or size <= self.held:
            return
        more = max(size - self.held, min(self.held, limit - self.held))
        if not self.budget.try_grow(more):
            raise PollError("response_too_large", f"{where}: response over {self.held} bytes while [limits] "
                                                  f"max_response_bytes_in_flight ({self.budget.total}) is in use")
        self.held += more

    def release(self) -> None:
        if self.budget is not None and self.held:
            self.budget.release(self.held)
            self.held = 0
