"""The ``http`` kind without the lab: scripted origins and proxies on loopback, in-process.

Each test runs the kind through the engine (``exporter.runner.execute``) against a small
scripted peer on 127.0.0.1 port 0 and asserts the reason, the detail, the phases and the facts;
a property test sends arbitrary bytes and expects a labelled reason, never an internal error.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scripted_servers import Script, connect_proxy, descriptors_exhausted, scripted

from exporter.probes._http1 import MAX_HEAD_BYTES, MAX_INTERIM_RESPONSES
from exporter.probes.http import HttpProbe
from exporter.results import FailureReason, ProbeResult, curl_code
from exporter.runner import execute

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
PROXY_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b"Proxy-Authenticate: Negotiate\r\n"
    b"Proxy-Authenticate: NTLM\r\n"
    b'Proxy-Authenticate: Basic realm="corp, proxy", charset="UTF-8"\r\n'
    b"Content-Length: 0\r\n\r\n"
)


def _probe(url: str, **fields: Any) -> HttpProbe:
    base = {"name": "hc", "kind": "http", "url": url, "timeout": 2, "expect": {"body": "ok"}}
    return HttpProbe.model_validate({**base, **fields})


async def _fetch(script: Script, **fields: Any) -> ProbeResult:
    async with scripted(script) as origin:
        return await execute(_probe(f"http://127.0.0.1:{origin.port}/healthcheck", **fields))


def _bad(result: ProbeResult, fragment: str) -> None:
    assert result.reason == FailureReason.HTTP_BAD_RESPONSE, result.detail
    assert fragment in result.detail, result.detail
    assert curl_code(result.reason) == 8


# -- the answers curl accepts -------------------------------------------------------------------


async def test_plain_answer_with_its_phases_and_facts() -> None:
    result = await _fetch(Script(OK))
    assert result.success, result.detail
    assert {"connect", "first_byte", "transfer"} <= set(result.phases)
    assert result.facts["status_code"] == 200
    assert result.facts["body_bytes"] == 3
    assert result.facts["address"] == "127.0.0.1"
    assert "interim_responses" not in result.facts
    assert [(e.address, e.success) for e in result.endpoints] == [("127.0.0.1", True)]


@pytest.mark.parametrize(
    ("interim", "count"),
    [
        (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n", 1),
        (b"HTTP/1.1 100 Continue\r\n\r\n", 1),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n" * 2, 4),
    ],
)
async def test_interim_responses_are_skipped_and_counted(interim: bytes, count: int) -> None:
    result = await _fetch(Script(interim + OK))
    assert result.success, result.detail
    assert result.facts["status_code"] == 200
    assert result.facts["interim_responses"] == count


async def test_folded_transfer_encoding_is_one_header() -> None:
    folded = b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    result = await _fetch(Script(folded))
    assert result.success, result.detail
    assert result.facts["body_bytes"] == 2


async def test_http_1_0_body_runs_until_the_close() -> None:
    result = await _fetch(Script(b"HTTP/1.0 200 OK\r\n\r\nok"))
    assert result.success, result.detail


async def test_head_reads_no_body() -> None:
    result = await _fetch(Script(OK.replace(b"ok\n", b"")), method="HEAD", expect={})
    assert result.success, result.detail
    assert result.facts["body_bytes"] == 0


async def test_redirect_is_followed_through_its_location() -> None:
    async with scripted(Script(OK)) as target:
        location = f"http://127.0.0.1:{target.port}/healthcheck"
        moved = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        result = await _fetch(Script(moved.encode()), follow_redirects=1)
        assert result.success, result.detail
        not_followed = await _fetch(Script(moved.encode()))
    assert not_followed.reason == FailureReason.HTTP_STATUS
    assert f"redirect to {location} not followed" in not_followed.detail
    assert len(result.endpoints) == 2  # one connection per hop


@pytest.mark.parametrize("host", ["127.1", "0X7F.0.0.1", "2130706433"])
async def test_a_redirect_to_a_legacy_ipv4_host_is_followed_to_its_address(host: str) -> None:
    """curl follows ``Location: http://127.1/`` to 127.0.0.1; c-ares would look "127.1" up."""
    async with scripted(Script(OK)) as target:
        location = f"http://{host}:{target.port}/healthcheck"
        moved = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        result = await _fetch(Script(moved.encode()), follow_redirects=1)
    assert result.success, result.detail
    assert [e.address for e in result.endpoints][-1] == "127.0.0.1"
    assert len(target.requests) == 1


