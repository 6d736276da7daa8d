"""The import-linter contracts hold on the tree (`make test` runs them as well), and
each one breaks on a deliberate violation: a probe module added to a temporary
layout of the package (tests/lint_imports.py), never to the checkout."""

from __future__ import annotations

import pytest

from tests.lint_imports import lint


def test_the_contracts_hold():
    done = lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("probe", "text", "broken"),
    [
        ("sluice/core/probe.py", "import sluice.jobs.routes\n", "Floors point down"),
        ("sluice/jobs/probe.py", "from sluice.dags import service\n", "Floors point down"),
        ("sluice/runs/probe.py", "import sluice.dags.service\n", "Floors point down"),
        ("sluice/newroom.py", '"""A room on no floor."""\n', "Floors point down"),
        ("sluice/http/probe.py", "import sluice.worker.registry\n", "never imports the worker"),
        ("sluice/worker/probe.py", "import sluice.http.errors\n", "never the API's plumbing"),
        ("sluice/queues/probe.py", "from sluice.core.queries import sql\n", "typed doors"),
        ("sluice/worker/probe.py", "from sluice.core.queries import sql\n", "typed doors"),
        ("sluice/jobs/probe.py", "import sluice.core.protocol\n", "never claims"),
        ("sluice/core/probe.py", "import bench.harness\n", "load test or the tests"),
    ],
    ids=[
        "core imports an area",
        "an area imports another",
        "runs imports dags again",
        "a module on no floor",
        "the API imports the worker",
        "the worker imports the API's plumbing",
        "an area runs a named query itself",
        "the worker runs a named query itself",
        "an area runs the worker protocol",
        "the product imports the bench",
    ],
)
def test_a_deliberate_violation_breaks_a_contract(probe, text, broken):
    done = lint(extra={probe: text})
    assert done.returncode != 0, done.stdout
    report = " ".join(done.stdout.split())
    # The summary lists each contract by name, then KEPT or BROKEN.
    after = report[report.index(broken) :]
    verdict = min((after.find(word), word) for word in ("KEPT", "BROKEN") if word in after)
    assert verdict[1] == "BROKEN", report
