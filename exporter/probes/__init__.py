"""The registry of probe kinds: kind name -> its :class:`~exporter.probes.base.ProbeKind`.

Adding a kind is one module beside this file and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.probes import dns, http, tcp
from exporter.probes.base import ProbeKind
from exporter.results import FailureReason, curl_code

KINDS: Mapping[str, ProbeKind[Any]] = {
    tcp.KIND.name: tcp.KIND,
    dns.KIND.name: dns.KIND,
    http.KIND.name: http.KIND,
}


def shown_curl_code(kind: str, reason: FailureReason | None) -> int | None:
    """The curl code the agent would log for ``reason``, for libcurl-based kinds only."""
    return curl_code(reason) if KINDS[kind].curl_codes else None


def reason_text(kind: str, reason: FailureReason | None) -> str:
    """``reason`` as shown to people: ``timeout (curl 28)`` where the agent logs curl codes."""
    if reason is None:
        return ""
    code = shown_curl_code(kind, reason)
    return str(reason) if code is None else f"{reason} (curl {code})"
