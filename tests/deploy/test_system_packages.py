"""deploy/system-packages.sh, which `make test` runs first: what it installs, or asks
for, with chromium and promtool hidden (a PATH of stand-ins), whatever this
machine already has."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "system-packages.sh"


def run(bin_dir: Path, uid: int) -> subprocess.CompletedProcess[str]:
    """The script with only `bin_dir` on the PATH, where `id -u` says `uid` and
    apt-get records its arguments."""
    stub = {
        "id": f"#!/bin/sh\necho {uid}\n",
        "apt-get": f'#!/bin/sh\necho "$@" >> {bin_dir}/apt-get.calls\n',
    }
    for name, text in stub.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return subprocess.run(
        ["/bin/sh", str(SCRIPT)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def calls(bin_dir: Path) -> list[str]:
    path = bin_dir / "apt-get.calls"
    return path.read_text().splitlines() if path.exists() else []


def test_as_root_on_debian_the_missing_programs_are_installed(tmp_path):
    result = run(tmp_path, uid=0)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path) == [
        "update -qq",
        "install -y -qq --no-install-recommends chromium prometheus",
    ]
    assert "installing chromium prometheus" in result.stdout


def test_only_what_is_missing_is_installed(tmp_path):
    (tmp_path / "chromium").write_text("#!/bin/sh\n")
    (tmp_path / "chromium").chmod(0o755)
    run(tmp_path, uid=0)
    assert calls(tmp_path)[-1] == "install -y -qq --no-install-recommends prometheus"


def test_elsewhere_one_line_says_what_to_install(tmp_path):
    result = run(tmp_path, uid=1000)
    assert result.returncode == 0  # the tests still run; those that need them say so
    assert calls(tmp_path) == []
    (line,) = result.stderr.splitlines()
    assert "chromium" in line and "prometheus" in line and "install" in line


def test_nothing_happens_when_both_are_there(tmp_path):
    for name in ("chromium", "promtool"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    result = run(tmp_path, uid=0)
    assert result.returncode == 0 and result.stdout == result.stderr == ""
    assert calls(tmp_path) == []
