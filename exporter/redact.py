"""Text meant for people: credentials masked, control characters shown rather than obeyed.

Two shapes of credential reach such text: the userinfo of a URL (``http://user:password@host``,
RFC 3986 section 3.2.1, which the RFC itself deprecates for passwords) and the token of an
``Authorization`` or ``Proxy-Authorization`` header (RFC 9110 section 11), which a proxy that
echoes the request head hands back. Both are masked the way Go's ``url.URL.Redacted`` does
(``xxxxx``), so the messages read like Prometheus's own.

Text a peer wrote (a proxy's reason phrase, a TXT answer) may hold line feeds and terminal
escapes: :func:`printable` shows them as escapes, for sinks that print text as it is (a
terminal, a table cell). The log renderer escapes values itself (exporter/logs.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "xxxxx"

# userinfo ends at the last "@" before whitespace or a quote; greedy on purpose, so a password
# holding an unescaped "/" or "@" is masked whole rather than cut short.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]*)@")
# An auth scheme and its token, also when the echo cuts the token short.
_AUTH_TOKEN = re.compile(r"(?i)\b(?P<scheme>basic|bearer|digest|negotiate)(?P<gap>\s+)[^\s'\"]+")
# C0 controls (line feed and escape among them), DEL and the C1 controls (0x9b starts a
# terminal control sequence too).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    kept = f"{user}:{MASK}" if colon else MASK
    return f"{match['scheme']}{kept}@"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords, authorization tokens and each of ``secrets`` masked.

    ``secrets`` are values known to be secret (a proxy's password, its base64 token); empty
    ones are ignored.
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    return _AUTH_TOKEN.sub(lambda m: f"{m['scheme']}{m['gap']}{MASK}", text)


def printable(text: str) -> str:
    r"""``text`` with every control character shown as an escape (``\n``, ``\x1b``).

    A line feed, a carriage return or an ANSI escape sequence from a peer can then neither
    break a table's lines nor recolour or move the terminal's cursor.
    """
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")
