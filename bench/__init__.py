"""The side-by-side benchmark of egress-exporter against blackbox_exporter (see README.md)."""
