"""Bounded reads of the files a config names: the config itself, secrets, CA bundles.

A path in a config can point anywhere: at a FIFO (an open that never returns), a device such
as ``/dev/zero`` (a read that never ends), a 10 GB log or a hung network mount. Each read here
refuses anything but a regular file before reading from it, reads at most one byte more than
its cap, and gives up after a timeout, so a bad path is a config error, never a hang or a
memory problem.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

READ_TIMEOUT_SECONDS = 2.0
T = TypeVar("T")


class FileError(ValueError):
    """A file that cannot be used; the message says why, without the path (callers add it)."""


def read_bounded(path: Path, cap: int, timeout: float = READ_TIMEOUT_SECONDS) -> bytes:
    """The bytes of the regular file ``path``, at most ``cap`` of them.

    Raises :class:`FileError` when the file cannot be read (missing, no permission), is not
    a regular file (FIFO, device, directory), is larger than ``cap`` bytes, or does not answer
    within ``timeout`` seconds.
    """
    return call_with_timeout(lambda: _read(path, cap), timeout)


def call_with_timeout(action: Callable[[], T], timeout: float) -> T:
    """``action()``, run in a daemon thread; :class:`FileError` when it takes over ``timeout``.

    A thread stuck in the kernel (a read on a hung mount) cannot be stopped: it is left behind
    as a daemon, so it never holds up the exporter's exit.
    """
    future: Future[T] = Future()

    def work() -> None:
        try:
            future.set_result(action())
        except BaseException as exc:  # noqa: BLE001 - handed over to the caller
            future.set_exception(exc)

    threading.Thread(target=work, name="bounded-read", daemon=True).start()
    try:
        return future.result(timeout)
    except TimeoutError:
        raise FileError(f"no answer within {timeout:g}s (a hung network mount?)") from None


def _read(path: Path, cap: int) -> bytes:
    # O_NONBLOCK: opening a FIFO for reading must not wait for a writer. It does not change
    # how a regular file is read.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FileError(f"cannot read: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileError(f"not a regular file (a {_file_type(mode)})")
        data = _read_up_to(fd, cap + 1)
    except OSError as exc:
        raise FileError(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > cap:
        raise FileError(f"larger than the {_size(cap)} limit")
    return data


def _read_up_to(fd: int, limit: int) -> bytes:
    """Read until end of file or ``limit`` bytes (a network file system may return less)."""
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _file_type(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


def _size(cap: int) -> str:
    """``4 MiB``, ``64 KiB`` or ``100 B``: the unit the cap is documented in."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if cap >= scale and cap % scale == 0:
            return f"{cap // scale} {unit}"
    return f"{cap} B"
