"""Fixtures of the probe tests: a scripted DNS responder on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dns_responder import ScriptedResponder


@pytest.fixture(scope="session")
def running_responder() -> Iterator[ScriptedResponder]:
    """One responder for the session (its threads and sockets are closed at the end)."""
    responder = ScriptedResponder()
    yield responder
    responder.close()


@pytest.fixture
def responder(running_responder: ScriptedResponder) -> Iterator[ScriptedResponder]:
    """The responder, answering every query with an empty NOERROR until the test scripts it.

    A test whose script raised fails in teardown with that error.
    """
    running_responder.reset()
    yield running_responder
    if running_responder.script_errors:
        raise running_responder.script_errors[0]
