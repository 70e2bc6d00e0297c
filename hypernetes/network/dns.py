"""The DNS server of tenant networks: authoritative for `cluster.local` from one network's
Services and Endpoints, forwarding every other name to the host's resolvers.

One process serves every tenant network. Each network gets its own UDP and TCP sockets, bound
to its gateway address inside its router network namespace (created by a short-lived thread
that setns()'d into it: a socket stays in the namespace it was made in), and its own immutable
`Zone`. A query is answered only from the zone of the sockets it arrived on, so one tenant's
names never resolve from another's network, even where the networks share addresses.

Queries come from untrusted pods, so the codec below is strict (compression pointers must point
strictly backwards, names and labels within RFC 1035 limits, no trailing bytes, one question)
and everything is bounded: query size, response size (512 bytes over UDP unless EDNS0 asks for
more, at most `max_udp`), queries per second per source, queries in flight, TCP connections and
their idle time. Upstream-facing sockets are made in the process's own (host) namespace, so
forwarding works without the network's egress NAT and reaches resolvers on the host's loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import re
import secrets
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from hypernetes.metrics import attach, detach, exposition
from hypernetes.network.netns import netns_path, run_in_netns
from hypernetes.objects import Obj

log = logging.getLogger(__name__)


# -- wire constants ----------------------------------------------------------------------------

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, DNAME, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 33, 39, 41
IXFR, AXFR, MAILB, MAILA, ANY = 251, 252, 253, 254, 255
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16
RCODE_NAMES = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
    BADVERS: "BADVERS",
}

_QR, _AA, _TC, _RD, _RA, _AD, _CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
MAX_NAME = 255  # wire length, length octets and the root included
MAX_POINTER_JUMPS = 128  # a legitimate name has at most 127 labels, so at most 127 jumps
MAX_MESSAGE = 65535
MAX_QUERY = 4096  # no genuine query is larger: one question plus an OPT record
MIN_UDP = 512

Name = tuple[bytes, ...]  # labels as on the wire, without the root


class DnsError(Exception):
    """A message that does not parse or does not follow the rules."""


# -- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Question:
    name: Name
    qtype: int
    qclass: int = CLASS_IN


@dataclass(frozen=True, slots=True)
class NameData:
    """RDATA that is one domain name: CNAME, NS, PTR, DNAME."""

    target: Name


@dataclass(frozen=True, slots=True)
class MxData:
    preference: int
    exchange: Name


@dataclass(frozen=True, slots=True)
class SrvData:
    priority: int
    weight: int
    port: int
    target: Name


@dataclass(frozen=True, slots=True)
class SoaData:
    mname: Name
    rname: Name
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


RData = bytes | NameData | MxData | SrvData | SoaData  # bytes: any type without names


@dataclass(frozen=True, slots=True)
class RR:
    name: Name
    rtype: int
    rclass: int
    ttl: int
    rdata: RData


@dataclass(frozen=True, slots=True)
class Edns:
    udp_size: int = 1232
    ext_rcode: int = 0  # the upper 8 bits of a 12-bit rcode
    version: int = 0
    do: bool = False
    options: bytes = b""


@dataclass(slots=True)
class Message:
    id: int = 0
    qr: bool = False
    opcode: int = 0
    aa: bool = False
    tc: bool = False
    rd: bool = False
    ra: bool = False
    ad: bool = False
    cd: bool = False
    rcode: int = NOERROR  # the full rcode; values above 15 need `edns`
    questions: list[Question] = field(default_factory=list)
    answers: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)  # never the OPT record: that is `edns`
    edns: Edns | None = None


# -- decoding ----------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DnsError("truncated message")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size))

    def name(self) -> Name:
        data, pos = self.data, self.pos
        labels: list[bytes] = []
        length = 1
        # Every pointer must point before the start of the run it ends, so runs start ever
        # earlier and no loop is possible; legitimate compression always satisfies this.
        run_start = pos
        jumps = 0
        after: int | None = None
        while True:
            if pos >= len(data):
                raise DnsError("truncated name")
            n = data[pos]
            if n == 0:
                pos += 1
                break
            kind = n & 0xC0
            if kind == 0xC0:
                if pos + 1 >= len(data):
                    raise DnsError("truncated compression pointer")
                target = ((n & 0x3F) << 8) | data[pos + 1]
                if target >= run_start:
                    raise DnsError("compression pointer does not point backwards")
                jumps += 1
                if jumps > MAX_POINTER_JUMPS:
                    raise DnsError("too many compression pointers")
                if after is None:
                    after = pos + 2
                pos = run_start = target
                continue
            if kind:
                raise DnsError("unknown label type")
            length += n + 1
            if length > MAX_NAME:
                raise DnsError("name longer than 255 octets")
            if pos + 1 + n > len(data):
                raise DnsError("truncated label")
            labels.append(data[pos + 1 : pos + 1 + n])
            pos += 1 + n
        self.pos = after if after is not None else pos
        return tuple(labels)


def _rdata(r: _Reader, rtype: int, end: int) -> RData:
    if rtype in (CNAME, NS, PTR, DNAME):
        out: RData = NameData(r.name())
    elif rtype == MX:
        (pref,) = r.unpack(_U16)
        out = MxData(pref, r.name())
    elif rtype == SRV:
        prio, weight, port = r.unpack(_SRV)
        out = SrvData(prio, weight, port, r.name())
    elif rtype == SOA:
        mname, rname = r.name(), r.name()
        out = SoaData(mname, rname, *r.unpack(_SOA))
    else:
        if (rtype == A and end - r.pos != 4) or (rtype == AAAA and end - r.pos != 16):
            raise DnsError("bad address length")
        return r.take(end - r.pos)
    if r.pos != end:
        raise DnsError("RDATA length does not match its content")
    return out


_U16 = struct.Struct("!H")
_SRV = struct.Struct("!HHH")
_SOA = struct.Struct("!IIIII")
_QFIXED = struct.Struct("!HH")


def _edns(rr_class: int, ttl: int, options: bytes) -> Edns:
    pos = 0
    while pos < len(options):  # the options must be well-formed TLVs
        if pos + 4 > len(options):
            raise DnsError("truncated EDNS option")
        (olen,) = _U16.unpack_from(options, pos + 2)
        pos += 4 + olen
    if pos != len(options):
        raise DnsError("truncated EDNS option")
    return Edns(
        udp_size=rr_class,
        ext_rcode=ttl >> 24,
        version=(ttl >> 16) & 0xFF,
        do=bool(ttl & 0x8000),
        options=options,
    )


def decode(data: bytes) -> Message:
    """Parse a whole message; raise DnsError on anything malformed, including trailing bytes."""
    if len(data) > MAX_MESSAGE:
        raise DnsError("message too large")
    r = _Reader(data)
    mid, flags, qd, an, ns, ar = r.unpack(_HEADER)
    msg = Message(
        id=mid,
        qr=bool(flags & _QR),
        opcode=(flags >> 11) & 0xF,
        aa=bool(flags & _AA),
        tc=bool(flags & _TC),
        rd=bool(flags & _RD),
        ra=bool(flags & _RA),
        ad=bool(flags & _AD),
        cd=bool(flags & _CD),
        rcode=flags & 0xF,
    )
    for _ in range(qd):
        name = r.name()
        qtype, qclass = r.unpack(_QFIXED)
        msg.questions.append(Question(name, qtype, qclass))
    for count, section in ((an, msg.answers), (ns, msg.authority), (ar, msg.additional)):
        for _ in range(count):
            name = r.name()
            rtype, rclass, ttl, rdlen = r.unpack(_RR_FIXED)
            end = r.pos + rdlen
            if end > len(data):
                raise DnsError("truncated RDATA")
            if rtype == OPT:
                if section is not msg.additional or msg.edns is not None or name:
                    raise DnsError("misplaced or repeated OPT record")
                msg.edns = _edns(rclass, ttl, r.take(rdlen))
                continue
            section.append(RR(name, rtype, rclass, ttl, _rdata(r, rtype, end)))
    if r.pos != len(data):
        raise DnsError("trailing bytes after the message")
    if msg.edns is not None:
        msg.rcode |= msg.edns.ext_rcode << 4
    return msg


# -- encoding ----------------------------------------------------------------------------------

_COMPRESSIBLE = {CNAME, NS, PTR, MX, SOA}  # RFC 3597 section 4: only RFC 1035 types


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.offsets: dict[Name, int] = {}  # lower-cased suffix -> where it was written

    def name(self, name: Name, compress: bool = True) -> None:
        lower = tuple(label.lower() for label in name)
        for i in range(len(name)):
            suffix = lower[i:]
            if compress and suffix in self.offsets:
                self.buf += _U16.pack(0xC000 | self.offsets[suffix])
                return
            if len(self.buf) < 0x4000:
                self.offsets.setdefault(suffix, len(self.buf))
            self.buf.append(len(name[i]))
            self.buf += name[i]
        self.buf.append(0)

    def rr(self, rr: RR) -> None:
        self.name(rr.name)
        self.buf += _RR_FIXED.pack(rr.rtype, rr.rclass, rr.ttl, 0)
        start = len(self.buf)
        d = rr.rdata
        compress = rr.rtype in _COMPRESSIBLE
        if isinstance(d, bytes):
            self.buf += d
        elif isinstance(d, NameData):
            self.name(d.target, compress)
        elif isinstance(d, MxData):
            self.buf += _U16.pack(d.preference)
            self.name(d.exchange, compress)
        elif isinstance(d, SrvData):
            self.buf += _SRV.pack(d.priority, d.weight, d.port)
            self.name(d.target, compress=False)  # RFC 2782: never compressed
        else:
            self.name(d.mname, compress)
            self.name(d.rname, compress)
            self.buf += _SOA.pack(d.serial, d.refresh, d.retry, d.expire, d.minimum)
        _U16.pack_into(self.buf, start - 2, len(self.buf) - start)


def _flags(msg: Message, tc: bool) -> int:
    return (
        (_QR if msg.qr else 0)
        | (msg.opcode & 0xF) << 11
        | (_AA if msg.aa else 0)
        | (_TC if tc else 0)
        | (_RD if msg.rd else 0)
        | (_RA if msg.ra else 0)
        | (_AD if msg.ad else 0)
        | (_CD if msg.cd else 0)
        | (msg.rcode & 0xF)
    )


def encode(msg: Message, limit: int = MAX_MESSAGE, *, partial: bool = False) -> bytes:
    """Serialise `msg` in at most `limit` bytes. What does not fit is left out: a record missing
    from the answer or authority section sets TC and, unless `partial` (TCP, where a client
    cannot retry with a larger transport), empties both, so a client never caches half an
    RRset from UDP. Records left out of the additional section do not set TC (RFC 2181 9)."""
    w = _Writer()
    w.buf += bytes(_HEADER.size)
    for q in msg.questions:
        w.name(q.name)
        w.buf += _QFIXED.pack(q.qtype, q.qclass)
    opt_size = 11 + len(msg.edns.options) if msg.edns else 0
    counts = [0, 0, 0]
    cut = False  # a record of the answer or authority section did not fit
    for i, section in enumerate((msg.answers, msg.authority, msg.additional)):
        for rr in section:
            mark = len(w.buf)
            w.rr(rr)
            if len(w.buf) + opt_size > limit:
                del w.buf[mark:]  # nothing is written after this, so stale offsets are harmless
                cut = i < 2
                break
            counts[i] += 1
        else:
            continue
        break
    if cut and not partial and (counts[0] or counts[1]):
        return encode(replace(msg, answers=[], authority=[], additional=[], tc=True), limit)
    if msg.edns:
        e = msg.edns
        ttl = ((msg.rcode >> 4) & 0xFF) << 24 | (e.version & 0xFF) << 16 | (0x8000 if e.do else 0)
        w.buf += b"\x00" + _RR_FIXED.pack(OPT, e.udp_size, ttl, len(e.options)) + e.options
        counts[2] += 1
    _HEADER.pack_into(w.buf, 0, msg.id, _flags(msg, msg.tc or cut), len(msg.questions), *counts)
    if len(w.buf) > limit:
        raise DnsError("message does not fit even without records")
    return bytes(w.buf)


# -- names -------------------------------------------------------------------------------------

_TEXT_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_K8S_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def name_from_text(text: str) -> Name:
    """`a.b.c` (a trailing dot allowed) as lower-cased labels. Only letters, digits, `-` and `_`
    (for SRV owners): every name we serve is one Kubernetes makes."""
    text = text.rstrip(".") if text != "." else ""
    if not text:
        return ()
    labels = text.split(".")
    for label in labels:
        if not _TEXT_LABEL.fullmatch(label):
            raise ValueError(f"bad DNS label {label!r} in {text!r}")
    name = tuple(label.lower().encode("ascii") for label in labels)
    if sum(len(x) + 1 for x in name) + 1 > MAX_NAME:
        raise ValueError(f"DNS name too long: {text!r}")
    return name


def name_to_text(name: Name) -> str:
    """For logs and tests: escaped as in zone files."""

    def esc(label: bytes) -> str:
        return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in b'.\\"();' else f"\\{b:03d}" for b in label)

    return ".".join(esc(x) for x in name) + "."


def _lower(name: Name) -> Name:
    return tuple(label.lower() for label in name)


# -- the records of one network ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class Ptr:
    target: str


@dataclass(frozen=True, slots=True)
class Cname:
    target: str


# An IP address (str or ipaddress object) is an A or AAAA record.
Record = str | ipaddress.IPv4Address | ipaddress.IPv6Address | Srv | Ptr | Cname
Records = Mapping[str, Iterable[Record]]

_REVERSE = (name_from_text("in-addr.arpa"), name_from_text("ip6.arpa"))
MAX_CNAME_CHAIN = 8


@dataclass(slots=True)
class Answer:
    rcode: int
    answers: list[RR]
    authority: list[RR]
    # set when a CNAME chain leaves the zone: the rest is the upstreams' to answer
    follow: Name | None = None


class Zone:
    """The names one tenant network sees under `domain`, plus PTR records for its addresses.
    Immutable: `DnsServer.set_records` swaps in a new one, so a query sees one consistent
    version. A name mapped to an empty list exists with no data (a headless service with no
    ready endpoint): NOERROR and no answer rather than NXDOMAIN."""

    def __init__(
        self, records: Records, domain: str = "cluster.local", ttl: int = 5, serial: int = 1
    ) -> None:
        self.domain = name_from_text(domain)
        self.ttl = ttl
        self._rrs: dict[Name, list[RR]] = {}
        self._exists: set[Name] = {self.domain}  # names and their ancestors within the domain
        for text, values in records.items():
            name = name_from_text(text)
            rrs = self._rrs.setdefault(name, [])
            for value in values:
                rr = self._record(name, value)
                if rr not in rrs:
                    rrs.append(rr)
            if self.contains(name):
                self._exists.update(name[i:] for i in range(len(name) - len(self.domain)))
            elif not self._reverse(name) or any(r.rtype != PTR for r in rrs):
                raise ValueError(f"{text!r} is outside {domain!r} and not a PTR record")
            if any(r.rtype == CNAME for r in rrs) and len(rrs) > 1:
                raise ValueError(f"{text!r} has a CNAME and other records")
        self.soa = RR(
            self.domain,
            SOA,
            CLASS_IN,
            ttl,
            SoaData(
                (b"ns", b"dns", *self.domain),
                (b"hostmaster", *self.domain),
                serial & 0xFFFFFFFF,
                7200,
                1800,
                86400,
                ttl,
            ),
        )

    def _record(self, name: Name, value: Record) -> RR:
        if isinstance(value, Srv):
            for v in (value.priority, value.weight, value.port):
                if not 0 <= v <= 0xFFFF:
                    raise ValueError(f"bad SRV record {value!r}")
            data: RData = SrvData(value.priority, value.weight, value.port, name_from_text(value.target))
            return RR(name, SRV, CLASS_IN, self.ttl, data)
        if isinstance(value, Ptr):
            return RR(name, PTR, CLASS_IN, self.ttl, NameData(name_from_text(value.target)))
        if isinstance(value, Cname):
            return RR(name, CNAME, CLASS_IN, self.ttl, NameData(name_from_text(value.target)))
        ip = ipaddress.ip_address(value) if isinstance(value, str) else value
        return RR(name, A if ip.version == 4 else AAAA, CLASS_IN, self.ttl, ip.packed)

    def contains(self, name: Name) -> bool:
        """Whether `name` (lower-cased) is under the zone's domain."""
        n = len(self.domain)
        return len(name) >= n and name[len(name) - n :] == self.domain

    @staticmethod
    def _reverse(name: Name) -> bool:
        return any(len(name) > len(z) and name[len(name) - len(z) :] == z for z in _REVERSE)

    def authoritative(self, name: Name) -> bool:
        """Under the domain, or a reverse name we hold a PTR for (others are forwarded)."""
        return self.contains(name) or name in self._rrs

    def resolve(self, name: Name, qtype: int) -> Answer:
        """Answer for a lower-cased name we are authoritative for. The rcode is that of the last
        name of a CNAME chain (RFC 6604); a chain that leaves the zone ends in `follow`."""
        out = Answer(NOERROR, [], [])
        for _ in range(MAX_CNAME_CHAIN):
            rrs = self._rrs.get(name)
            inside = self.contains(name)
            if rrs is None:
                if not inside:
                    out.follow = name if out.answers else None
                elif name == self.domain and qtype in (SOA, ANY):
                    out.answers.append(self.soa)
                else:
                    out.rcode = NOERROR if name in self._exists else NXDOMAIN
                    out.authority.append(self.soa)
                return out
            if rrs and rrs[0].rtype == CNAME and qtype not in (CNAME, ANY):
                out.answers.append(rrs[0])
                assert isinstance(rrs[0].rdata, NameData)
                name = rrs[0].rdata.target
                continue
            found = [rr for rr in rrs if qtype in (rr.rtype, ANY)]
            if len(found) > 1 and found[0].rtype in (A, AAAA):
                found = random.sample(found, len(found))  # spread clients over endpoints
            out.answers += found
            if not found and inside:
                out.authority.append(self.soa)
            return out
        out.rcode = SERVFAIL  # a CNAME loop among the records
        return out

    def lookup(self, name: str, qtype: int) -> Answer:
        return self.resolve(name_from_text(name), qtype)


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def _ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        return None


