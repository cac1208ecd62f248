"""The registry of probe kinds: kind name -> its :class:`~exporter.probes.base.ProbeKind`.

Adding a kind is one module beside this file and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.probes import dns, http, tcp
from exporter.probes.base import ProbeKind

KINDS: Mapping[str, ProbeKind[Any]] = {
    tcp.KIND.name: tcp.KIND,
    dns.KIND.name: dns.KIND,
    http.KIND.name: http.KIND,
}
