"""Keep credentials out of text meant for people: config errors, logs, probe details.

Two shapes of credential reach such text: the userinfo of a URL (``http://user:password@host``,
RFC 3986 section 3.2.1, which the RFC itself deprecates for passwords) and the token of an
``Authorization`` or ``Proxy-Authorization`` header (RFC 9110 section 11), which a proxy that
echoes the request head hands back. Both are masked the way Go's ``url.URL.Redacted`` does
(``xxxxx``), so the messages read like Prometheus's own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "xxxxx"

# userinfo ends at the last "@" before whitespace or a quote; greedy on purpose, so a password
# holding an unescaped "/" or "@" is masked whole rather than cut short.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]*)@")
# An auth scheme and its token, also when the echo cuts the token short.
_AUTH_TOKEN = re.compile(r"(?i)\b(?P<scheme>basic|bearer|digest|negotiate)(?P<gap>\s+)[^\s'\"]+")


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


class RedactingFilter(logging.Filter):
    """A handler filter that masks credentials in every record before it is formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted text; never drops a record."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
