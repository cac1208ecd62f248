"""End to end: a firewall blocks the Umbrella resolvers, the page arrives, and it resolves.

In the lab's client namespace the real exporter (Umbrella preset, DNS only) probes the
Umbrella look-alike in the cloud namespace; a real Prometheus (Debian package) scrapes it and
evaluates alerts/egress.rules.yml; a real Alertmanager (Debian package) delivers to a webhook
receiver that logs each notification. An nftables rule in the firewall drops UDP 53 and 443
to the resolvers: EgressDnsProtectionLost must be delivered firing, then resolved once the rule
is gone.

Bounded in time: probes every second, state hysteresis 1, scrape and evaluation every second,
Alertmanager groups flushed after a second, and the rules are loaded from a copy whose `for:`
durations are shortened to FOR (the only change; expressions and annotations are the shipped
ones).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from conftest import UMBRELLA_RESOLVERS

from lab import FW_CLIENT_V4, LAB_DIR, Lab
from lab.stack import shortened_rules, start_alertmanager, start_exporter, start_prometheus

RULES = Path(__file__).parent.parent / "alerts" / "egress.rules.yml"
FOR = "2s"
EXPORTER_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT, WEBHOOK_PORT = 10196, 9196, 9197, 9198
VANTAGE = "branch-1"
ALERT = "EgressDnsProtectionLost"


def _notifications(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def _wait_for_alert(lab: Lab, log: Path, status: str, timeout: float = 60) -> dict[str, Any]:
    """The first delivered ALERT with ``status`` ("firing" or "resolved")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for notification in _notifications(log):
            for alert in notification["alerts"]:
                if alert["labels"]["alertname"] == ALERT and alert["status"] == status:
                    return alert
        time.sleep(0.5)
    raise AssertionError(f"no {status} {ALERT} delivered: {_notifications(log)}\n{lab.logs()}")


def _is_one(result: list[dict[str, Any]]) -> bool:
    return bool(result) and result[0]["value"][1] == "1"


def test_blocked_resolvers_page_and_resolve_through_alertmanager(
    lab: Lab, stack_tools: None, umbrella: None, umbrella_dns_config: dict[str, Any]
) -> None:
    with lab.scope():
        log = lab.workdir / "webhook.jsonl"
        lab.start(
            lab.client,
            sys.executable,
            str(LAB_DIR / "webhook_receiver.py"),
            f"127.0.0.1:{WEBHOOK_PORT}",
            str(log),
            ready_port=("127.0.0.1", WEBHOOK_PORT),
        )
        alertmanager = start_alertmanager(
            lab,
            {
                "route": {
                    "receiver": "webhook",
                    "group_by": ["alertname", "vantage", "family"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "webhook",
                        "webhook_configs": [
                            {"url": f"http://127.0.0.1:{WEBHOOK_PORT}/", "send_resolved": True}
                        ],
                    }
                ],
            },
            port=ALERTMANAGER_PORT,
        )
        start_exporter(lab, umbrella_dns_config, port=EXPORTER_PORT)
        prometheus = start_prometheus(
            lab,
            [(f"127.0.0.1:{EXPORTER_PORT}", {"vantage": VANTAGE})],
            rule_files=[shortened_rules(RULES, lab.workdir / "e2e-rules", FOR)],
            alertmanager=alertmanager,
            port=PROMETHEUS_PORT,
        )
        protected = 'egress_dns_protection_state{family="ipv4",state="protected_encrypted"}'
        prometheus.wait_for(protected, _is_one)
        assert not any(a["labels"]["alertname"] == ALERT for a in prometheus.alerts())

        blocked = f"ip daddr {{ {', '.join(UMBRELLA_RESOLVERS)} }} udp dport {{ 53, 443 }} drop"
        with lab.firewall(blocked):
            firing = _wait_for_alert(lab, log, "firing")
        assert firing["labels"] == {
            "alertname": ALERT,
            "severity": "critical",
            "job": "egress",
            "instance": f"127.0.0.1:{EXPORTER_PORT}",
            "vantage": VANTAGE,
            "family": "ipv4",
            "state": "unprotected",
        }
        description = firing["annotations"]["description"]
        assert description.startswith(f"ipv4 DNS at vantage {VANTAGE} is unprotected:")
        # A probe whose path trace was scraped before the alert fired names its last hop too.
        path = re.escape(f"; dropped after hop 1, {FW_CLIENT_V4}")
        for failing in (
            "umbrella-dns-v4a-udp443-cert udp 208.67.222.222:443",
            "umbrella-dns-v4b-udp53-debug udp 208.67.220.220:53",
        ):
            assert re.search(rf"{re.escape(failing)} \(timeout({path})?\)", description), failing
        assert firing["annotations"]["runbook_url"].endswith("runbooks.md#egressdnsprotectionlost")

        resolved = _wait_for_alert(lab, log, "resolved")
        assert resolved["labels"] == firing["labels"]
        prometheus.wait_for(protected, _is_one)