def _meta(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def records_for(
    services: Iterable[Obj], endpoints: Iterable[Obj], domain: str = "cluster.local"
) -> dict[str, list[Record]]:
    """The record map of one tenant network from its Services and Endpoints (API objects), as
    the Kubernetes DNS specification says: a service with a cluster IP -> A/AAAA of its cluster
    IPs; a headless one -> its ready endpoints' IPs, plus `<hostname>.<svc>...` for each ready
    endpoint (its hostname, or its IP with dashes as CoreDNS names it); ExternalName -> CNAME;
    SRV `_<port>._<proto>.<svc>...` for named ports; PTR for cluster and endpoint IPs.
    Objects with names or addresses that cannot be served are skipped, never fatal."""
    out: dict[str, list[Record]] = {}

    def add(name: str, value: Record | None = None) -> None:
        values = out.setdefault(name, [])
        if value is not None and value not in values:
            values.append(value)

    eps = {_meta(e): e for e in endpoints}
    for svc in services:
        ns, name = _meta(svc)
        if not (_K8S_LABEL.match(ns) and _K8S_LABEL.match(name)):
            continue
        spec = svc.get("spec") or {}
        fqdn = f"{name}.{ns}.svc.{domain}"
        if spec.get("type") == "ExternalName":
            try:
                target = name_to_text(name_from_text(str(spec.get("externalName") or "")))
            except ValueError:
                continue
            if target != ".":
                add(fqdn, Cname(target))
            continue
        ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
        if spec.get("clusterIP") != "None":
            ips = [ip for ip in map(_ip, spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip]
            if not ips:
                continue
            for ip in ips:
                add(fqdn, ip)
                add(ip.reverse_pointer, Ptr(fqdn))
            for p in ports:
                if srv := _srv_owner(p, fqdn):
                    add(srv[0], Srv(0, 100, srv[1], fqdn))
            continue
        add(fqdn)  # a headless service exists even with no ready endpoint
        for subset in (eps.get((ns, name)) or {}).get("subsets") or []:
            hosts: list[str] = []
            for a in subset.get("addresses") or []:
                ep_ip = _ip(a.get("ip"))
                if ep_ip is None:
                    continue
                hostname = str(a.get("hostname") or "")
                host = hostname if _K8S_LABEL.match(hostname) else _dashed(str(ep_ip))
                add(fqdn, ep_ip)
                add(f"{host}.{fqdn}", ep_ip)
                add(ep_ip.reverse_pointer, Ptr(f"{host}.{fqdn}"))
                hosts.append(host)
            for p in subset.get("ports") or []:
                if hosts and (srv := _srv_owner(p, fqdn)):
                    for h in hosts:
                        add(srv[0], Srv(0, max(1, 100 // len(hosts)), srv[1], f"{h}.{fqdn}"))
    return out


def _srv_owner(port: Any, fqdn: str) -> tuple[str, int] | None:
    """The SRV owner name and port number of a named service or endpoint port."""
    if not isinstance(port, dict):
        return None
    pname, proto, num = str(port.get("name") or ""), str(port.get("protocol") or "TCP"), port.get("port")
    if (
        not _K8S_LABEL.match(pname)
        or proto not in ("TCP", "UDP", "SCTP")
        or not isinstance(num, int)
        or not 0 < num < 65536
    ):
        return None
    return f"_{pname}._{proto.lower()}.{fqdn}", num


# -- the server ----------------------------------------------------------------------------------


def _bind_sockets(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        for s in (udp, tcp):
            # The gateway address may not be configured yet when we start (or still be in IPv6
            # duplicate address detection): bind anyway, packets arrive once it is.
            s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
            s.setblocking(False)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((address, port))
        tcp.bind((address, port))
        tcp.listen(128)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


def read_resolv_conf(path: str = "/etc/resolv.conf") -> list[str]:
    """The `nameserver` addresses of a resolv.conf (at most 3, as the C library reads)."""
    out: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and _ip(parts[1].split("%")[0]):
                    out.append(parts[1])
    except OSError:
        return []
    return out[:3]


def guest_resolv_conf(namespace: str, nameserver: str, domain: str = "cluster.local") -> str:
    """The resolv.conf of a pod in `namespace` (dnsPolicy ClusterFirst): the search path makes
    `svc` and `svc.ns` resolve, and ndots:5 sends such names through it first, as upstream."""
    return (
        f"search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {nameserver}\noptions ndots:5\n"
    )


def parse_upstream(text: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:5353`, `::1` or `[::1]:5353` -> (address, port)."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = int(p)
    ipaddress.ip_address(host.split("%")[0])
    if not 0 < port < 65536:
        raise ValueError(f"bad upstream port in {text!r}")
    return host, port


class _RateLimiter:
    """A token bucket per source address, over a bounded table (the least recently seen
    sources are forgotten first)."""

    def __init__(self, rate: float, burst: float, max_sources: int = 4096) -> None:
        self.rate, self.burst, self.max_sources = rate, burst, max_sources
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, source: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_sources:
            del self._buckets[next(iter(self._buckets))]
        ok = tokens >= 1
        self._buckets[source] = (tokens - 1 if ok else tokens, now)
        return ok


@dataclass
class _Listener:
    udp: asyncio.DatagramTransport
    tcp: asyncio.Server
    netns_inode: int | None  # which namespace of that name the sockets live in


@dataclass
class _Network:
    id: str
    zone: Zone
    limiter: _RateLimiter
    upstreams: list[tuple[str, int]] = field(default_factory=list)
    listeners: dict[tuple[str | None, str, int], _Listener] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    tcp_writers: set[asyncio.StreamWriter] = field(default_factory=set)


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer, net: _Network) -> None:
        self.server, self.net = server, net
        self.transport: asyncio.DatagramTransport | None = None
        self.paused = False  # the socket's send buffer is full: the clients are not reading

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (3.11's selector transport is not a DatagramTransport subclass, though it is one)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.transport is not None:
            self.server._datagram(self.net, self, data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors about clients that went away: nothing to do

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False


class _UpstreamClient(asyncio.DatagramProtocol):
    """Waits for the first datagram that is a valid answer to our query; others (late answers
    to earlier queries, forgeries, garbage) are ignored."""

    def __init__(self, qid: int, question: Question) -> None:
        self.qid, self.question = qid, question
        self.reply: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            msg = decode(data)
        except DnsError:
            return
        if _answers(msg, self.qid, self.question) and not self.reply.done():
            self.reply.set_result(msg)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)  # e.g. port unreachable: try the next upstream now


def _answers(msg: Message, qid: int, q: Question) -> bool:
    return (
        msg.id == qid
        and msg.qr
        and msg.opcode == 0
        and len(msg.questions) == 1
        and _lower(msg.questions[0].name) == _lower(q.name)
        and (msg.questions[0].qtype, msg.questions[0].qclass) == (q.qtype, q.qclass)
    )


async def _close_listener(listener: _Listener) -> None:
    listener.udp.close()
    listener.tcp.close()
    await listener.tcp.wait_closed()


class DnsServer:
    """Serves the DNS of many tenant networks from one event loop. Call `set_records` whenever
    a network's Services or Endpoints change, `serve_network` once per listening address."""

    def __init__(
        self,
        *,
        domain: str = "cluster.local",
        upstreams: Sequence[str] | None = None,
        upstream_timeout: float = 2.0,
        ttl: int = 5,
        max_udp: int = 1232,
        rate: float = 500.0,
        burst: float = 1000.0,
        max_inflight: int = 256,
        max_tcp_clients: int = 64,
        tcp_idle: float = 10.0,
    ) -> None:
        self.domain = domain
        self.default_upstreams = [
            parse_upstream(u) for u in (read_resolv_conf() if upstreams is None else upstreams)
        ]
        self.upstream_timeout = upstream_timeout
        self.ttl = ttl
        self.max_udp = max(MIN_UDP, min(max_udp, 4096))
        self.rate, self.burst = rate, burst
        self.max_inflight = max_inflight
        self.max_tcp_clients = max_tcp_clients
        self.tcp_idle = tcp_idle
        self._networks: dict[str, _Network] = {}
        self._serial = 0
        self.responses: dict[tuple[str, str], int] = defaultdict(int)  # (network, rcode)
        self.dropped: dict[tuple[str, str], int] = defaultdict(int)  # (network, reason)
        self.upstream_failures: dict[str, int] = defaultdict(int)

    # -- the caller's API

    def set_records(self, network_id: str, records: Records) -> None:
        """Replace the records of a network (see `records_for`). Raises ValueError for a name or
        record that cannot be served; the previous records then stay."""
        self._serial = max(self._serial + 1, int(time.time()))
        zone = Zone(records, self.domain, self.ttl, self._serial)
        self._network(network_id).zone = zone

    async def serve_network(
        self,
        network_id: str,
        netns: str | None,
        address: str,
        port: int = 53,
        upstreams: Sequence[str] | None = None,
    ) -> None:
        """Listen on `address`:`port` (UDP and TCP) inside network namespace `netns` (None: this
        process's own) for `network_id`. Idempotent for the same netns/address/port; another
        address (say the IPv6 gateway) adds a listener. `upstreams` (default: the host's
        resolv.conf, read when the server was made) replaces the network's upstreams."""
        net = self._network(network_id)
        net.upstreams = (
            [parse_upstream(u) for u in upstreams] if upstreams is not None else list(self.default_upstreams)
        )
        key = (netns, address, port)
        # Our sockets pin their namespace: if the name now means a new namespace (the network
        # was torn down and made again), the old sockets serve nobody and must be replaced.
        inode = os.stat(netns_path(netns)).st_ino if netns is not None else None
        old = net.listeners.get(key)
        if old is not None:
            if old.netns_inode == inode:
                return
            del net.listeners[key]
            await _close_listener(old)
        udp_sock, tcp_sock = await asyncio.to_thread(
            run_in_netns, netns, lambda: _bind_sockets(address, port)
        )
        loop = asyncio.get_running_loop()
        try:
            udp, _ = await loop.create_datagram_endpoint(lambda: _UdpServer(self, net), sock=udp_sock)
        except BaseException:
            udp_sock.close()
            tcp_sock.close()
            raise
        try:
            tcp = await asyncio.start_server(
                lambda r, w: self._tcp_client(net, r, w), sock=tcp_sock, limit=MAX_MESSAGE + 2
            )
        except BaseException:
            udp.close()
            tcp_sock.close()
            raise
        net.listeners[key] = _Listener(udp, tcp, inode)
        attach(self)
        log.info("dns network=%s listening netns=%s address=%s port=%d", network_id, netns, address, port)

    async def stop_network(self, network_id: str) -> None:
        """Close every socket of the network, end its queries and forget its records."""
        net = self._networks.pop(network_id, None)
        if net is None:
            return
        for w in list(net.tcp_writers):
            w.close()
        for task in list(net.tasks):
            task.cancel()
        await asyncio.gather(*net.tasks, return_exceptions=True)
        for listener in net.listeners.values():
            await _close_listener(listener)
        log.info("dns network=%s stopped", network_id)

    async def close(self) -> None:
        for network_id in list(self._networks):
            await self.stop_network(network_id)
        detach(self)

    def networks(self) -> list[str]:
        return sorted(self._networks)

    def collect(self) -> Iterator[Metric]:
        """Its metrics, on the process's /metrics while it serves (hypernetes.metrics)."""
        series: tuple[tuple[str, str, list[str], Mapping[Any, int]], ...] = (
            (
                "hypernetes_dns_responses",
                "DNS responses by tenant network and rcode.",
                ["network", "rcode"],
                self.responses,
            ),
            (
                "hypernetes_dns_dropped",
                "DNS queries dropped unanswered, by reason.",
                ["network", "reason"],
                self.dropped,
            ),
            (
                "hypernetes_dns_upstream_failures",
                "Forwarded queries an upstream failed.",
                ["upstream"],
                self.upstream_failures,
            ),
        )
        for name, text, labels, counts in series:
            family = CounterMetricFamily(name, text, labels=labels)
            for key, n in sorted(counts.items()):
                family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
            yield family

    def metrics_text(self) -> str:
        """Prometheus text of its metrics alone."""
        return exposition(self).decode()

    # -- transports

    def _network(self, network_id: str) -> _Network:
        net = self._networks.get(network_id)
        if net is None:
            net = _Network(network_id, Zone({}, self.domain, self.ttl), _RateLimiter(self.rate, self.burst))
            self._networks[network_id] = net
        return net

    def _spawn(self, net: _Network, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        net.tasks.add(task)
        task.add_done_callback(net.tasks.discard)

    def _datagram(self, net: _Network, proto: _UdpServer, data: bytes, addr: tuple[Any, ...]) -> None:
        if not net.limiter.allow(str(addr[0])):
            self.dropped[(net.id, "ratelimit")] += 1
        elif len(net.tasks) >= self.max_inflight:
            self.dropped[(net.id, "inflight")] += 1
        elif proto.paused:
            self.dropped[(net.id, "backlog")] += 1
        else:
            self._spawn(net, self._udp_reply(net, proto, data, addr))

    async def _udp_reply(self, net: _Network, proto: _UdpServer, data: bytes, addr: tuple[Any, ...]) -> None:
        reply = await self._answer_safely(net, data, tcp=False)
        if reply is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.transport.sendto(reply, addr)

    async def _tcp_client(
        self, net: _Network, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:  # so stop_network can end it
            net.tasks.add(task)
            task.add_done_callback(net.tasks.discard)
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        if len(net.tcp_writers) >= self.max_tcp_clients:
            self.dropped[(net.id, "tcp-clients")] += 1
            writer.close()
            return
        net.tcp_writers.add(writer)
        try:
            while True:
                (n,) = _U16.unpack(await asyncio.wait_for(reader.readexactly(2), self.tcp_idle))
                if not 12 <= n <= MAX_QUERY:
                    self.dropped[(net.id, "malformed")] += 1
                    break
                data = await asyncio.wait_for(reader.readexactly(n), self.tcp_idle)
                if not net.limiter.allow(source):
                    self.dropped[(net.id, "ratelimit")] += 1
                    break
                reply = await self._answer_safely(net, data, tcp=True)
                if reply is None:
                    break
                writer.write(_U16.pack(len(reply)) + reply)
                await asyncio.wait_for(writer.drain(), self.tcp_idle)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            net.tcp_writers.discard(writer)
            writer.close()

    async def _answer_safely(self, net: _Network, data: bytes, tcp: bool) -> bytes | None:
        try:
            return await self.answer(net.id, data, tcp=tcp)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dns network=%s: query failed", net.id)
            self.dropped[(net.id, "error")] += 1
            return None

    # -- queries

    async def answer(self, network_id: str, data: bytes, *, tcp: bool = False) -> bytes | None:
        """The reply to one query received on a network's socket, or None to send nothing."""
        net = self._networks.get(network_id)
        if net is None or len(data) < _HEADER.size:
            return None
        qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
        if flags & _QR:
            self.dropped[(net.id, "response")] += 1
            return None  # never answer a response: that is how reflection loops start
        head = Message(id=qid, qr=True, opcode=(flags >> 11) & 0xF, rd=bool(flags & _RD), ra=True)
        if head.opcode != 0:
            return self._reply(net, head, NOTIMP, MIN_UDP)
        if len(data) > MAX_QUERY or qd != 1 or an or ns or ar > 2:
            return self._reply(net, head, FORMERR, MIN_UDP)
        try:
            query = decode(data)
        except DnsError:
            return self._reply(net, head, FORMERR, MIN_UDP)
        q = query.questions[0]
        head.questions = [q]
        head.cd = query.cd
        limit = MAX_MESSAGE if tcp else MIN_UDP
        if query.edns is not None:
            head.edns = Edns(udp_size=self.max_udp)
            if query.edns.version != 0:
                return self._reply(net, head, BADVERS, MIN_UDP)
            if not tcp:
                limit = max(MIN_UDP, min(query.edns.udp_size, self.max_udp))
        if q.qclass != CLASS_IN or q.qtype in (IXFR, AXFR, MAILB, MAILA, OPT):
            return self._reply(net, head, REFUSED, limit)
        name = _lower(q.name)
        zone = net.zone
        if zone.authoritative(name):
            result = zone.resolve(name, q.qtype)
            head.aa = True
            head.answers, head.authority = result.answers, result.authority
            rcode = result.rcode
            if result.follow is not None:  # an ExternalName: the target is the upstreams'
                up = await self._forward(net, Question(result.follow, q.qtype, q.qclass))
                if up is not None:
                    head.aa = False
                    head.answers += up.answers
                    head.authority = up.authority
                    rcode = up.rcode
            return self._reply(net, head, rcode, limit, tcp)
        up = await self._forward(net, q)
        if up is None:
            return self._reply(net, head, SERVFAIL, limit)
        head.answers, head.authority = up.answers, up.authority  # the additional section is dropped
        return self._reply(net, head, up.rcode, limit, tcp)

    def _reply(self, net: _Network, msg: Message, rcode: int, limit: int, tcp: bool = False) -> bytes:
        msg.rcode = rcode
        self.responses[(net.id, RCODE_NAMES.get(rcode, str(rcode)))] += 1
        return encode(msg, limit, partial=tcp)

    async def _forward(self, net: _Network, q: Question) -> Message | None:
        """Ask the network's upstreams in turn; the first real answer wins (SERVFAIL, REFUSED
        and the like move on to the next upstream)."""
        for upstream in net.upstreams:
            try:
                reply = await asyncio.wait_for(self._ask(upstream, q), self.upstream_timeout)
            except (TimeoutError, OSError, DnsError, EOFError, asyncio.IncompleteReadError) as e:
                self.upstream_failures[f"{upstream[0]}:{upstream[1]}"] += 1
                log.debug("dns network=%s upstream=%s failed: %r", net.id, upstream, e)
                continue
            if reply.rcode in (NOERROR, NXDOMAIN):
                return reply
            self.upstream_failures[f"{upstream[0]}:{upstream[1]}"] += 1
        return None

    async def _ask(self, upstream: tuple[str, int], q: Question) -> Message:
        # A new socket per query: a random source port as well as a random ID to guess.
        # Made here, in the main thread, so in the host's network namespace.
        qid = secrets.randbits(16)
        query = encode(Message(id=qid, rd=True, questions=[q], edns=Edns(udp_size=self.max_udp)))
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _UpstreamClient(qid, q), remote_addr=upstream
        )
        try:
            transport.sendto(query)
            reply = await proto.reply
        finally:
            transport.close()
        if not reply.tc:
            return reply
        reader, writer = await asyncio.open_connection(*upstream)
        try:
            writer.write(_U16.pack(len(query)) + query)
            await writer.drain()
            (n,) = _U16.unpack(await reader.readexactly(2))
            reply = decode(await reader.readexactly(n))
        finally:
            writer.close()
        if not _answers(reply, qid, q):
            raise DnsError("upstream TCP reply does not answer the query")
        return reply
