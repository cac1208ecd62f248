"""deploy/systemd/egress-exporter.service: systemd accepts it, and its command line runs.

``systemd-analyze verify`` (Debian package systemd) loads the unit as systemd would and
warns about every unknown key or bad value, while still exiting 0: so the check is that it
says nothing. The installed path of the exporter is substituted, since verify also checks that
the command exists.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

UNIT = Path(__file__).parent.parent / "deploy" / "systemd" / "egress-exporter.service"
INSTALLED = "/opt/egress-exporter/bin/egress-exporter"
EXPORTER = Path(sys.executable).parent / "egress-exporter"


@pytest.fixture
def verify(tmp_path: Path):
    require(None if shutil.which("systemd-analyze") else "needs systemd-analyze (systemd)")

    def run(text: str) -> str:
        unit = tmp_path / UNIT.name
        unit.write_text(text.replace(INSTALLED, str(EXPORTER)))
        done = subprocess.run(
            ["systemd-analyze", "verify", str(unit)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return (done.stdout + done.stderr).strip()

    return run


def test_systemd_accepts_the_unit_without_a_warning(verify) -> None:
    assert verify(UNIT.read_text()) == ""


def test_a_mistake_in_the_unit_would_be_reported(verify) -> None:
    broken = UNIT.read_text().replace("ProtectHome=yes", "ProtectHomes=yes")
    assert "Unknown key 'ProtectHomes'" in verify(broken)


def test_the_command_line_of_the_unit_is_valid_with_the_starter_config() -> None:
    """ExecStart's flags, with deploy/systemd/config.yml in place of /etc's, pass the check."""
    text = UNIT.read_text().replace("\\\n", " ")
    [line] = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    command = shlex.split(line.removeprefix("ExecStart="))
    assert command[0] == INSTALLED
    config = UNIT.with_name("config.yml")
    flags = [f"--config.file={config}" if f.startswith("--config.file=") else f for f in command]
    done = subprocess.run(
        [str(EXPORTER), *flags[1:], "--config.check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"{config}: valid, \d+ probes \(presets: umbrella, withsecure\)\n", done.stdout
    )
