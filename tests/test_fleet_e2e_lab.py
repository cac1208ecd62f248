"""End to end, the agent model: two sites ship through Prometheus agents to a central Prometheus.

Two client namespaces are two vantage points, ``branch-1`` and ``branch-2``. At each, the real
exporter (Umbrella preset, DNS only) probes the Umbrella look-alike in the cloud namespace and
listens on 127.0.0.1 (so ``instance`` is the same at both sites, as behind every agent), and a
real Prometheus in agent mode (Debian's 2.42, ``--enable-feature=agent``) scrapes it and
remote-writes with the external label ``vantage`` to a real central Prometheus in the cloud
namespace (``--web.enable-remote-write-receiver``), which evaluates alerts/egress.rules.yml.
Both run the shipped deploy/agent/ configs, changed only where the lab differs: addresses, no
receiver authentication, every second instead of every 15 s.

nftables in the firewall drops branch-1's DNS to the Umbrella resolvers: the alerts name
branch-1 only, with branch-1's failing probes. Then branch-2's agent stops: EgressVantageSilent
fires for branch-2 and branch-1's alerts stay as they were.

Bounded in time: probes, scrapes, sends and evaluations every second, state hysteresis 1, and
the rules loaded from a copy whose `for:` durations are shortened to FOR (the only change).
The silence alert's own threshold (30 s without a report) is the shipped one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import UMBRELLA_RESOLVERS

from lab import CLIENT_V4, CLOUD_V4, Lab
from lab.stack import (
    Prometheus,
    shortened_rules,
    start_central_prometheus,
    start_exporter,
    start_prometheus_agent,
)

ROOT = Path(__file__).parent.parent
RULES = ROOT / "alerts" / "egress.rules.yml"
AGENT = ROOT / "deploy" / "agent"
FOR = "2s"
EXPORTER_PORT, AGENT_PORT, CENTRAL_PORT = 10198, 9291, 9292
INSTANCE = f"127.0.0.1:{EXPORTER_PORT}"
# branch-1's failing probes: the UDP candidates (the TCP ones are not dropped).
FAILING = [
    f"umbrella-dns-{resolver}-{check} udp {address}:{port} (timeout)"
    for resolver, address in (("v4a", UMBRELLA_RESOLVERS[0]), ("v4b", UMBRELLA_RESOLVERS[1]))
    for check, port in (("udp443-cert", 443), ("udp53-debug", 53))
]
LOCAL_FAILURE = {("EgressDnsProtectionLost", "branch-1"), ("EgressLocalEgressFailure", "branch-1")}
SILENT = ("EgressVantageSilent", "branch-2")

Alerts = dict[tuple[str, str], dict[str, Any]]


def central_config(rules: Path) -> dict[str, Any]:
    """deploy/agent/central.yml with the lab's rules, evaluated every second, no Alertmanager."""
    config: dict[str, Any] = yaml.safe_load((AGENT / "central.yml").read_text(encoding="utf-8"))
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(rules)]
    del config["alerting"]
    return config


def agent_config(vantage: str, central: Prometheus) -> dict[str, Any]:
    """deploy/agent/prometheus-agent.yml for one lab site: every second, to the lab's centre."""
    path = AGENT / "prometheus-agent.yml"
    config: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["global"]["scrape_interval"] = "1s"
    config["global"]["external_labels"]["vantage"] = vantage
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [INSTANCE]}]
    [remote] = config["remote_write"]
    remote["url"] = f"{central.url}/api/v1/write"
    del remote["basic_auth"]  # the lab's receiver has no web.yml
    remote["queue_config"] |= {"batch_send_deadline": "1s", "max_backoff": "1s"}
    return config


def _firing(central: Prometheus) -> Alerts:
    """Firing alerts by (alert name, vantage point)."""
    return {
        (alert["labels"]["alertname"], alert["labels"].get("vantage", "")): alert
        for alert in central.alerts()
        if alert["state"] == "firing"
    }


