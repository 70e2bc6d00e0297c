"""`etcd://` and `etcds://` store URLs: which members, TLS files, key prefix, compaction.

    etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
    etcds://10.0.0.1:2379?cacert=/etc/etcd/ca.crt&cert=/etc/etcd/client.crt&key=/etc/etcd/client.key
    etcd://127.0.0.1:2379?prefix=/cluster-a&compaction-interval=300&request-timeout=5

Parameters (the TLS ones named as etcdctl's flags):
  cacert               CA bundle that signed the members' certificates (etcds; default: system CAs)
  cert, key            client certificate and key, when the members require client certificates
  prefix               root under which every key lives (default "": API objects at
                       /registry/<group>/<resource>/<namespace>/<name>, as kube-apiserver lays them out)
  compaction-interval  seconds between compactions (default 300, as kube-apiserver; 0: never)
  request-timeout      seconds a single etcd request may take before it fails as unavailable (default 5)
"""

from __future__ import annotations

import ipaddress
import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from hypernetes.store.interface import StoreError

_PARAMS = ("cacert", "cert", "key", "prefix", "compaction-interval", "request-timeout")


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[str, ...]  # HOST:PORT
    tls: bool = False
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    prefix: str = ""
    compaction_interval: float = 300.0
    request_timeout: float = 5.0

    def url(self) -> str:
        """The URL this config came from (credentials are file paths, so nothing secret)."""
        query = {
            name: str(value)
            for name, value in (
                ("cacert", self.cacert),
                ("cert", self.cert),
                ("key", self.key),
                ("prefix", self.prefix or None),
            )
            if value is not None
        }
        if self.compaction_interval != 300.0:
            query["compaction-interval"] = f"{self.compaction_interval:g}"
        if self.request_timeout != 5.0:
            query["request-timeout"] = f"{self.request_timeout:g}"
        q = "?" + urllib.parse.urlencode(query, safe="/") if query else ""
        return f"{'etcds' if self.tls else 'etcd'}://{','.join(self.endpoints)}{q}"


def parse_etcd_url(url: str) -> EtcdConfig:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise StoreError(f"store URL {url!r}: expected etcd://HOST:PORT[,HOST:PORT...] or etcds://...")
    hosts, _, query = rest.partition("?")
    hosts = hosts.rstrip("/")
    if not hosts:
        raise StoreError(f"store URL {url!r} names no etcd member; expected etcd://HOST:PORT")
    endpoints = tuple(_endpoint(url, h) for h in hosts.split(","))
    params: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in _PARAMS:
            raise StoreError(f"store URL {url!r}: unknown parameter {name!r} (known: {', '.join(_PARAMS)})")
        if name in params:
            raise StoreError(f"store URL {url!r}: parameter {name!r} given twice")
        params[name] = value
    tls = scheme == "etcds"
    files = {name: Path(params[name]) for name in ("cacert", "cert", "key") if params.get(name)}
    if files and not tls:
        raise StoreError(f"store URL {url!r}: cacert/cert/key need etcds:// (TLS)")
    if ("cert" in files) != ("key" in files):
        raise StoreError(f"store URL {url!r}: a client certificate needs both cert and key")
    prefix = params.get("prefix", "").rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise StoreError(f"store URL {url!r}: prefix must start with '/' (got {prefix!r})")
    return EtcdConfig(
        endpoints,
        tls,
        files.get("cacert"),
        files.get("cert"),
        files.get("key"),
        prefix,
        _seconds(url, params, "compaction-interval", 300.0, zero_ok=True),
        _seconds(url, params, "request-timeout", 5.0, zero_ok=False),
    )


def _endpoint(url: str, text: str) -> str:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StoreError(f"store URL {url!r}: member {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise StoreError(f"store URL {url!r}: member {text!r} is not HOST:PORT") from None
    elif ":" in host:
        raise StoreError(f"store URL {url!r}: write an IPv6 member as [ADDRESS]:PORT (got {text!r})")
    return f"{host}:{int(port)}"


def _seconds(url: str, params: dict[str, str], name: str, default: float, *, zero_ok: bool) -> float:
    if name not in params:
        return default
    try:
        value = float(params[name])
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise StoreError(
            f"store URL {url!r}: {name} must be a number of seconds{' (0: off)' if zero_ok else ' above 0'}, "
            f"got {params[name]!r}"
        )
    return value
