"""How accurate is the dns kind's ``request`` phase? Measured minus true RTT, p50 and p99.

Builds the lab (needs root), runs the Umbrella-like responder on 208.67.222.222:53 in the
cloud namespace holding every reply DELAY_MS after the kernel received the query, and runs
UDP exchanges from the client namespace, 1 and 500 in flight. The responder writes into each
reply how long it actually held it (kernel receive timestamp to just before sending), so
"true RTT" is that hold; the error therefore also contains the two veth hops through the
firewall namespace (tens of microseconds). Each run is done with the kernel receive timestamp
(SO_TIMESTAMPNS, the default on Linux) and with the userland monotonic clock.

Usage: sudo /tmp/venv/bin/python bench/dns_accuracy.py [--delay-ms 20] [--samples 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import dns.message

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from exporter.probes import dns as dns_kind
from exporter.results import PhaseTimer
from lab import LAB_DIR, build_lab, in_namespace

SERVER = "208.67.222.222"


async def _one(config: dns_kind.DnsProbe) -> float:
    """One exchange: measured request time minus the responder's hold, in seconds."""
    query = dns.message.make_query(config.query.name, "TXT")
    timer = PhaseTimer()
    wire = await dns_kind._udp_exchange(config, query.to_wire(), timer)  # noqa: SLF001
    [text] = dns_kind.answer_texts(dns.message.from_wire(wire))
    held = int(text.removeprefix("hold_ns ")) / 1e9
    return timer.durations["request"] - held


async def _measure(in_flight: int, samples: int) -> list[float]:
    config = dns_kind.DnsProbe.model_validate(
        {
            "name": "bench",
            "kind": "dns",
            "server": SERVER,
            "query": {"name": "bench.lab.test", "type": "TXT"},
        }
    )
    errors: list[float] = []
    while len(errors) < samples:
        errors += await asyncio.gather(*(_one(config) for _ in range(in_flight)))
        if in_flight > 1:
            await asyncio.sleep(0.05)  # let both sides drain between bursts
    return errors


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    with build_lab() as lab:
        lab.start(
            lab.cloud,
            sys.executable,
            str(LAB_DIR / "umbrella_responder.py"),
            f"{SERVER}:53",
            "--provider-seed",
            "00" * 32,
            "--delay-ms",
            str(args.delay_ms),
            ready_port=(SERVER, 53),
        )
        print(
            f"dns kind, UDP, reply held {args.delay_ms:g} ms by the responder; "
            f"error = measured - true RTT, {args.samples} samples per row"
        )
        print(f"{'clock':<22}{'in flight':>10}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
        for kernel in (True, False):
            dns_kind._KERNEL_TIMESTAMPS = kernel  # noqa: SLF001 - compare both clocks
            clock = "kernel SO_TIMESTAMPNS" if kernel else "userland monotonic"
            for in_flight in (1, 500):

                def measure(n: int = in_flight) -> list[float]:
                    return asyncio.run(_measure(n, args.samples))

                errors = in_namespace(lab.client, measure)
                print(
                    f"{clock:<22}{in_flight:>10}{_percentile(errors, 0.5) * 1e3:>10.3f}"
                    f"{_percentile(errors, 0.99) * 1e3:>10.3f}"
                    f"{statistics.fmean(errors) * 1e3:>10.3f}"
                )


if __name__ == "__main__":
    main()