def _wait_firing(
    lab: Lab, central: Prometheus, wanted: set[tuple[str, str]], settled: Callable[[Alerts], bool]
) -> Alerts:
    """The firing alerts once every ``wanted`` one fires and ``settled`` holds."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        firing = _firing(central)
        if wanted <= firing.keys() and settled(firing):
            return firing
        time.sleep(0.5)
    raise AssertionError(f"{wanted} not firing as expected: {firing}\n{lab.logs()}")


def _every_failing_probe_counted(firing: Alerts) -> bool:
    """The local-failure alert counts all four probes (each crosses the 5 m average in turn)."""
    alert = firing["EgressLocalEgressFailure", "branch-1"]
    return alert["annotations"]["description"].startswith(f"Vantage branch-1 fails {len(FAILING)}")


def _only_at(firing: Alerts, vantage: str, expected: set[tuple[str, str]]) -> None:
    """What fires at ``vantage`` is exactly ``expected``."""
    assert {key for key in firing if key[1] == vantage} == expected


def test_agents_keep_sites_apart_and_a_silent_site_is_named(
    lab: Lab, stack_tools: None, umbrella: None, umbrella_dns_config: dict[str, Any]
) -> None:
    # The alert texts are compared over time; a path trace finishing in between would add
    # its last hop to them (tests/test_alerts_e2e_lab.py shows that it does).
    umbrella_dns_config["presets"][0]["settings"]["trace_paths"] = False
    with lab.another_site() as branch_2, lab.scope():
        rules = shortened_rules(RULES, lab.workdir / "fleet-rules", FOR)
        central = start_central_prometheus(lab, central_config(rules), CLOUD_V4, CENTRAL_PORT)
        agents = {}
        for vantage, ns in (("branch-1", lab.client), ("branch-2", branch_2.ns)):
            start_exporter(lab, umbrella_dns_config, port=EXPORTER_PORT, ns=ns)
            config = agent_config(vantage, central)
            agents[vantage] = start_prometheus_agent(lab, ns, config, port=AGENT_PORT)
        protected = 'egress_dns_protection_state{family="ipv4",state="protected_encrypted"} == 1'
        both = central.wait_for(protected, lambda result: len(result) == 2)
        assert {(r["metric"]["vantage"], r["metric"]["instance"]) for r in both} == {
            ("branch-1", INSTANCE),
            ("branch-2", INSTANCE),
        }
        # Before the agents' first samples arrive, EgressExporterAbsent (its `for` shortened)
        # may fire for a moment; once both sites report, nothing fires.
        assert not _wait_firing(lab, central, set(), lambda firing: not firing)

        blocked = (
            f"ip saddr {CLIENT_V4} ip daddr {{ {', '.join(UMBRELLA_RESOLVERS)} }}"
            " udp dport { 53, 443 } drop"
        )
        with lab.firewall(blocked):
            firing = _wait_firing(lab, central, LOCAL_FAILURE, _every_failing_probe_counted)
            _only_at(firing, "branch-1", LOCAL_FAILURE)
            _only_at(firing, "branch-2", set())
            lost = firing["EgressDnsProtectionLost", "branch-1"]
            assert lost["labels"]["instance"] == INSTANCE
            assert lost["labels"]["state"] == "unprotected"
            description = lost["annotations"]["description"]
            assert description.startswith("ipv4 DNS at vantage branch-1 is unprotected:")
            assert description.endswith("Failing DNS probes: " + ", ".join(FAILING) + ".")
            local = firing["EgressLocalEgressFailure", "branch-1"]["annotations"]["description"]
            assert local.startswith("Vantage branch-1 fails 4 probe(s) of group umbrella-dns")
            for probe in FAILING:
                assert probe.replace(" udp ", " ") in local

            lab.stop(agents["branch-2"])
            firing = _wait_firing(lab, central, {*LOCAL_FAILURE, SILENT}, lambda _: True)
            _only_at(firing, "branch-2", {SILENT})
            _only_at(firing, "branch-1", LOCAL_FAILURE)
            assert (
                firing["EgressDnsProtectionLost", "branch-1"]["annotations"] == lost["annotations"]
            )
            assert (
                firing["EgressLocalEgressFailure", "branch-1"]["annotations"]["description"]
                == local
            )
            silent = firing[SILENT]["annotations"]["description"]
            assert silent.startswith("Nothing has arrived from vantage branch-2 for ")
