"""Hysteresis: a published state changes only after N consecutive identical verdicts."""

from __future__ import annotations

import dataclasses

import pytest

from exporter.status import RULES
from exporter.status.base import Hysteresis, Verdict

FAMILY = (("family", "ipv4"),)


def _verdict(state: str, labels: tuple[tuple[str, str], ...] = FAMILY) -> Verdict:
    return Verdict("dns_protection_state", labels, state, f"because {state}")


def _states(published: list[Verdict]) -> list[str]:
    return [v.state for v in published]


def test_first_verdict_is_published_at_once() -> None:
    assert _states(Hysteresis(3).update([_verdict("protected_encrypted")])) == [
        "protected_encrypted"
    ]


def test_a_first_verdict_from_part_of_the_members_is_not_published() -> None:
    # After a start, one unanswered candidate is not "unprotected" while the others have not
    # run yet: publishing it would hold the wrong state for `consecutive` rounds.
    hysteresis = Hysteresis(3)
    partial = dataclasses.replace(_verdict("unprotected"), complete=False)
    assert hysteresis.update([partial]) == []
    assert _states(hysteresis.update([_verdict("protected_unencrypted")])) == [
        "protected_unencrypted"
    ]
    # Once published, a partial verdict (a probe added by a reload) counts as any other.
    for _ in range(2):
        assert _states(hysteresis.update([partial])) == ["protected_unencrypted"]
    assert _states(hysteresis.update([partial])) == ["unprotected"]


def test_one_lost_packet_does_not_flap_the_state() -> None:
    hysteresis = Hysteresis(3)
    hysteresis.update([_verdict("protected_encrypted")])
    assert _states(hysteresis.update([_verdict("unprotected")])) == ["protected_encrypted"]
    assert _states(hysteresis.update([_verdict("protected_encrypted")])) == ["protected_encrypted"]
    assert _states(hysteresis.update([_verdict("unprotected")])) == ["protected_encrypted"]
    assert _states(hysteresis.update([_verdict("unprotected")])) == ["protected_encrypted"]


def test_state_changes_after_n_consecutive_verdicts() -> None:
    hysteresis = Hysteresis(3)
    hysteresis.update([_verdict("protected_encrypted")])
    for _ in range(2):
        assert _states(hysteresis.update([_verdict("unprotected")])) == ["protected_encrypted"]
    assert _states(hysteresis.update([_verdict("unprotected")])) == ["unprotected"]


def test_a_different_pending_verdict_restarts_the_count() -> None:
    hysteresis = Hysteresis(2)
    hysteresis.update([_verdict("protected_encrypted")])
    hysteresis.update([_verdict("unprotected")])
    assert _states(hysteresis.update([_verdict("intercepted")])) == ["protected_encrypted"]
    assert _states(hysteresis.update([_verdict("intercepted")])) == ["intercepted"]


def test_detail_follows_the_latest_identical_verdict() -> None:
    hysteresis = Hysteresis(3)
    hysteresis.update([_verdict("unprotected")])
    newer = Verdict("dns_protection_state", FAMILY, "unprotected", "newer detail")
    assert hysteresis.update([newer])[0].detail == "newer detail"


def test_label_sets_that_disappear_are_dropped() -> None:
    hysteresis = Hysteresis(3)
    v6 = (("family", "ipv6"),)
    hysteresis.update([_verdict("protected_encrypted"), _verdict("unprotected", v6)])
    assert [v.labels for v in hysteresis.update([_verdict("protected_encrypted")])] == [FAMILY]


def test_stale_results_re_evaluated_do_not_count_twice() -> None:
    hysteresis = Hysteresis(3)
    first = frozenset({("dns-udp53", 1.0)})
    hysteresis.update([Verdict("dns_protection_state", FAMILY, "protected_encrypted", "", first)])
    lost = frozenset({("dns-udp53", 2.0)})
    # One lost reply, re-evaluated many times before the probe runs again: still one verdict.
    for _ in range(5):
        published = hysteresis.update(
            [Verdict("dns_protection_state", FAMILY, "unprotected", "", lost)]
        )
        assert _states(published) == ["protected_encrypted"]
    for run in (3.0, 4.0):
        fresh = frozenset({("dns-udp53", run)})
        published = hysteresis.update(
            [Verdict("dns_protection_state", FAMILY, "unprotected", "", fresh)]
        )
    assert _states(published) == ["unprotected"]


def test_since_is_when_the_published_state_last_changed() -> None:
    now = iter([100.0, 110.0, 120.0, 130.0, 140.0])
    hysteresis = Hysteresis(2, clock=lambda: next(now))
    [first] = hysteresis.update([_verdict("protected_encrypted")])
    assert first.since == 100.0
    # Pending (not published yet): the published state keeps its time.
    assert hysteresis.update([_verdict("unprotected")])[0].since == 100.0
    [changed] = hysteresis.update([_verdict("unprotected")])
    assert (changed.state, changed.since) == ("unprotected", 120.0)
    # The same state again: still since its change.
    assert hysteresis.update([_verdict("unprotected")])[0].since == 120.0


def test_every_rule_grades_every_state_and_only_those() -> None:
    for rule in RULES:
        assert set(rule.severities) == set(rule.states)
    with pytest.raises(ValueError, match="severities must grade exactly"):
        dataclasses.replace(RULES[0], severities={})


def test_one_members_failure_is_not_confirmed_by_the_others_fresh_runs() -> None:
    # Three healthchecks on one path: one slow run of "a", then "b" and "c" run again (ok).
    hysteresis = Hysteresis(3)

    def verdict(state: str, **runs: float) -> Verdict:
        return Verdict(
            "security_cloud_state", (("path", "direct"),), state, "", frozenset(runs.items())
        )

    hysteresis.update([verdict("reachable", a=1, b=1, c=1)])
    for runs in ({"a": 2, "b": 1, "c": 1}, {"a": 2, "b": 2, "c": 1}, {"a": 2, "b": 2, "c": 2}):
        assert _states(hysteresis.update([verdict("degraded", **runs)])) == ["reachable"]
    # Two more full rounds in which "a" stays slow: three rounds agree, the state changes.
    assert _states(hysteresis.update([verdict("degraded", a=3, b=3, c=3)])) == ["reachable"]
    assert _states(hysteresis.update([verdict("degraded", a=4, b=4, c=4)])) == ["degraded"]
