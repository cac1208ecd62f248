"""Run a command on which ``socket(AF_INET6, ...)`` fails with ``EAFNOSUPPORT``.

That is what a host booted with ``ipv6.disable=1`` does: the kernel has no AF_INET6 family.
We cannot reboot the test machine, and a network namespace with ``disable_ipv6=1`` still has
the family (its sockets fail later, with ENETUNREACH or EADDRNOTAVAIL). The kernel can refuse
the family itself, though: a seccomp filter (seccomp(2), ``SECCOMP_RET_ERRNO``) makes the
``socket`` system call return ``EAFNOSUPPORT`` for AF_INET6, the mechanism systemd's
``RestrictAddressFamilies=`` uses, and a real way to run the exporter. The filter survives
``exec``, needs no root (``PR_SET_NO_NEW_PRIVS``), and the command sees the same failure of the
same system call as on a host without IPv6; nothing in the command is patched.

Usage: no_ipv6.py COMMAND [ARG...]   (exits 3 when the filter cannot be installed here)
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import sys

# linux/filter.h, linux/seccomp.h, linux/audit.h and the system call tables.
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
# struct seccomp_data: nr at 0, arch at 4, args[0] (low half, little endian) at 16.
_NR, _ARCH, _ARG0 = 0, 4, 16
_SOCKET_CALL = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}


class _Instruction(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    )


class _Program(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction)))


def refuse_ipv6() -> None:
    """Install the filter on this process (and what it executes)."""
    arch, socket_nr = _SOCKET_CALL[platform.machine()]
    program = [
        (_BPF_LD_W_ABS, 0, 0, _ARCH),
        (_BPF_JEQ_K, 0, 4, arch),  # another ABI: allow
        (_BPF_LD_W_ABS, 0, 0, _NR),
        (_BPF_JEQ_K, 0, 2, socket_nr),  # not socket(): allow
        (_BPF_LD_W_ABS, 0, 0, _ARG0),
        (_BPF_JEQ_K, 1, 0, socket.AF_INET6),
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT),
    ]
    instructions = (_Instruction * len(program))(*(_Instruction(*row) for row in program))
    fprog = _Program(len(program), instructions)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main() -> None:
    """Refuse AF_INET6, prove it, run the command."""
    try:
        refuse_ipv6()
    except (KeyError, OSError) as exc:
        print(f"cannot refuse AF_INET6 here: {exc!r}", file=sys.stderr)  # noqa: T201
        sys.exit(3)
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError as exc:
        if exc.errno != errno.EAFNOSUPPORT:
            raise
    else:
        print("the filter did not take: AF_INET6 sockets still open", file=sys.stderr)  # noqa: T201
        sys.exit(3)
    os.execvp(sys.argv[1], sys.argv[1:])  # noqa: S606 - the command given


if __name__ == "__main__":
    main()
