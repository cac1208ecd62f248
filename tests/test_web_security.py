"""The web endpoints under a web config, with real clients on loopback: curl and Prometheus.

Every exporter here is a subprocess on 127.0.0.1 (lab.exporter_process); certificates come from
trustme; Prometheus is Debian's.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme
from aiohttp import ClientSession, ClientTimeout, web
from aiohttp.test_utils import TestServer
from conftest import require

from exporter import weblisten, websecurity
from exporter.webconfig import LiveWebConfig, load_web_config
from exporter.websecurity import WebGuard
from exporter.webtls import listener_tls
from lab.exporter_process import Exporter, basic, free_port, runs, write_config

FAST_HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()


@dataclass
class Pki:
    """Files for a TLS exporter with client certificates."""

    directory: Path
    ca: Path
    server: Path  # key and certificate chain in one file
    client_cert: Path
    client_key: Path
    other_cert: Path  # trusted, but with a SAN that client_allowed_sans does not list
    other_key: Path
    rogue_cert: Path  # signed by a CA the exporter does not trust
    rogue_key: Path


def _issue(ca: trustme.CA, name: str, directory: Path, stem: str) -> tuple[Path, Path]:
    cert = ca.issue_cert(name)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path, test_ca: trustme.CA, rogue_ca: trustme.CA) -> Pki:
    test_ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    test_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    return Pki(
        tmp_path,
        tmp_path / "ca.pem",
        tmp_path / "server.pem",
        *_issue(test_ca, "prometheus.client", tmp_path, "client"),
        *_issue(test_ca, "other.client", tmp_path, "other"),
        *_issue(rogue_ca, "prometheus.client", tmp_path, "rogue"),
    )


@pytest.fixture
def start(tmp_path: Path, listener: int) -> Iterator[type[Exporter]]:
    started: list[Exporter] = []

    def make(web_config: str | None, *args: str, **kwargs: Any) -> Exporter:
        config = write_config(tmp_path / "c.yml", listener, "alpha")
        flags = list(args)
        if web_config is not None:
            (tmp_path / "web.yml").write_text(web_config)
            flags.append(f"--web.config.file={tmp_path / 'web.yml'}")
        exporter = Exporter(
            config, *flags, log_path=tmp_path / f"exporter-{len(started)}.log", **kwargs
        )
        started.append(exporter)
        return exporter

    yield make  # type: ignore[misc]
    for exporter in started:
        exporter.stop()


def _curl(url: str, *args: str) -> tuple[int, str, str]:
    """(curl's exit status, HTTP status or 000, body) of one request."""
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", *args, url],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    body, _, code = done.stdout.rpartition("\n")
    return done.returncode, code, body


@pytest.fixture
def curl() -> None:
    require(None if shutil.which("curl") else "needs 'curl' (Debian: curl)")


def _mtls_config(pki: Pki, sans: bool = False) -> str:
    allowed = "  client_allowed_sans: [prometheus.client]\n" if sans else ""
    return (
        f"tls_server_config:\n  cert_file: {pki.server.name}\n  key_file: {pki.server.name}\n"
        f"  client_ca_file: {pki.ca.name}\n  client_auth_type: RequireAndVerifyClientCert\n"
        f"{allowed}"
        "http_server_config:\n"
        "  headers: {X-Frame-Options: deny, X-Content-Type-Options: nosniff}\n"
        f"basic_auth_users:\n  prometheus: {FAST_HASH}\n"
    )


def test_tls_client_certificates_and_basic_auth_with_curl(start, pki: Pki, curl) -> None:
    client = ssl.create_default_context(cafile=str(pki.ca))
    client.load_cert_chain(pki.client_cert, pki.client_key)
    exporter = start(_mtls_config(pki), client_tls=client, headers=basic("prometheus", "secret"))
    url = exporter.url
    trusted = [
        "--cacert",
        str(pki.ca),
        "--cert",
        str(pki.client_cert),
        "--key",
        str(pki.client_key),
    ]

    assert _curl(url + "/metrics", *trusted)[:2] == (0, "401")
    assert _curl(url + "/metrics", *trusted, "-u", "prometheus:wrong")[:2] == (0, "401")
    assert _curl(url + "/metrics", *trusted, "-u", "nobody:secret")[:2] == (0, "401")
    status, code, body = _curl(url + "/metrics", *trusted, "-u", "prometheus:secret")
    assert (status, code) == (0, "200")
    assert "egress_probes_total{" in body
    assert _curl(url + "/-/healthy", *trusted)[1:] == ("200", "Healthy.\n")

    # The TLS layer refuses before HTTP: no certificate, an untrusted one, or plain HTTP.
    for refused in (
        ("--cacert", str(pki.ca)),
        ("--cacert", str(pki.ca), "--cert", str(pki.rogue_cert), "--key", str(pki.rogue_key)),
    ):
        status, code, _ = _curl(url + "/-/healthy", *refused, "-u", "prometheus:secret")
        assert status != 0
        assert code == "000"
    assert _curl(url.replace("https", "http") + "/-/healthy")[1] == "000"

    headers = subprocess.run(
        ["curl", "-sS", "-D", "-", "-o", "/dev/null", *trusted, url + "/metrics"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout.lower()
    assert "www-authenticate: basic" in headers
    assert "x-frame-options: deny" in headers
    assert "x-content-type-options: nosniff" in headers
    assert "Traceback" not in exporter.log()


def test_client_allowed_sans(start, pki: Pki, curl) -> None:
    client = ssl.create_default_context(cafile=str(pki.ca))
    client.load_cert_chain(pki.client_cert, pki.client_key)
    exporter = start(_mtls_config(pki, sans=True), client_tls=client)
    auth = ("--cacert", str(pki.ca), "-u", "prometheus:secret")
    allowed = ("--cert", str(pki.client_cert), "--key", str(pki.client_key))
    other = ("--cert", str(pki.other_cert), "--key", str(pki.other_key))
    assert _curl(exporter.url + "/metrics", *auth, *allowed)[1] == "200"
    assert _curl(exporter.url + "/metrics", *auth, *other)[1] == "403"


def _start_prometheus(
    directory: Path, scrape: dict[str, object]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]}
    (directory / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    with (directory / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return proc, f"http://127.0.0.1:{port}"


def _query(url: str, expr: str) -> list[dict[str, object]]:
    try:
        with urllib.request.urlopen(
            f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=5
        ) as response:
            return json.load(response)["data"]["result"]
    except OSError:  # not listening yet, or 503 while its storage opens
        return []


def test_prometheus_scrapes_with_basic_auth_and_client_certificate(
    start, pki: Pki, tmp_path: Path, stack_tools
) -> None:
    client = ssl.create_default_context(cafile=str(pki.ca))
    client.load_cert_chain(pki.client_cert, pki.client_key)
    exporter = start(_mtls_config(pki, sans=True), client_tls=client)
    (tmp_path / "password").write_text("secret\n")
    scrape: dict[str, object] = {
        "job_name": "egress",
        "scheme": "https",
        "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "password")},
        "tls_config": {
            "ca_file": str(pki.ca),
            "cert_file": str(pki.client_cert),
            "key_file": str(pki.client_key),
        },
        "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}],
    }
    prometheus, url = _start_prometheus(tmp_path, scrape)
    try:
        deadline = time.monotonic() + 60
        result: list[dict[str, object]] = []
        while time.monotonic() < deadline and not result:
            result = _query(url, 'egress_probes_total{job="egress",probe="alpha"} > 0')
            time.sleep(0.5)
        assert result, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert _query(url, 'up{job="egress"}')[0]["value"][1] == "1"  # type: ignore[index]
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=10)


def test_basic_auth_guards_every_endpoint_but_health(start, curl) -> None:
    exporter = start(f"basic_auth_users:\n  alice: {FAST_HASH}\n", "--web.enable-lifecycle")
    for path in ("/", "/metrics", "/no-such-page", "/-/reload"):
        method = "POST" if path == "/-/reload" else "GET"
        assert exporter.request(path, method)[0] == 401, path
        assert exporter.request(path, method, basic("alice", "wrong"))[0] == 401, path
    for path in ("/", "/metrics"):
        assert exporter.request(path, headers=basic("alice", "secret"))[0] == 200
    assert exporter.post("/-/reload", basic("alice", "secret")) == (200, "Reloaded.\n")
    assert exporter.get("/-/healthy") == (200, "Healthy.\n")
    assert exporter.get("/-/ready") == (200, "Ready.\n")


def test_web_config_edits_apply_without_restart_and_a_broken_file_fails_closed(
    start, tmp_path: Path
) -> None:
    exporter = start(f"basic_auth_users:\n  alice: {FAST_HASH}\n")
    new_hash = bcrypt.hashpw(b"rotated", bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  alice: {new_hash}\n")
    assert exporter.request("/metrics", headers=basic("alice", "secret"))[0] == 401
    assert exporter.request("/metrics", headers=basic("alice", "rotated"))[0] == 200

    (tmp_path / "web.yml").write_text("basic_auth_users:\n  alice: [not, a, hash]\n")
    for _ in range(3):
        status, text = exporter.request("/metrics", headers=basic("alice", "rotated"))
        assert status == 500
        assert "web config file is invalid" in text
    assert exporter.get("/")[0] == 500  # no door opens: not even without credentials
    assert exporter.get("/-/healthy")[0] == 200
    assert exporter.log().count("web config invalid") == 1  # once, not once per request
    assert "web.yml:2: basic_auth_users.alice" in exporter.log()

    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  alice: {new_hash}\n")
    assert exporter.request("/metrics", headers=basic("alice", "rotated"))[0] == 200
    assert exporter.get("/metrics")[0] == 401


def test_rate_limit_answers_429(start) -> None:
    exporter = start("rate_limit: {interval: 1h, burst: 3}\n")  # start-up's health check took one
    assert [exporter.get("/metrics")[0] for _ in range(3)] == [200, 200, 429]


def test_bad_web_config_is_a_clear_error_at_start(tmp_path: Path) -> None:
    (tmp_path / "web.yml").write_text("tls_server_config:\n  min_version: TLS14\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--web.config.file={tmp_path / 'web.yml'}",
            "--config.check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"{tmp_path / 'web.yml'}:2: tls_server_config.min_version: unknown TLS version 'TLS14' "
        "(known: TLS10, TLS11, TLS12, TLS13)\n"
    )


def test_reload_cannot_be_triggered_cross_site(start, tmp_path: Path, listener: int, curl) -> None:
    exporter = start(None, "--web.enable-lifecycle")
    write_config(tmp_path / "c.yml", listener, "alpha", "beta")
    reload_url = exporter.url + "/-/reload"
    refused = [
        (("-H", "Origin: http://evil.example"), "403"),
        (("-H", "Origin: null"), "403"),
        (("-H", "Sec-Fetch-Site: cross-site"), "403"),
        (("-d", "x=1"), "415"),  # a form: the simple request a cross-site page can send
        (("-H", "Content-Type: text/plain", "--data-binary", "x"), "415"),
    ]
    for args, code in refused:
        assert _curl(reload_url, "-X", "POST", *args)[1] == code, args
    assert "egress_probes_configured 1\n" in exporter.get("/metrics")[1]  # still alpha only
    assert _curl(reload_url, "-X", "POST", "-H", f"Origin: {exporter.url}")[1] == "200"
    assert "egress_probes_configured 2\n" in exporter.get("/metrics")[1]
    assert _curl(reload_url, "-X", "POST")[1:] == ("200", "Reloaded.\n")


async def _status(port: int, auth: str) -> tuple[int, bool]:
    """(HTTP status, whether Retry-After came) of one GET /metrics with ``auth``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return int(head.split()[1]), b"\r\nretry-after:" in head.lower()


def test_wrong_passwords_cannot_refuse_a_verified_scraper(start) -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(10)).decode()  # ~70 ms per check
    exporter = start(f"basic_auth_users:\n  alice: {hashed}\n", "--web.max-requests=3")
    valid = basic("alice", "secret")["Authorization"]
    assert exporter.request("/metrics", headers={"Authorization": valid})[0] == 200  # cached

    async def flood() -> tuple[list[int], list[tuple[int, bool]]]:
        stop, wrong = asyncio.Event(), []

        async def attacker(number: int) -> None:
            for attempt in range(1000):  # far more distinct passwords than the cache holds
                if stop.is_set():
                    return
                auth = basic("alice", f"wrong-{number}-{attempt}")["Authorization"]
                wrong.append(await _status(exporter.port, auth))

        attackers = [asyncio.create_task(attacker(number)) for number in range(30)]
        scrapes = []
        for _ in range(20):
            await asyncio.sleep(0.1)
            scrapes.append((await _status(exporter.port, valid))[0])
        stop.set()
        await asyncio.gather(*attackers)
        return scrapes, wrong

    scrapes, wrong = asyncio.run(flood())
    assert scrapes == [200] * 20
    assert len(wrong) > 100
    assert {status for status, _ in wrong} == {401, 503}  # uncached checks beyond the queue
    assert all(retry for status, retry in wrong if status == 503)


async def test_max_requests_answers_503_beyond_the_limit() -> None:
    release, all_held = asyncio.Event(), asyncio.Event()
    arrived = 0

    async def held(_: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            all_held.set()
        await release.wait()
        return web.Response(text="done\n")

    app = web.Application(middlewares=websecurity.middlewares(WebGuard(None, 3, False)))
    app.router.add_get("/", held)
    timeout = ClientTimeout(total=30)
    async with (
        TestServer(app, host="127.0.0.1") as server,
        ClientSession(timeout=timeout) as session,
    ):
        first = [asyncio.create_task(session.get(server.make_url("/"))) for _ in range(3)]
        await asyncio.wait_for(all_held.wait(), 30)  # every slot taken, whatever the load
        async with session.get(server.make_url("/")) as refused:
            assert (refused.status, refused.headers["Retry-After"]) == (503, "1")
        release.set()
        for response in await asyncio.gather(*first):
            assert response.status == 200
            response.release()


def _spied_checks(monkeypatch) -> list[tuple[bytes, bytes]]:
    """The (password, hash) pairs bcrypt checks from now on (the real check runs)."""
    checked: list[tuple[bytes, bytes]] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked.append((password, hashed))
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    return checked


def test_unknown_user_costs_a_bcrypt_check_too(monkeypatch) -> None:
    costly = bcrypt.hashpw(b"secret", bcrypt.gensalt(6)).decode()
    checked = _spied_checks(monkeypatch)
    users = {"alice": FAST_HASH, "bob": costly}
    authenticator = websecurity.BasicAuthenticator()
    header = basic("mallory", "secret")["Authorization"]
    assert asyncio.run(authenticator.verify(users, header)) is False
    assert checked == [(b"secret", costly.encode())]  # the costliest hash: as slow as a user's
    assert asyncio.run(authenticator.verify(users, basic("bob", "secret")["Authorization"]))
    assert asyncio.run(authenticator.verify(users, basic("bob", "secret")["Authorization"]))
    assert len(checked) == 2  # the second success came from the cache


async def _verify_at_once(headers: list[str], users: dict[str, str]) -> list[object]:
    authenticator = websecurity.BasicAuthenticator()
    try:
        calls = [authenticator.verify(users, header) for header in headers]
        return await asyncio.gather(*calls, return_exceptions=True)
    finally:
        authenticator.close()


def test_scrapers_with_the_same_credentials_at_once_share_one_check(monkeypatch) -> None:
    """After a restart every scraper arrives uncached: one bcrypt answers them all, none 503."""
    checked = _spied_checks(monkeypatch)
    users = {"alice": bcrypt.hashpw(b"secret", bcrypt.gensalt(8)).decode()}
    scrapers = websecurity.MAX_PENDING_CHECKS * 3
    header = basic("alice", "secret")["Authorization"]
    assert asyncio.run(_verify_at_once([header] * scrapers, users)) == [True] * scrapers
    assert [password for password, _ in checked] == [b"secret"]


def test_a_scraper_that_goes_away_does_not_cancel_the_shared_check(monkeypatch) -> None:
    checked = _spied_checks(monkeypatch)
    users = {"alice": bcrypt.hashpw(b"secret", bcrypt.gensalt(8)).decode()}
    header = basic("alice", "secret")["Authorization"]

    async def main() -> bool:
        authenticator = websecurity.BasicAuthenticator()
        try:
            gone = asyncio.create_task(authenticator.verify(users, header))
            stays = asyncio.create_task(authenticator.verify(users, header))
            await asyncio.sleep(0)  # both wait for the one check
            gone.cancel()
            answer = await stays
            assert await authenticator.verify(users, header)  # cached: no second check
            return answer
        finally:
            authenticator.close()

    assert asyncio.run(main()) is True
    assert [password for password, _ in checked] == [b"secret"]


def test_distinct_uncached_checks_beyond_the_pending_bound_are_busy(monkeypatch) -> None:
    checked = _spied_checks(monkeypatch)
    users = {"alice": bcrypt.hashpw(b"secret", bcrypt.gensalt(8)).decode()}
    bound = websecurity.MAX_PENDING_CHECKS
    guesses = [basic("alice", f"guess-{i}")["Authorization"] for i in range(bound + 4)]
    answers = asyncio.run(_verify_at_once(guesses, users))
    assert answers[:bound] == [False] * bound
    assert all(isinstance(a, websecurity.ChecksBusyError) for a in answers[bound:])
    assert len(checked) == bound


def test_request_head_and_body_limits(start, tmp_path: Path, curl) -> None:
    exporter = start(None, "--web.enable-lifecycle")
    assert _curl(exporter.url + "/metrics", "-H", "X-Big: " + "a" * 9000)[1] == "400"
    body = tmp_path / "body"
    body.write_bytes(b"\0" * (websecurity.MAX_BODY_BYTES + 1))
    args = ("-X", "POST", "-H", "Content-Type: application/octet-stream", "--data-binary")
    assert _curl(exporter.url + "/-/reload", *args, f"@{body}")[1] == "413"
    assert exporter.get("/-/healthy")[0] == 200


def _low_limit(soft: int, hard: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def _open_idle(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(sock)
    return sockets


@pytest.fixture
def many_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4096:
        require(f"needs a hard open-files limit of 4096, not {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))


def _sample(body: str, metric: str, **labels: str) -> float:
    """The value of the one ``metric`` sample carrying ``labels`` in a scrape."""
    wanted = [f'{name}="{value}"' for name, value in labels.items()]
    for line in body.splitlines():
        if line.startswith(metric + "{") and all(label in line for label in wanted):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {metric} {labels}")


def _probing(exporter: Exporter, runs_at_least: float) -> str:
    """A scrape in which alpha has run ``runs_at_least`` times and its last run succeeded."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, body = exporter.get("/metrics")
        assert status == 200
        if runs(body, "alpha") >= runs_at_least and _sample(
            body, "egress_probe_success", probe="alpha"
        ):
            return body
        time.sleep(0.1)
    raise AssertionError(f"alpha did not reach {runs_at_least} runs with success: {body}")


def test_1100_idle_connections_leave_metrics_and_probes_working(start, many_descriptors) -> None:
    exporter = start(None, preexec_fn=_low_limit(1024, 4096))
    before = _probing(exporter, 1)
    idle = _open_idle(exporter.port, 1100)
    try:
        time.sleep(0.5)  # let the exporter accept them all
        after = _probing(exporter, runs(before, "alpha") + 5)
        # A failure reason's counter appears with its first failure: alpha has none.
        assert 'egress_probe_failures_total{probe="alpha"' not in after
    finally:
        for sock in idle:
            sock.close()
    log = exporter.log()
    assert 'msg="Open files limit" limit=4096' in log
    assert "Traceback" not in log
    assert "cannot accept" not in log


def test_idle_connections_leave_descriptors_for_the_probes(start, many_descriptors) -> None:
    exporter = start(None, preexec_fn=_low_limit(256, 256))
    before = _probing(exporter, 1)
    idle = _open_idle(exporter.port, 350)  # more than the 256 descriptors the exporter has
    try:
        time.sleep(3)  # three probe intervals with every client descriptor taken
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.5)  # let the exporter see them close
    after = _probing(exporter, runs(before, "alpha") + 3)
    assert 'egress_probe_failures_total{probe="alpha"' not in after  # no EMFILE, no failure
    log = exporter.log()
    assert log.count("closing new connections: 128 descriptors in use") == 1, log[-3000:]
    assert "Traceback" not in log
    assert "cannot accept" not in log


def test_accept_errors_are_one_warning_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    handler = weblisten.AcceptErrorLog(interval=10, clock=lambda: clock[0])
    loop = asyncio.new_event_loop()
    try:
        for now in (0.0, 1.0, 9.0, 10.0):
            clock[0] = now
            handler(loop, {"exception": OSError(24, "Too many open files")})
    finally:
        loop.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "exporter.weblisten"]
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert warnings == [
        f"cannot accept connections: Too many open files (open files limit {limit}); "
        f"{count} failed accepts since the last warning"
        for count in (1, 3)
    ]


def _raw(port: int, data: bytes) -> bytes:
    """The status line the server answers ``data`` with."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return sock.makefile("rb").readline()


def test_malformed_requests_are_one_warning_not_a_traceback_each(start) -> None:
    exporter = start(None)
    bad = [b"GET /\x01 HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n"]
    for number in range(100):
        assert _raw(exporter.port, bad[number % 2]).startswith(
            (b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")
        )
    assert exporter.get("/-/healthy")[0] == 200
    log = exporter.log()
    assert "Traceback" not in log
    assert "Error handling request" not in log
    assert log.count("malformed HTTP requests answered 400: 1 since the last warning") == 1


async def test_handler_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(_: web.Request) -> web.Response:
        raise RuntimeError("a bug in a handler")

    server_log = logging.getLogger("aiohttp.server")
    bad_requests = weblisten.BadRequestLog()
    server_log.addFilter(bad_requests)
    app = web.Application()
    app.router.add_get("/", broken)
    try:
        async with TestServer(app, host="127.0.0.1") as server, ClientSession() as session:
            async with session.get(server.make_url("/")) as response:
                assert response.status == 500
            assert server.port is not None
            status = await asyncio.to_thread(_raw, server.port, b"GET /\x01 HTTP/1.1\r\n\r\n")
            assert status.split()[1] == b"400"
    finally:
        server_log.removeFilter(bad_requests)
    errors = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(errors) == 1  # the bug, not the client's bad request
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)
    assert any("malformed HTTP requests answered 400" in r.getMessage() for r in caplog.records)


async def test_tls_listener_uses_the_certificate_in_force_per_handshake(
    tmp_path: Path, test_ca: trustme.CA
) -> None:
    server_pem = tmp_path / "server.pem"
    test_ca.issue_cert("first.example").private_key_and_cert_chain_pem.write_to_path(
        str(server_pem)
    )
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n"
        "  curve_preferences: [CurveP384]\n"
    )
    live = LiveWebConfig(load_web_config(web))

    async def hello(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hello, "127.0.0.1", 0, ssl=listener_tls(live))
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context()
    test_ca.configure_trust(client)
    client.check_hostname = False

    async def peer_names(context: ssl.SSLContext = client) -> set[str]:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        cert = writer.get_extra_info("peercert")
        writer.close()
        return {value for _, value in cert["subjectAltName"]}

    try:
        assert await peer_names() == {"first.example"}
        test_ca.issue_cert("second.example").private_key_and_cert_chain_pem.write_to_path(
            str(server_pem)
        )
        assert await peer_names() == {"second.example"}  # no restart, no new listener
        p256_only = ssl.create_default_context()
        test_ca.configure_trust(p256_only)
        p256_only.check_hostname = False
        p256_only.set_ecdh_curve("prime256v1")
        with pytest.raises((ssl.SSLError, ConnectionResetError)):  # the server aborts
            await peer_names(p256_only)
    finally:
        server.close()
        await server.wait_closed()


def test_a_family_the_host_lacks_is_skipped_when_listening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A kernel booted with ipv6.disable=1 refuses AF_INET6 sockets: listen on IPv4 alone.
    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", no_ipv6)
    listeners = weblisten.listen(None, 0, 4096)
    try:
        assert [listener.family for listener in listeners] == [socket.AF_INET]
    finally:
        for listener in listeners:
            listener.close()
    with pytest.raises(OSError, match="not supported"):
        weblisten.listen("::1", 0, 4096)