async def test_unchecked_endless_body_stops_at_the_cap() -> None:
    endless = b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000
    result = await _fetch(Script(endless, hold=True), expect={}, max_body_bytes=1000)
    assert result.success, result.detail
    assert result.facts["body_bytes"] == 1001


async def test_checked_body_over_the_cap_is_body_mismatch() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    result = await _fetch(Script(big), max_body_bytes=1000)
    assert result.reason == FailureReason.BODY_MISMATCH
    assert "larger than the 1000 B cap" in result.detail


async def test_answer_past_the_agent_budget_is_slow() -> None:
    result = await _fetch(Script(OK, delay=0.2), agent_budget="50ms")
    assert result.reason == FailureReason.SLOW
    assert "past the agent budget of 50 ms" in result.detail
    assert curl_code(result.reason) == 28


async def test_body_regex_mismatch() -> None:
    result = await _fetch(Script(OK), expect={"body_regex": "^healthy"})
    assert result.reason == FailureReason.BODY_MISMATCH
    assert "body 'ok' does not match /^healthy/" in result.detail


async def test_a_body_regex_that_backtracks_is_a_mismatch_not_a_stall() -> None:
    # ``^(a|a)+$`` takes 2^n steps on n a's and a '!' (tens of seconds for 28): the match gets
    # at most the run's remaining time (capped at 1 s) on the event loop, then gives up.
    body = b"a" * 28 + b"!"
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    result = await _fetch(Script(answer), timeout=2, expect={"body_regex": "^(a|a)+$"})
    assert result.reason == FailureReason.BODY_MISMATCH, result.detail
    assert "body 'aaaa" in result.detail
    assert "/^(a|a)+$/ took too long to match" in result.detail


async def test_a_peer_closing_during_the_tls_handshake_says_so() -> None:
    async with scripted(Script(hang_up=True)) as peer:
        result = await execute(_probe(f"https://127.0.0.1:{peer.port}/healthcheck"))
    assert result.reason == FailureReason.TLS_HANDSHAKE_FAILED, result.detail
    assert result.detail == "TLS handshake: the peer closed the connection during the handshake"
    assert peer.requests[0].startswith(b"\x16\x03")  # it did get a ClientHello


