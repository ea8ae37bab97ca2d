"""HTTP to one ComfyUI server: one requests Session per server, explicit timeouts, one error tree.

Every failure leaves this module as a :mod:`core.errors` exception, translated in
exactly one place (:meth:`ServerConnection._request`). Idempotent GETs are retried
by urllib3 with exponential backoff and jitter; POSTs never are, because a POST
that timed out may still have reached the server (a resent ``POST /prompt`` would
render the frame twice): the dispatcher fails over instead.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, Mapping, Optional, Tuple

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from .config import ServerConfig
from .errors import ServerRejected, ServerTimeout, ServerUnavailable

log = logging.getLogger(__name__)

#: (connect, read) seconds. A hung (SIGSTOPped) server accepts TCP and then says
#: nothing, so the read timeout is what bounds a status poll.
DEFAULT_TIMEOUT: Tuple[float, float] = (3.05, 10.0)
STATUS_TIMEOUT: Tuple[float, float] = (2.0, 3.0)


def host_for_url(ip: str) -> str:
    """IPv6 literals need brackets inside a URL."""
    ip = ip.strip()
    if ":" in ip and not ip.startswith("["):
        return f"[{ip}]"
    return ip


def base_url(config: ServerConfig) -> str:
    return "{}://{}:{}".format(config.scheme or "http", host_for_url(config.ip), config.port)


def ws_url(config: ServerConfig, client_id: str) -> str:
    scheme = "wss" if (config.scheme or "http") == "https" else "ws"
    return f"{scheme}://{host_for_url(config.ip)}:{config.port}/ws?clientId={client_id}"


def auth_headers(config: ServerConfig) -> Dict[str, str]:
    """Headers a reverse proxy may require. Values are secrets: never log them."""
    headers = dict(config.headers or {})
    if config.token:
        headers.setdefault("Authorization", f"Bearer {config.token}")
    return headers


def _make_retry(retries: int, backoff: float) -> Retry:
    kw: Dict[str, Any] = dict(
        total=retries,
        connect=retries,
        read=0,  # a hung server must cost one read timeout, not several
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,
    )
    try:
        return Retry(backoff_jitter=backoff, **kw)  # urllib3 >= 2
    except TypeError:  # urllib3 1.x, as some Nuke installs carry
        return Retry(**kw)


class ServerConnection:
    """HTTP access to one server. Thread-safe enough for our use: requests Sessions
    may be shared between threads for independent requests."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        timeout: Tuple[float, float] = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.25,
    ) -> None:
        self.config = config
        self.name = config.name
        self.base_url = base_url(config)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # a studio proxy must not swallow LAN traffic
        adapter = HTTPAdapter(max_retries=_make_retry(retries, backoff), pool_maxsize=8)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(auth_headers(config))
        #: requests sent, by "METHOD route" (for the status-layer request-rate figures)
        self.request_counts: Dict[str, int] = {}

    def url(self, path: str) -> str:
        return "{}/{}".format(self.base_url, path.lstrip("/"))

    def ws_url(self, client_id: str) -> str:
        return ws_url(self.config, client_id)

    def close(self) -> None:
        self.session.close()

    # -- requests --------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: Optional[Tuple[float, float]] = None,
        job_id: Optional[str] = None,
        **kw: Any,
    ) -> requests.Response:
        url = self.url(path)
        where = dict(server=self.name, url=url, job_id=job_id)
        route = "{} {}".format(method, path.split("?")[0].split("/")[0])
        self.request_counts[route] = self.request_counts.get(route, 0) + 1
        try:
            response = self.session.request(method, url, timeout=timeout or self.timeout, **kw)
        except requests.exceptions.ConnectTimeout as e:
            raise ServerUnavailable(
                f"{self.name}: no connection to {self.base_url} within {(timeout or self.timeout)[0]:.0f} s (is the server up and reachable?)",
                **where,
            ) from e
        except (requests.exceptions.ReadTimeout, requests.exceptions.Timeout) as e:
            err = ServerTimeout(
                f"{self.name}: no answer from {self.base_url} within {(timeout or self.timeout)[1]:.0f} s (server hung or overloaded)",
                **where,
            )
            raise err from e
        except requests.exceptions.SSLError as e:
            raise ServerUnavailable(f"{self.name}: TLS error with {self.base_url}: {e}", **where) from e
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            # with Retry(read=0) urllib3 reports a read timeout as MaxRetryError -> ConnectionError
            if isinstance(getattr(e.args[0] if e.args else None, "reason", None), ReadTimeoutError):
                raise self._timeout(timeout, where) from e
            raise ServerUnavailable(
                f"{self.name}: cannot connect to {self.base_url} (connection refused or dropped)", **where
            ) from e
        except requests.exceptions.RequestException as e:
            raise ServerUnavailable(f"{self.name}: request to {url} failed: {e}", **where) from e
        if response.status_code >= 400:
            body: Any
            try:
                body = response.json()
            except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
                body = response.text[:2000]
            hint = ""
            if response.status_code in (401, 403, 407):
                hint = " (refused our credentials: check the token / headers configured for this server)"
            raise ServerRejected(
                f"{self.name}: {method} {path} answered HTTP {response.status_code}{hint}",
                status=response.status_code,
                body=body,
                **where,
            )
        return response

    def _timeout(self, timeout: Optional[Tuple[float, float]], where: Dict[str, Any]) -> ServerTimeout:
        return ServerTimeout(
            f"{self.name}: no answer from {self.base_url} within {(timeout or self.timeout)[1]:.0f} s (server hung or overloaded)",
            **where,
        )

    def _json(self, response: requests.Response, path: str, job_id: Optional[str]) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
            raise ServerRejected(
                f"{self.name}: {path} answered a body that is not JSON",
                status=response.status_code,
                body=response.text[:2000],
                server=self.name,
                url=self.url(path),
                job_id=job_id,
            ) from e

    def get_json(
        self,
        path: str,
        params: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Optional[Tuple[float, float]] = None,
        job_id: Optional[str] = None,
    ) -> Any:
        response = self._request("GET", path, params=params, timeout=timeout, job_id=job_id)
        return self._json(response, path, job_id)

    def post_json(
        self,
        path: str,
        data: Any = None,
        *,
        timeout: Optional[Tuple[float, float]] = None,
        job_id: Optional[str] = None,
    ) -> Any:
        body = json.dumps(data if data is not None else {}).encode("utf-8")
        response = self._request(
            "POST",
            path,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=timeout,
            job_id=job_id,
        )
        return self._json(response, path, job_id)

    def get_bytes(
        self, path: str, params: Optional[Mapping[str, Any]] = None, *, timeout: Optional[Tuple[float, float]] = None
    ) -> bytes:
        return self._request("GET", path, params=params, timeout=timeout).content

    def upload_image(
        self, filename: str, data: bytes, *, subfolder: str = "", image_type: str = "input", overwrite: bool = True
    ) -> Dict[str, Any]:
        """``POST /upload/image``; returns ``{name, subfolder, type}`` (the server may rename)."""
        files = {"image": (filename, data, "application/octet-stream")}
        form = {"subfolder": subfolder, "type": image_type, "overwrite": "true" if overwrite else "false"}
        response = self._request("POST", "upload/image", files=files, data=form)
        result = self._json(response, "upload/image", None)
        if not isinstance(result, dict) or "name" not in result:
            raise ServerRejected(
                f"{self.name}: upload/image answered an unexpected body", body=result, server=self.name
            )
        return result
