"""The README stays true: its two commands, its settings table, its links."""

import re
from pathlib import Path

from sluice.cli import COMMANDS
from sluice.core.config import CoreSettings, describe
from sluice.http.settings import ApiSettings
from sluice.stack import UpSettings
from sluice.worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SETTINGS = (CoreSettings, UpSettings, ApiSettings, WorkerSettings)
# Read straight from the environment, outside any settings class.
OTHER_VARIABLES = {"SLUICE_PG_BINDIR", "SLUICE_API_URL", "SLUICE_TOKEN"}


def test_the_readme_opens_with_the_run_and_test_commands():
    first_block = README.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["make up", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^up: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)
    assert "sluice up" in makefile


def test_ci_runs_the_readmes_test_command_and_installs_nothing_it_needs():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    ci = [line.strip() for line in lines if not line.lstrip().startswith("#")]
    assert "make test" in ci  # on the system's PostgreSQL
    assert "SLUICE_PG_BINDIR=wheel make test" in ci  # and on the wheel's
    for program in ("chromium", "prometheus", "pip install"):
        assert not [line for line in ci if program in line], f".ci/run installs {program}"


def test_every_setting_is_documented():
    variables = {env for cls in SETTINGS for env, _, _ in describe(cls)} | OTHER_VARIABLES
    missing = sorted(v for v in variables if f"`{v}`" not in README)
    assert missing == []
    documented = set(re.findall(r"`(SLUICE_[A-Z_]+)`", README))
    assert documented - variables == set(), "the README names settings that do not exist"


def test_every_linked_file_exists():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert links
    assert [link for link in links if not (ROOT / link).exists()] == []


def test_every_sluice_command_in_the_readme_exists():
    # "from sluice import ..." is Python, not a command.
    used = set(re.findall(r"(?:^|\s|`)(?<!from )sluice ([a-z]+)", README, re.M))
    assert used - set(COMMANDS) == set()