async def test_a_flood_of_interim_responses_is_a_bad_response() -> None:
    flood = b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_INTERIM_RESPONSES + 1) + OK
    result = await _fetch(Script(flood))
    _bad(result, f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses, no final one")
    exact = await _fetch(Script(b"HTTP/1.1 100 Continue\r\n\r\n" * MAX_INTERIM_RESPONSES + OK))
    assert exact.success, exact.detail
    assert exact.facts["interim_responses"] == MAX_INTERIM_RESPONSES


async def test_a_proxy_flooding_interim_responses_is_a_bad_response() -> None:
    flood = b"HTTP/1.1 100 Continue\r\n\r\n" * 2000
    async with scripted(Script(flood, hold=True)) as proxy:
        probe = _probe("https://vendor.test/", proxy={"url": f"http://127.0.0.1:{proxy.port}"})
        result = await execute(probe)
    _bad(result, "more than 10 interim (1xx) responses")


@pytest.mark.parametrize("through_proxy", [False, True])
async def test_running_out_of_descriptors_is_local_resources_exhausted(
    through_proxy: bool,
) -> None:
    # ulimit -n reached: socket() fails with EMFILE, this host's fault and not the path's (and
    # not the proxy's: no proxy_connect_failed).
    async with scripted(Script(OK)) as peer:
        url = f"http://127.0.0.1:{peer.port}/healthcheck"
        fields: dict[str, Any] = {"url": "https://vendor.test/"} if through_proxy else {}
        if through_proxy:
            fields["proxy"] = {"url": url}
        probe = _probe(fields.pop("url", url), **fields)
        with descriptors_exhausted():
            result = await execute(probe)
        assert peer.requests == []  # no connection could be made
        after = await execute(probe)  # descriptors given back: the peer is reached again
    assert result.reason == FailureReason.LOCAL_RESOURCES_EXHAUSTED, result.detail
    assert f"127.0.0.1:{peer.port}: Too many open files" in result.detail
    assert curl_code(result.reason) == 7
    assert len(peer.requests) == 1, after.detail


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        (b"ftp://files.example/x", "is not an absolute http:// or https:// URL"),
        (b"http://[::1", "Invalid IPv6 URL"),  # urljoin itself cannot parse it
        (b"http://[fe80::1%25lo]:1/", "an IPv6 zone (%25...) in a URL is not supported"),
        (b"http://127.0.0.1:99999/", "has an invalid port"),
    ],
)
async def test_redirect_to_an_unusable_url(location: bytes, problem: str) -> None:
    moved = b"HTTP/1.1 301 Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % location
    result = await _fetch(Script(moved), follow_redirects=2)
    assert result.reason == FailureReason.HTTP_STATUS, result.detail
    assert "redirect to an unusable URL" in result.detail
    assert problem in result.detail


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expect": {"status": [200, 99]}}, "[99] are not HTTP status codes"),
        ({"expect": {"body": "ok", "body_regex": "ok"}}, "give 'body' or 'body_regex'"),
        ({"method": "HEAD"}, "a HEAD answer has no body"),
        ({"agent_budget": "3s"}, "agent_budget (3s) must not exceed timeout (2s)"),
        ({"also_system_resolver": True}, "also_system_resolver needs 'resolvers'"),
        ({"fallback_addresses": ["nowhere"]}, "'nowhere' is not an IP address"),
        # urlsplit keeps RFC 6874's %25: the zone would name no interface (never decoded)
        ({"url": "http://[fe80::1%25lo]:1/"}, "url\n  Value error, 'http://[fe80::1%25lo]"),
        (
            {"proxy": {"url": "http://[fe80::1%25eth0]:3128"}},
            "proxy.url\n  Value error, 'http://[fe80::1%25eth0]:3128': an IPv6 zone (%25...)",
        ),
    ],
)
def test_invalid_config_names_the_problem(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        _probe(fields.pop("url", "http://127.0.0.1/"), **fields)


# -- answers that are not HTTP, or broken ---------------------------------------------------


@pytest.mark.parametrize("size", [b"-1", b"0x10", b"1_0", b"fffffffffffffffffffff"])
async def test_bad_chunk_sizes_are_bad_responses(size: bytes) -> None:
    # Held open: a size accepted by mistake would wait for data until the timeout.
    result = await _fetch(Script(CHUNKED + size + b"\r\nok\r\n0\r\n\r\n", hold=True))
    _bad(result, f"malformed response body: illegal chunk header: b'{size.decode()}\\r\\n'")
    assert result.facts["status_code"] == 200


async def test_empty_reply() -> None:
    result = await _fetch(Script(b""))
    _bad(result, "empty reply, the connection closed without an answer (curl 52)")
    assert "first_byte" in result.phases
    assert "status_code" not in result.facts


@pytest.mark.parametrize(
    "banner",
    [b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", b"SSH-2.0-OpenSSH_9.2p1", b"\x16\x03\x01\x00\xa5"],
)
async def test_non_http_banner_left_open_fails_at_once(banner: bytes) -> None:
    # The peer never closes: only recognising the banner can end the run before the timeout.
    result = await _fetch(Script(greeting=banner, hold=True), timeout=10)
    _bad(result, f"not an HTTP answer (curl 1): got {banner!r}")


async def test_status_line_that_is_not_http_left_open_fails_at_once() -> None:
    result = await _fetch(Script(b"HTTP/1.1 OK 200\r\n", hold=True), timeout=10)
    _bad(result, "not an HTTP answer (curl 1): got b'HTTP/1.1 OK 200\\r\\n'")


async def test_closed_in_the_middle_of_the_head() -> None:
    result = await _fetch(Script(b"HTTP/1.1 200 OK\r\nContent-"))
    _bad(result, "malformed response head: peer unexpectedly closed connection")
    assert "got b'HTTP/1.1 200 OK\\r\\nContent-'" in result.detail


async def test_bad_header_line() -> None:
    result = await _fetch(Script(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", hold=True))
    _bad(result, "malformed response head: illegal header line")


async def test_head_larger_than_the_bound() -> None:
    endless_head = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: x\r\n" * (MAX_HEAD_BYTES // 10)
    result = await _fetch(Script(endless_head, hold=True), timeout=10)
    _bad(result, f"response head larger than {MAX_HEAD_BYTES} B")


async def test_body_shorter_than_announced() -> None:
    result = await _fetch(Script(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok"))
    _bad(result, "received 2 bytes, expected 10")
    assert result.facts["body_bytes"] == 2


async def test_reset_stays_connection_reset() -> None:
    result = await _fetch(Script(reset=True))
    assert result.reason == FailureReason.CONNECTION_RESET, result.detail
    assert curl_code(result.reason) == 56


async def test_dripping_head_is_a_timeout_in_first_byte() -> None:
    result = await _fetch(Script(b"HTTP/1.1 200 OK\r\n", hold=True), timeout=0.3)
    assert result.reason == FailureReason.TIMEOUT
    assert "in the first_byte phase" in result.detail


# -- through a proxy ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def origin_tls(test_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    test_ca.issue_cert("healthcheck.test").configure_cert(context)
    return context


async def test_a_redirect_to_another_host_is_checked_against_its_own_name(
    test_ca: trustme.CA, origin_tls: ssl.SSLContext, ca_file: Path
) -> None:
    # tls.server_name belongs to the probe's own host: the redirect target's certificate is
    # checked against the target's name, as the agent would.
    target_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    test_ca.issue_cert("localhost").configure_cert(target_tls)
    async with scripted(Script(OK), tls=target_tls) as target:
        location = f"https://localhost:{target.port}/healthcheck"
        moved = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        async with scripted(Script(moved.encode()), tls=origin_tls) as origin:
            probe = _probe(
                f"https://127.0.0.1:{origin.port}/healthcheck",
                follow_redirects=1,
                address_family="ipv4",
                tls={"ca_file": str(ca_file), "server_name": "healthcheck.test"},
            )
            result = await execute(probe)
    assert result.success, result.detail
    assert len(result.endpoints) == 2


async def _via_proxy(
    answer: bytes, origin_tls: ssl.SSLContext, ca_file: Path, **fields: Any
) -> tuple[ProbeResult, list[bytes]]:
    async with (
        scripted(Script(OK), tls=origin_tls) as origin,
        connect_proxy(answer, origin.port) as proxy,
    ):
        probe = _probe(
            "https://healthcheck.test/healthcheck",
            proxy={"url": f"http://127.0.0.1:{proxy.port}"},
            tls={"ca_file": str(ca_file)},
            **fields,
        )
        return await execute(probe), proxy.requests


async def test_tunnel_then_tls_to_the_origin(origin_tls: ssl.SSLContext, ca_file: Path) -> None:
    established = b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 Connection established\r\n\r\n"
    result, requests = await _via_proxy(established, origin_tls, ca_file)
    assert result.success, result.detail
    assert {"connect", "proxy_connect", "tls", "first_byte", "transfer"} <= set(result.phases)
    assert requests[0].startswith(b"CONNECT healthcheck.test:443 HTTP/1.1\r\n")
    assert b"\r\nhost: healthcheck.test:443\r\n" in requests[0].lower()
    assert result.facts["address"] == "127.0.0.1"
    assert "Egress Lab Test CA" in str(result.facts["tls_issuer"])


async def test_407_names_every_scheme_offered(origin_tls: ssl.SSLContext, ca_file: Path) -> None:
    result, _ = await _via_proxy(PROXY_407, origin_tls, ca_file)
    assert result.reason == FailureReason.PROXY_AUTH_REQUIRED
    assert "proxy wants authentication (Negotiate, NTLM, Basic) for CONNECT" in result.detail
    assert "tls" not in result.phases


async def test_403_is_proxy_denied(origin_tls: ssl.SSLContext, ca_file: Path) -> None:
    denied = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
    result, _ = await _via_proxy(denied, origin_tls, ca_file)
    assert result.reason == FailureReason.PROXY_DENIED
    assert "403 Forbidden" in result.detail


async def test_proxy_answering_garbage_is_a_bad_response(
    origin_tls: ssl.SSLContext, ca_file: Path
) -> None:
    result, _ = await _via_proxy(b"220 mail.example ESMTP\r\n", origin_tls, ca_file)
    _bad(result, "not an HTTP answer (curl 1): got b'220 mail.example ESMTP\\r\\n'")
    assert "proxy_connect" in result.phases


async def test_bytes_after_the_tunnel_answer_are_a_bad_response(
    origin_tls: ssl.SSLContext, ca_file: Path
) -> None:
    chatty = b"HTTP/1.1 200 Connection established\r\n\r\nhello"
    result, _ = await _via_proxy(chatty, origin_tls, ca_file)
    _bad(result, "5 B followed the answer to CONNECT before the tunnel was used")


async def test_plain_http_through_the_proxy_wanting_auth() -> None:
    async with scripted(Script(PROXY_407)) as proxy:
        probe = _probe(
            "http://healthcheck.test/healthcheck", proxy={"url": f"http://127.0.0.1:{proxy.port}"}
        )
        result = await execute(probe)
    assert result.reason == FailureReason.PROXY_AUTH_REQUIRED
    assert "(Negotiate, NTLM, Basic) for GET http://healthcheck.test/healthcheck" in result.detail
    assert proxy.requests[0].startswith(b"GET http://healthcheck.test/healthcheck HTTP/1.1\r\n")


async def test_proxy_credentials_are_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGRESS_TEST_PROXY_PASSWORD", "s3cret")
    password = {"env": "EGRESS_TEST_PROXY_PASSWORD"}
    async with scripted(Script(OK)) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        probe = _probe(
            "http://healthcheck.test/",
            proxy={"url": url, "username": "agent", "password": password},
        )
        result = await execute(probe)
    assert result.success, result.detail
    token = base64.b64encode(b"agent:s3cret").decode()
    assert f"\r\nProxy-Authorization: Basic {token}\r\n" in proxy.requests[0].decode()


async def test_a_proxy_password_file_gone_after_loading_changes_nothing(tmp_path: Path) -> None:
    # The secret is read when the config loads; runs use that value, no file I/O per run.
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    async with scripted(Script(OK)) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        auth = {"url": url, "username": "agent", "password": {"file": str(secret)}}
        probe = _probe("http://healthcheck.test/", proxy=auth)
        secret.unlink()
        result = await execute(probe)
    assert result.success, result.detail
    token = base64.b64encode(b"agent:s3cret").decode()
    assert f"\r\nProxy-Authorization: Basic {token}\r\n" in proxy.requests[0].decode()


async def test_unresolvable_proxy_is_proxy_resolve_failed() -> None:
    # The probe's resolvers apply to the proxy: nothing answers DNS on 127.0.0.1.
    proxy = {"url": "http://proxy.invalid:3128"}
    result = await execute(
        _probe("https://healthcheck.test/", proxy=proxy, resolvers=["127.0.0.1"])
    )
    assert result.reason == FailureReason.PROXY_RESOLVE_FAILED
    assert result.detail.startswith("could not resolve proxy: resolving proxy.invalid")
    assert curl_code(result.reason) == 5


async def test_proxy_not_listening_is_proxy_connect_failed() -> None:
    async with scripted(Script()) as gone:
        port = gone.port
    probe = _probe("https://healthcheck.test/", proxy={"url": f"http://127.0.0.1:{port}"})
    result = await execute(probe)
    assert result.reason == FailureReason.PROXY_CONNECT_FAILED
    assert f"proxy 127.0.0.1:{port}: 127.0.0.1:{port}: " in result.detail
    assert [e.reason for e in result.endpoints] == [FailureReason.CONNECTION_REFUSED]


# -- property: whatever the origin sends, a labelled reason -----------------------------------

_ANSWERS = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [
                b"HTTP/1.1 200 OK\r\n",
                b"HTTP/1.1 103 Early Hints\r\n",
                b"HTTP/1.0 204 No Content\r\n",
                b"Content-Length: 2\r\n",
                b"Content-Length: -1\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"Transfer-Encoding: gzip\r\n",
                b" folded\r\n",
                b"X: \x00\r\n",
                b"\r\n",
                b"2\r\nok\r\n",
                b"0\r\n\r\n",
                b"-1\r\n",
                b"ok",
            ]
        ),
        max_size=10,
    ).map(b"".join),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(answer=_ANSWERS)
def test_any_answer_ends_in_a_labelled_reason(answer: bytes) -> None:
    result = asyncio.run(_fetch(Script(answer)))
    assert result.reason not in {FailureReason.INTERNAL_ERROR, FailureReason.TIMEOUT}, (
        result.detail
    )
