"""The ``dns`` kind's checks of a reply: rcode, answers, and the vendor's identity.

A reply is checked in that order and the first problem is the verdict:

- the rcode must be one of ``expect.rcodes``; otherwise NXDOMAIN, SERVFAIL and REFUSED are their
  own reasons, any other ``dns_bad_response``, and every one of them ``dns_intercepted`` when an
  identity check is set (the vendor's resolvers answer their own check names);
- the answers must meet ``expect``: ``min_answers``, ``answer_regex`` and ``txt_prefix``
  (``dns_bad_response``);
- the identity check proves the answer came from the vendor's resolver (``dns_intercepted``
  when it does not): ``answer_regex`` (its first group becomes the ``identity`` fact),
  ``answer_equals``, or ``dnscrypt_cert``: a DNSCrypt certificate signed by the provider key
  and inside its validity window (``_dnscrypt``), whose expiry becomes the
  ``dnscrypt_cert_not_after_timestamp_seconds`` fact.

A problem is a ``(reason, detail)`` pair, or None when the reply passes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import dns.message
import dns.rcode
import dns.rdtypes.ANY.TXT
import regex

from exporter.probes._dnscrypt import certificate_problem, parse_certificate, provider_key_bytes
from exporter.probes.base import MAX_MATCH_SECONDS, SlowPatternError, search
from exporter.results import FailureReason, RunRecorder

if TYPE_CHECKING:
    from exporter.probes.dns import (
        DnsCryptIdentity,
        DnsExpect,
        DnsProbe,
        EqualsIdentity,
        Identity,
        RegexIdentity,
    )

_RCODE_REASONS = {
    dns.rcode.NXDOMAIN: FailureReason.DNS_NXDOMAIN,
    dns.rcode.SERVFAIL: FailureReason.DNS_SERVFAIL,
    dns.rcode.REFUSED: FailureReason.DNS_REFUSED,
}

Problem = tuple[FailureReason, str] | None


def rcode_problem(config: DnsProbe, response: dns.message.Message) -> Problem:
    """Whether the rcode is one expected; an unexpected one is intercepted under an identity."""
    rcode = response.rcode()
    name = dns.rcode.to_text(rcode)
    if name in config.expect.rcodes:
        return None
    if config.identity is not None:
        # The vendor's resolvers answer their own check names; anything else answered.
        return (
            FailureReason.DNS_INTERCEPTED,
            f"{name} for {config.query.name}: not the vendor's answer ({config.identity.check})",
        )
    reason = _RCODE_REASONS.get(rcode, FailureReason.DNS_BAD_RESPONSE)
    return reason, f"{name} for {config.query.name} (expected {'/'.join(config.expect.rcodes)})"


def answer_texts(response: dns.message.Message) -> list[str]:
    """Every answer record as text; TXT records as their joined, decoded strings."""
    texts = []
    for rrset in response.answer:
        for rdata in rrset:
            if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
                texts.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            else:
                texts.append(rdata.to_text())
    return texts


def _txt_blobs(response: dns.message.Message) -> list[bytes]:
    return [
        b"".join(rdata.strings)
        for rrset in response.answer
        for rdata in rrset
        if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
    ]


def answer_problem(
    expect: DnsExpect, response: dns.message.Message, recorder: RunRecorder
) -> Problem:
    """Whether the answers meet ``expect`` (count, regex, TXT prefix)."""
    texts = answer_texts(response)
    if len(texts) < expect.min_answers:
        return (
            FailureReason.DNS_BAD_RESPONSE,
            f"{len(texts)} answers, expected at least {expect.min_answers}",
        )
    if expect.answer_regex is not None:
        try:
            match = _first_match(expect.answer_regex, texts, recorder)
        except SlowPatternError as exc:
            return FailureReason.DNS_BAD_RESPONSE, f"{exc}: {_shorten(texts)}"
        if match is None:
            return (
                FailureReason.DNS_BAD_RESPONSE,
                f"no answer matches /{expect.answer_regex}/: {_shorten(texts)}",
            )
    if expect.txt_prefix is not None:
        prefix = expect.txt_prefix.encode()
        if not any(blob.startswith(prefix) for blob in _txt_blobs(response)):
            return (
                FailureReason.DNS_BAD_RESPONSE,
                f"no TXT answer starts with '{expect.txt_prefix}': {_shorten(texts)}",
            )
    return None


def _first_match(pattern: str, texts: list[str], recorder: RunRecorder) -> regex.Match[str] | None:
    """The first answer's match of ``pattern``; all the searches share one time limit.

    The limit is the run's time left, capped at ``MAX_MATCH_SECONDS`` for the whole check, so
    ten answers that each backtrack stall the loop once, not ten times.
    """
    deadline = time.monotonic() + min(recorder.remaining(), MAX_MATCH_SECONDS)
    for text in texts:
        match = search(pattern, text, deadline - time.monotonic())
        if match is not None:
            return match
    return None


def _shorten(texts: list[str]) -> str:
    joined = "; ".join(texts) or "(no answers)"
    return joined if len(joined) <= 120 else joined[:117] + "..."


def identity_problem(
    identity: Identity | None, response: dns.message.Message, recorder: RunRecorder
) -> Problem:
    """Whether the answer is the vendor's own, by the identity check set (None: no check)."""
    if identity is None:
        return None
    if identity.check == "answer_regex":
        return _regex_problem(identity, response, recorder)
    if identity.check == "answer_equals":
        return _equals_problem(identity, response)
    return _dnscrypt_problem(identity, response, recorder)


def _regex_problem(
    identity: RegexIdentity, response: dns.message.Message, recorder: RunRecorder
) -> Problem:
    texts = answer_texts(response)
    try:
        match = _first_match(identity.regex, texts, recorder)
    except SlowPatternError as exc:
        return FailureReason.DNS_INTERCEPTED, f"{exc}: {_shorten(texts)}"
    if match is not None:
        if match.groups():
            recorder.fact("identity", match.group(1))
        return None
    return (
        FailureReason.DNS_INTERCEPTED,
        f"no answer matches /{identity.regex}/ (the vendor's own answer): {_shorten(texts)}",
    )


def _equals_problem(identity: EqualsIdentity, response: dns.message.Message) -> Problem:
    texts = answer_texts(response)
    if identity.value in texts:
        return None
    return (
        FailureReason.DNS_INTERCEPTED,
        f"answer {_shorten(texts)} is not {identity.value}: another resolver answered",
    )


def _dnscrypt_problem(
    identity: DnsCryptIdentity, response: dns.message.Message, recorder: RunRecorder
) -> Problem:
    key = provider_key_bytes(identity.provider_key)
    now = time.time()
    reasons = []
    valid = []
    for blob in _txt_blobs(response):
        cert = parse_certificate(blob)
        if cert is None:
            reasons.append(f"not a DNSCrypt certificate: {blob[:16]!r}")
            continue
        problem = certificate_problem(cert, key, now)
        if problem is None:
            valid.append(cert)
        else:
            reasons.append(problem)
    if valid:
        not_after = float(max(c.not_after for c in valid))
        recorder.fact("dnscrypt_cert_not_after_timestamp_seconds", not_after)
        return None
    return (
        FailureReason.DNS_INTERCEPTED,
        "no valid DNSCrypt certificate: " + ("; ".join(reasons) or "no TXT answer"),
    )
