"""How ccgate reaches one backend: the TLS it trusts and shows, and the proxy it goes through.

Requests, health probes and the doctor all go out this way, so what works for one works for all.

- TLS: the system's CA store (OpenSSL's default paths, so `SSL_CERT_FILE` / `SSL_CERT_DIR` replace
  it as for curl), plus a backend's own `ca_file` (a private CA), and its `client_cert` /
  `client_key` when the server asks for one.
- Proxy: `proxy: env` (the default) reads `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (and their
  lower-case spellings, which win) as the Python HTTP clients do, `NO_PROXY` entries such as
  `10.0.0.0/8` included; a loopback host (localhost, 127.0.0.0/8, ::1) never goes through one,
  as in Go: no proxy can reach this machine's loopback, and a local model's prompts must not
  leave the box by accident. `proxy: none` never uses one; `proxy: http://host:port` always this
  one (loopback too). Credentials in a proxy URL are sent as `Proxy-Authorization` and never
  shown. The environment is read once, when the backend is built.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from router.config import BackendConfig


@dataclass(frozen=True, slots=True)
class Egress:
    tls: ssl.SSLContext | None  # None for plain http
    proxy: URL | None = None
    proxy_auth: aiohttp.BasicAuth | None = None

    def describe(self) -> str:
        """For the start-up log and the doctor: never the proxy's credentials."""
        if self.proxy is None:
            return "direct"
        return f"via proxy {self.proxy.with_user(None)}"


def egress_for(name: str, config: BackendConfig, base: str) -> Egress:
    """Raises ValueError, naming the backend and the file, when a TLS file cannot be used."""
    tls = _tls_context(name, config) if urlsplit(base).scheme == "https" else None
    proxy, auth = _proxy(name, config, base)
    return Egress(tls, proxy, auth)


def _tls_context(name: str, config: BackendConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if config.ca_file:
        try:
            context.load_verify_locations(cafile=config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"backend {name}: ca_file {config.ca_file}: {_reason(exc)}") from None
    if config.client_cert:
        try:
            context.load_cert_chain(config.client_cert, config.client_key)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f for f in (config.client_cert, config.client_key) if f)
            raise ValueError(f"backend {name}: client certificate ({files}): {_reason(exc)}") from None
    elif config.client_key:
        raise ValueError(f"backend {name}: client_key without client_cert")
    return context


def _proxy(name: str, config: BackendConfig, base: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    if config.proxy == "none":
        return None, None
    if config.proxy == "env":
        url = URL(base)
        if _loopback(url.host or "") or _in_no_proxy_networks(url.host or ""):
            return None, None
        try:
            return get_env_proxy_for_url(url)
        except LookupError:  # no proxy set for this scheme, or NO_PROXY names the host
            return None, None
    proxy = URL(config.proxy)
    if proxy.scheme != "http" or not proxy.host:
        raise ValueError(f"backend {name}: proxy must be env, none or an http:// URL, not {proxy.with_user(None)}")
    auth = aiohttp.BasicAuth(proxy.user or "", proxy.password or "") if proxy.user is not None else None
    return proxy.with_user(None), auth


def _loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _in_no_proxy_networks(host: str) -> bool:
    """NO_PROXY's CIDR entries (10.0.0.0/8), which urllib does not read, for an IP address host."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    entries = (os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or "").split(",")
    for entry in (e.strip() for e in entries):
        if "/" in entry:
            with contextlib.suppress(ValueError):
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
    return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
