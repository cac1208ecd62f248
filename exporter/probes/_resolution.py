"""Finding the addresses of the host a kind connects to: one set of keys for ``tcp`` and ``http``.

A name is resolved through the system resolver, or through given ``resolvers`` (and, with
``also_system_resolver``, through both: the union is tried and both answers are recorded, since
the Umbrella SWG's FQDN anycast relies on Umbrella's DNS). ``fallback_addresses`` stand in when
no resolver answers, as Umbrella's client falls back to the published anycast address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pydantic import Field, model_validator

from exporter.probes import _net
from exporter.probes.base import Boolean, Family, IPAddress, StrictModel, is_ip
from exporter.results import ProbeError, RunRecorder, reason_for

# At most this many addresses of a name are tried in one run, in the resolvers' order.
MAX_ADDRESSES = 16
# With a second resolver or a fallback, one resolver that does not answer may use at most this
# share of the timeout, so the other answer or the fallback still gets probed.
_RESOLVE_SHARE = 0.5


class Resolution(StrictModel):
    """The resolution keys a kind's config takes (mixed into its model)."""

    address_family: Family = "any"
    resolvers: list[IPAddress] = Field(default_factory=list)
    also_system_resolver: Boolean = False
    fallback_addresses: list[IPAddress] = Field(default_factory=list)
    first_address_only: Boolean = False

    @property
    def resolved_family(self) -> str:
        """The address family names are resolved in (a kind may pin it further)."""
        return self.address_family

    @model_validator(mode="after")
    def _system_resolver_needs_resolvers(self) -> Resolution:
        if self.also_system_resolver and not self.resolvers:
            raise ValueError(
                "also_system_resolver needs 'resolvers' (the system resolver is "
                "the default without them)"
            )
        return self


async def addresses(
    settings: Resolution, host: str, probe_timeout: float, recorder: RunRecorder
) -> list[str]:
    """The addresses to try for ``host``, in the resolvers' order (``first_address_only``: one).

    At most :data:`MAX_ADDRESSES`; how many more were found is the ``addresses_dropped`` fact.

    Resolves through every configured source at once (``probe_timeout``: a source may use half
    of it when another source or a fallback can still answer); the fallback stands in when
    none answers. Facts: ``addresses_<source>`` and ``resolver_answers_differ`` with two
    sources, ``fallback_used`` and ``resolve_error`` with a fallback. Raises the first source's
    ProbeError when nothing answers and there is no fallback. An IP literal is its own answer:
    nothing is asked, nothing compared.
    """
    if is_ip(host):
        if settings.fallback_addresses:
            recorder.fact("fallback_used", 0.0)
        return [host]
    chosen = await _resolved(settings, host, probe_timeout, recorder)
    if settings.first_address_only:
        return chosen[:1]
    if len(chosen) > MAX_ADDRESSES:
        # A name with hundreds of addresses must not open hundreds of sockets per run.
        recorder.fact("addresses_dropped", float(len(chosen) - MAX_ADDRESSES))
        return chosen[:MAX_ADDRESSES]
    return chosen


async def _resolved(
    settings: Resolution, host: str, probe_timeout: float, recorder: RunRecorder
) -> list[str]:
    """Every address found through every source, or the fallback when none answered."""
    sources: dict[str, Sequence[str]] = {"system": ()}
    if settings.resolvers:
        sources = {"resolvers": settings.resolvers}
        if settings.also_system_resolver:
            sources["system"] = ()
    limited = len(sources) > 1 or bool(settings.fallback_addresses)
    limit = probe_timeout * _RESOLVE_SHARE if limited else None
    outcomes = await asyncio.gather(
        *(_resolve(host, settings.resolved_family, ns, limit) for ns in sources.values())
    )
    answers = dict(zip(sources, outcomes, strict=True))
    if len(answers) > 1:
        _compare_answers(answers, recorder)
    if settings.fallback_addresses:
        recorder.fact("fallback_used", 0.0)
    found = [address for outcome in outcomes if isinstance(outcome, list) for address in outcome]
    if found:
        return list(dict.fromkeys(found))
    error = next(outcome for outcome in outcomes if isinstance(outcome, ProbeError))
    if not settings.fallback_addresses:
        raise error
    recorder.fact("fallback_used", 1.0)
    recorder.fact("resolve_error", f"{error.reason}: {error.detail}")
    return list(settings.fallback_addresses)


async def _resolve(
    host: str, family: str, nameservers: Sequence[str], limit: float | None
) -> list[str] | ProbeError:
    try:
        async with asyncio.timeout(limit):
            return await _net.resolve(host, family, nameservers)
    except Exception as exc:  # noqa: BLE001 - the caller weighs each source's failure
        reason, detail = reason_for(exc)
        where = ", ".join(nameservers) or "the system resolver"
        return ProbeError(reason, f"{detail} (via {where})")


def _compare_answers(answers: dict[str, list[str] | ProbeError], recorder: RunRecorder) -> None:
    """Record each source's addresses (or its failure) and whether the address sets differ."""
    sets = []
    for source, outcome in answers.items():
        if isinstance(outcome, ProbeError):
            recorder.fact(f"addresses_{source}", f"failed: {outcome.reason}")
            sets.append(frozenset[str]())
        else:
            recorder.fact(f"addresses_{source}", ",".join(outcome))
            sets.append(frozenset(outcome))
    recorder.fact("resolver_answers_differ", float(len(set(sets)) > 1))
