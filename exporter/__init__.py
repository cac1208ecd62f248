"""egress-exporter: probes the cloud egress paths that endpoint-security agents depend on."""

__version__ = "0.1.0"
