"""The ``dns`` kind: one DNS exchange with one server, over UDP or TCP, on any port.

One query, one answer, no retransmission: a lost datagram is a ``timeout``, which is
what the Secure Client Roaming Module sees too. The reply is parsed with dnspython and checked
against the expectations (rcodes, answer count, regex, TXT prefix), then optionally against an
identity check proving the answer came from the vendor's resolver (the values, such as
Umbrella's provider key, come from the presets):

- ``answer_regex``: an answer matches a regular expression, e.g. ``debug.opendns.com`` TXT
  carries a ``server rN.<site>`` line (the first group is recorded as the ``identity`` fact);
- ``answer_equals``: an answer is exactly a value, e.g. ``welcome.umbrella.com`` resolves to
  the address only Umbrella gives;
- ``dnscrypt_cert``: the DNSCrypt certificate served on port 443 is signed by the provider key
  (Ed25519) and inside its validity window.

An answer failing its identity check is ``dns_intercepted``: something else (a DNS proxy, a
DNAT rule) answered in the vendor's name; so is text where a TCP reply should start (an HTTP
server behind a transparent proxy). On Linux the UDP reply is timestamped by the kernel
(``SO_TIMESTAMPNS``), so the ``request`` phase does not include event-loop lag.

Over UDP, as a stub resolver does: ICMP errors are read from the socket's error queue (a
router's unreachable is ``network_unreachable`` naming the router, see ``_icmp``); datagrams
that do not answer the query are counted as strays and the wait goes on (RFC 5452 section 9.1);
a truncated reply (TC=1) is retried over TCP to the same server and port (RFC 7766 section 5),
whose answer is then checked (phases ``tcp_connect`` and ``tcp_request``, text fact
``tcp_fallback``: ``answered`` or ``failed``).

This module defines the kind (its config, phases, facts and ``run``); the exchanges are in
``_dns_transport`` and the checks of the reply in ``_dns_checks``.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Literal

import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
from pydantic import AfterValidator, Discriminator, Field

from exporter.probes import _net
from exporter.probes._dns_checks import answer_problem, identity_problem, rcode_problem
from exporter.probes._dns_transport import (
    TCP_PHASES,
    UDP_PHASES,
    Query,
    tcp_exchange,
    tcp_retry,
    udp_exchange,
)
from exporter.probes._dnscrypt import provider_key_bytes
from exporter.probes._trace import PathTarget
from exporter.probes.base import (
    Boolean,
    Integer,
    IPAddress,
    Port,
    ProbeConfig,
    ProbeKind,
    Regex,
    StrictModel,
    family_of,
)
from exporter.results import FailureReason, ProbeError, ProbeResult, RunRecorder


def _dns_mnemonic(parse: Callable[[str], object], what: str) -> Callable[[str], str]:
    """A validator for a DNS mnemonic (record type, class, rcode), upper-cased."""

    def check(value: str) -> str:
        try:
            parse(value)
        except dns.exception.DNSException:
            raise ValueError(f"'{value}' is not {what}") from None
        return value.upper()

    return check


RecordType = Annotated[
    str, AfterValidator(_dns_mnemonic(dns.rdatatype.from_text, "a DNS record type"))
]
RecordClass = Annotated[
    str, AfterValidator(_dns_mnemonic(dns.rdataclass.from_text, "a DNS class"))
]
Rcode = Annotated[
    str, AfterValidator(_dns_mnemonic(dns.rcode.from_text, "a DNS rcode (NOERROR, NXDOMAIN, ...)"))
]


def _dns_name(value: str) -> str:
    try:
        dns.name.from_text(value)
    except dns.exception.DNSException as exc:
        raise ValueError(f"'{value}' is not a DNS name: {exc}") from None
    return value


def _provider_key(value: str) -> str:
    provider_key_bytes(value)
    return value


class DnsQuery(StrictModel):
    """The question: name, type and class."""

    name: Annotated[str, AfterValidator(_dns_name)]
    type: RecordType = "A"
    rdclass: Annotated[RecordClass, Field(alias="class")] = "IN"


class Edns(StrictModel):
    """EDNS(0) on the query."""

    payload: Annotated[Integer, Field(ge=512, le=65535)] = 1232
    dnssec_ok: Boolean = False


class DnsExpect(StrictModel):
    """What a good answer looks like; any answer is checked against all that are given."""

    rcodes: list[Rcode] = Field(default_factory=lambda: ["NOERROR"], min_length=1)
    min_answers: Annotated[Integer, Field(ge=0)] = 0
    answer_regex: Regex | None = None
    txt_prefix: str | None = None


class RegexIdentity(StrictModel):
    """An answer (TXT strings joined, other records as text) must match ``regex``.

    Its first group, if any, is recorded as the ``identity`` fact (e.g. Umbrella's site).
    """

    check: Literal["answer_regex"]
    regex: Regex


class EqualsIdentity(StrictModel):
    """An answer must be exactly ``value`` (e.g. the address only the vendor's resolver gives)."""

    check: Literal["answer_equals"]
    value: str = Field(min_length=1)


class DnsCryptIdentity(StrictModel):
    """The DNSCrypt certificate must be signed by the provider key and be currently valid."""

    check: Literal["dnscrypt_cert"]
    provider_key: Annotated[str, AfterValidator(_provider_key)]


Identity = Annotated[RegexIdentity | EqualsIdentity | DnsCryptIdentity, Discriminator("check")]


class DnsProbe(ProbeConfig):
    """Config of a ``dns`` probe."""

    kind: Literal["dns"]
    server: IPAddress
    port: Port = 53
    protocol: Literal["udp", "tcp"] = "udp"
    query: DnsQuery
    edns: Edns | None = None
    expect: DnsExpect = Field(default_factory=DnsExpect)
    identity: Identity | None = None

    @property
    def target(self) -> str:
        """``server:port`` (brackets around IPv6) for the target label."""
        return _net.host_port(self.server, self.port)

    @property
    def transport(self) -> str:
        """``udp`` or ``tcp``."""
        return self.protocol

    @property
    def family(self) -> str:
        """The server's address family."""
        return family_of(self.server)

    @property
    def phases(self) -> tuple[str, ...]:
        """``connect`` and ``request`` over TCP; over UDP ``request``, then the TCP retry's."""
        return TCP_PHASES if self.protocol == "tcp" else UDP_PHASES

    def tried_addresses(self, result: ProbeResult) -> dict[str, FailureReason | None]:
        """The server, with the run's reason: a ``dns`` probe has one address and no endpoints."""
        return {self.server: result.reason}

    def path_target(self, address: str) -> PathTarget:
        """The probe's own query over UDP (a reply means reached), or a SYN to its TCP port."""
        payload = _make_query(self).wire if self.protocol == "udp" else b""
        return PathTarget(address, self.port, self.protocol, payload)


async def run(config: DnsProbe, recorder: RunRecorder) -> None:
    """Send one query, read its reply, check it; failures raise ProbeError, facts are kept.

    Over UDP a truncated reply (TC=1) is retried over TCP to the same server and port, as a
    resolver does (RFC 7766 section 5); the TCP answer is then the one checked.
    """
    query = _make_query(config)
    recorder.fact("answering_server", config.server)
    if config.protocol == "udp":
        response = await udp_exchange(config, query, recorder)
        if response.flags & dns.flags.TC:
            response = await tcp_retry(config, query, recorder)
    else:
        response = await tcp_exchange(config, query, recorder)
    problem = (
        rcode_problem(config, response)
        or answer_problem(config.expect, response, recorder)
        or identity_problem(config.identity, response, recorder)
    )
    if problem is not None:
        raise ProbeError(*problem)


def _make_query(config: DnsProbe) -> Query:
    """The probe's query with a fresh random id (RFC 5452 section 4.3).

    Only the id differs from run to run: the message is built and encoded once per distinct
    question and EDNS setting, and each run copies it and writes its own id into the wire.
    """
    edns = None if config.edns is None else (config.edns.payload, config.edns.dnssec_ok)
    template, wire = _query_template(
        config.query.name, config.query.type, config.query.rdclass, edns
    )
    message = copy.copy(template)
    message.id = dns.entropy.random_16()
    return Query(message, struct.pack("!H", message.id) + wire[2:])


@lru_cache(maxsize=256)
def _query_template(
    name: str, rdtype: str, rdclass: str, edns: tuple[int, bool] | None
) -> tuple[dns.message.QueryMessage, bytes]:
    message = dns.message.make_query(
        name,
        rdtype,
        rdclass,
        use_edns=0 if edns is not None else False,
        payload=edns[0] if edns is not None else None,
        want_dnssec=edns is not None and edns[1],
    )
    return message, message.to_wire()


KIND = ProbeKind(
    name="dns",
    config=DnsProbe,
    run=run,
    facts={
        "rcode": "DNS rcode of the last reply (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED).",
        "answer_records": "Records in the answer section of the last reply.",
        "truncated": "Whether the last reply had the TC flag set (1) or not (0); over UDP "
        "the probe then retried over TCP.",
        "stray_datagrams": "Datagrams that did not answer the last UDP query (another id or "
        "question, malformed), read while waiting for its reply.",
        "response_size_bytes": "Size of the last reply on the wire, in bytes.",
        "dnscrypt_cert_not_after_timestamp_seconds": "Expiry of the newest valid DNSCrypt "
        "certificate served.",
    },
)
