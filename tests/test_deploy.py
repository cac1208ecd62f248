"""deploy/ without Docker or Kubernetes: every file parses, every mount exists, configs check.

The agent configs run for real in tests/test_fleet_e2e_lab.py; here promtool checks them, and the
Alloy config is held to the same settings as the Prometheus agent's.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import load

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OPERATOR = KUBERNETES / "operator"
AGENT = DEPLOY / "agent"
RULES = ROOT / "alerts" / "egress.rules.yml"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = _yaml(DEPLOY / "compose.yaml")
    return compose


def _bind_mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts (named volumes skipped)."""
    mounts = {}
    for volume in _compose()["services"][service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def _host_path(service: str, container_path: str) -> Path:
    """Where a path inside a compose container comes from on the host."""
    for target, source in sorted(_bind_mounts(service).items(), key=lambda m: -len(m[0])):
        if container_path == target or container_path.startswith(target + "/"):
            return source / container_path.removeprefix(target).lstrip("/")
    raise AssertionError(f"{container_path} is not mounted into {service}")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def test_compose_has_the_stack() -> None:
    services = _compose()["services"]
    assert {"prometheus", "alertmanager", "grafana"} <= set(services)
    exporters = [name for name in services if name.startswith("exporter-")]
    assert len(exporters) == 2


def test_every_bind_mount_and_build_context_exists() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for target, source in _bind_mounts(name).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
        if "build" in service:
            context = DEPLOY / service["build"]
            assert (context / "Dockerfile").is_file(), name
    assert _host_path("grafana", "/etc/grafana/provisioning/datasources").is_dir()


def test_exporters_run_read_only_without_capabilities() -> None:
    services = _compose()["services"]
    for name in (n for n in services if n.startswith("exporter-")):
        service = services[name]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        [config] = [a for a in service["command"] if a.startswith("--config.file=")]
        assert _host_path(name, config.split("=", 1)[1]).is_file()


def test_grafana_provisioning_finds_the_dashboards_and_prometheus() -> None:
    provider = _yaml(_host_path("grafana", "/etc/grafana/provisioning/dashboards/egress.yaml"))
    [entry] = provider["providers"]
    dashboards = _host_path("grafana", entry["options"]["path"])
    assert sorted(p.name for p in dashboards.glob("*.json")) == [
        "egress-exporter-health.json",
        "egress-overview.json",
        "egress-probe-detail.json",
    ]
    home = _compose()["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert _host_path("grafana", home).is_file()
    source = _yaml(_host_path("grafana", "/etc/grafana/provisioning/datasources/prometheus.yaml"))
    [datasource] = source["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in _compose()["services"]["prometheus"]["ports"]


def test_prometheus_scrapes_two_vantage_points_of_the_compose_stack() -> None:
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "egress"]
    services = _compose()["services"]
    vantages = set()
    for static in job["static_configs"]:
        [target] = static["targets"]
        assert target.split(":")[0] in services
        vantages.add(static["labels"]["vantage"])
    assert len(vantages) == 2
    [alertmanager] = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager.split(":")[0] in services


def test_prometheus_config_passes_promtool_with_the_alert_rules(
    tmp_path: Path, stack_tools: None
) -> None:
    """The compose config, with container paths mapped to the repository, as promtool sees it."""
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    rule_files = [_host_path("prometheus", path) for path in config["rule_files"]]
    for path in rule_files:
        assert path.is_file(), f"{path}: the alert rules from alerts/ (issue 6)"
    config["rule_files"] = [str(path) for path in rule_files]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    checked = _run("promtool", "check", "config", str(local))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr


def test_kubernetes_scrape_config_names_the_vantage_point_after_the_node(
    tmp_path: Path, stack_tools: None
) -> None:
    """promtool runs the relabel rules on endpoints as Kubernetes discovery would list them.

    Debian's Prometheus is built without Kubernetes discovery, so the discovered endpoints are
    given as static targets carrying the same ``__meta_kubernetes_*`` labels.
    """
    config = _yaml(KUBERNETES / "prometheus-scrape.yml")
    [job] = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [
        {
            "role": "endpoints",
            "namespaces": {"names": [_manifests()["Namespace"]["metadata"]["name"]]},
        }
    ]
    service = _manifests()["Service"]
    del job["kubernetes_sd_configs"]
    job["static_configs"] = [
        _endpoint("10.0.0.1:10115", service["metadata"]["name"], "metrics", "branch-1-node"),
        _endpoint("10.0.0.2:10115", "another-service", "metrics", "branch-2-node"),
    ]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    checked = _run(
        "promtool", "check", "service-discovery", "--timeout=2s", str(local), job["job_name"]
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    kept = [t["labels"] for t in json.loads(checked.stdout) if t["labels"]]
    assert kept == [
        {
            "__address__": "10.0.0.1:10115",
            "__metrics_path__": "/metrics",
            "__scheme__": "http",
            "__scrape_interval__": "1m",
            "__scrape_timeout__": "10s",
            "instance": "10.0.0.1:10115",
            "job": "egress",
            "vantage": "branch-1-node",
        }
    ]


def _endpoint(address: str, service: str, port: str, node: str) -> dict[str, Any]:
    return {
        "targets": [address],
        "labels": {
            "__meta_kubernetes_service_name": service,
            "__meta_kubernetes_endpoint_port_name": port,
            "__meta_kubernetes_endpoint_node_name": node,
        },
    }


def test_alertmanager_config_passes_amtool(stack_tools: None) -> None:
    checked = _run("amtool", "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _exporter_configs() -> list[tuple[str, str]]:
    paths = [*(DEPLOY / "exporter").glob("*.yml"), KUBERNETES / "config.yml"]
    return [(p.name, p.read_text(encoding="utf-8")) for p in paths]


@pytest.mark.parametrize(("name", "text"), _exporter_configs(), ids=lambda v: v[:20])
def test_exporter_configs_pass_config_check(name: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(text, encoding="utf-8")
    checked = _run(sys.executable, "-m", "exporter", "--config.check", "--config.file", str(path))
    assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"


def _manifests(directory: Path = KUBERNETES) -> dict[str, dict[str, Any]]:
    """Every resource a kustomization lists, by kind, following bases (``..``)."""
    kustomization = _yaml(directory / "kustomization.yaml")
    manifests: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        path = (directory / resource).resolve()
        if path.is_dir():
            manifests |= _manifests(path)
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            manifests[document["kind"]] = document
    return manifests


def test_kubernetes_manifests_one_exporter_per_vantage_point() -> None:
    manifests = _manifests()
    assert {"Namespace", "DaemonSet", "Service"} <= set(manifests)
    daemonset = manifests["DaemonSet"]
    pod = daemonset["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests["Service"]["spec"]["clusterIP"] == "None"
    [container] = pod["spec"]["containers"]
    port = container["ports"][0]["containerPort"]
    assert f"--web.listen-address=:{port}" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    [volume] = pod["spec"]["volumes"]
    [generator] = _yaml(KUBERNETES / "kustomization.yaml")["configMapGenerator"]
    assert volume["configMap"]["name"] == generator["name"]
    [mount] = container["volumeMounts"]
    assert mount["name"] == volume["name"]
    assert f"--config.file={mount['mountPath']}/config.yml" in container["args"]


def test_kubernetes_pod_is_non_root_with_a_read_only_root_filesystem() -> None:
    pod = _manifests()["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_kubernetes_config_change_rolls_the_pods() -> None:
    """The ConfigMap is generated with a content hash in its name, which the pod template uses.

    kustomize rewrites the DaemonSet's reference to the hashed name, so a new config is a new
    pod template: the DaemonSet rolls its pods (the exporter reads its config at start).
    """
    kustomization = _yaml(KUBERNETES / "kustomization.yaml")
    [generator] = kustomization["configMapGenerator"]
    assert generator["files"] == ["config.yml"]
    assert (KUBERNETES / "config.yml").is_file()
    assert not generator.get("options", {}).get("disableNameSuffixHash", False)
    assert not kustomization.get("generatorOptions", {}).get("disableNameSuffixHash", False)
    assert "ConfigMap" not in _manifests(), "a static ConfigMap would not roll the pods"


def test_kubernetes_image_is_named_by_the_kustomization() -> None:
    """No public image exists: the kustomization names the user's build of the Dockerfile."""
    [container] = _manifests()["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    [image] = _yaml(KUBERNETES / "kustomization.yaml")["images"]
    assert image["name"] == container["image"]
    assert image["newName"].endswith("/egress-exporter")
    assert image["newTag"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"docker build -t {image['newName']}:{image['newTag']} ." in readme
    assert f"docker push {image['newName']}:{image['newTag']}" in readme


def test_podmonitor_scrapes_the_daemonset_pods_with_the_node_as_vantage() -> None:
    manifests = _manifests(OPERATOR)
    assert {"DaemonSet", "PodMonitor", "PrometheusRule"} <= set(manifests)
    pod = manifests["DaemonSet"]["spec"]["template"]
    monitor = manifests["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [endpoint] = monitor["podMetricsEndpoints"]
    [container] = pod["spec"]["containers"]
    assert endpoint["port"] in {port["name"] for port in container["ports"]}
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_node_name"],
        "targetLabel": "vantage",
    } in endpoint["relabelings"]
    # The operator's job, "<namespace>/<name>", must match the rules' job selector.
    namespace = _yaml(OPERATOR / "kustomization.yaml")["namespace"]
    job = f"{namespace}/{manifests['PodMonitor']['metadata']['name']}"
    assert re.fullmatch(".*egress.*", job)


def _prometheus_rule_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "egress_prometheusrule", OPERATOR / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_is_generated_from_the_rules_file() -> None:
    committed = (OPERATOR / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == _prometheus_rule_generator().render(), (
        "prometheusrule.yaml is stale: run `python deploy/kubernetes/operator/generate.py`"
    )
    assert _yaml(OPERATOR / "prometheusrule.yaml")["spec"]["groups"] == _yaml(RULES)["groups"]


def test_prometheusrule_groups_pass_promtool(tmp_path: Path, stack_tools: None) -> None:
    groups = _yaml(OPERATOR / "prometheusrule.yaml")["spec"]
    path = tmp_path / "groups.yml"
    path.write_text(yaml.safe_dump(groups), encoding="utf-8")
    checked = _run("promtool", "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        f"SUCCESS: {sum(len(g['rules']) for g in groups['groups'])} rules found" in checked.stdout
    )


def test_agent_config_passes_promtool_in_agent_mode(stack_tools: None) -> None:
    checked = _run("promtool", "check", "config", "--agent", str(AGENT / "prometheus-agent.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = _yaml(AGENT / "prometheus-agent.yml")
    assert config["global"]["external_labels"]["vantage"]
    [job] = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["localhost:10115"]}]
    [remote] = config["remote_write"]
    assert remote["url"].endswith("/api/v1/write")


def test_central_config_passes_promtool_with_the_alert_rules(
    tmp_path: Path, stack_tools: None
) -> None:
    """The receiver runs the shipped rules and accepts samples as late as the agents keep them."""
    config = _yaml(AGENT / "central.yml")
    assert [Path(path).name for path in config["rule_files"]] == [RULES.name]
    config["rule_files"] = [str(RULES)]
    local = tmp_path / "central.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    checked = _run("promtool", "check", "config", str(local))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    window = config["storage"]["tsdb"]["out_of_order_time_window"]
    retention = "--storage.agent.retention.max-time="
    agent = (AGENT / "prometheus-agent.yml").read_text(encoding="utf-8")
    assert f"{retention}{window}" in agent
    assert f'max_keepalive_time = "{window}"' in (AGENT / "config.alloy").read_text()


# `name = value` inside Alloy blocks, with the block path: {"prometheus.scrape.egress.job_name":
# '"egress"', ...}; enough of Alloy's syntax for the file this repository ships (one setting or
# block per line, comments on their own lines).
_ALLOY_BLOCK = re.compile(r'^\s*([\w.]+)(?:\s+"([\w-]+)")?\s*\{\s*$')
_ALLOY_SETTING = re.compile(r"^\s*(\w+)\s*=\s*(.+?)\s*$")


def _alloy_settings(text: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    path: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("//"):  # comments on their own lines ("//" is in URLs)
            continue
        if block := _ALLOY_BLOCK.match(line):
            path.append(".".join(filter(None, block.groups())))
        elif line.strip() == "}":
            path.pop()
        elif setting := _ALLOY_SETTING.match(line):
            settings[".".join([*path, setting.group(1)])] = setting.group(2)
    assert not path, "unbalanced braces"
    return settings


def test_alloy_config_ships_like_the_prometheus_agent() -> None:
    """The same job, target, interval, vantage label, receiver, retries and WAL age."""
    alloy = _alloy_settings((AGENT / "config.alloy").read_text(encoding="utf-8"))
    agent = _yaml(AGENT / "prometheus-agent.yml")
    [job] = agent["scrape_configs"]
    [remote] = agent["remote_write"]
    [target] = job["static_configs"][0]["targets"]
    scrape, write = "prometheus.scrape.egress", "prometheus.remote_write.central"
    assert alloy[f"{scrape}.targets"] == f'[{{"__address__" = "{target}"}}]'
    assert alloy[f"{scrape}.job_name"] == f'"{job["job_name"]}"'
    assert alloy[f"{scrape}.scrape_interval"] == f'"{agent["global"]["scrape_interval"]}"'
    assert alloy[f"{scrape}.forward_to"] == f"[{write}.receiver]"
    vantage = agent["global"]["external_labels"]["vantage"]
    assert alloy[f"{write}.external_labels"] == f'{{"vantage" = "{vantage}"}}'
    assert alloy[f"{write}.endpoint.url"] == f'"{remote["url"]}"'
    assert (
        alloy[f"{write}.endpoint.basic_auth.username"] == f'"{remote["basic_auth"]["username"]}"'
    )
    for name, value in remote["queue_config"].items():
        expected = str(value).lower() if isinstance(value, bool) else f'"{value}"'
        assert alloy[f"{write}.endpoint.queue_config.{name}"] == expected, name


def test_compose_demo_runs_only_the_vendor_presets() -> None:
    """The demo must not page out of the box: no probe of the site's own (a corporate proxy
    that does not resolve on the demo host fails at both sites: a critical vendor alert).
    """
    presets_only = load(None).probes
    for path in (DEPLOY / "exporter").glob("*.yml"):
        assert load(str(path)).probes == presets_only, path.name
