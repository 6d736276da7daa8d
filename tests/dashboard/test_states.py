"""The dashboard's job states come from their one declaration (sluice.core.jobs):
the pages list exactly those, in that order, and hand them to the scripts
(<body data-job-states>), so a new state needs no dashboard edit.

Over HTTP, no browser (the overview's browser test checks its script's columns)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from litestar.testing import TestClient

from sluice.auth.principal import Role
from sluice.core import jobs
from sluice.main import create_app
from tests.api.conftest import api_settings, bearer  # noqa: F401 - a fixture used here


class _States(HTMLParser):
    """What a page says the job states are: the body's data attribute, the jobs
    filter's options, the run graph's legend, the overview's queue columns."""

    def __init__(self) -> None:
        super().__init__()
        self.body: list[str] = []
        self.options: list[str] = []
        self.legend: list[str] = []
        self.columns: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "body":
            self.body = (attributes["data-job-states"] or "").split()
        elif tag == "option" and attributes.get("value") != "":
            self._in = "options"
        elif tag == "ul" and "legend" in (attributes.get("class") or ""):
            self._in = "legend"
        elif tag == "th" and "data-state" in attributes:
            self.columns.append(attributes["data-state"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("option", "ul"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "options" and data.strip():
            self.options.append(data.strip())
        elif self._in == "legend" and data.strip():
            self.legend.append(data.strip())


@pytest.fixture
def pages(api_settings):  # noqa: F811
    """GET a dashboard page as a viewer; answers what it says the states are."""
    with TestClient(app=create_app(api_settings)) as client:

        def _states(path: str) -> _States:
            answer = client.get(path, headers=bearer(Role.viewer))
            assert answer.status_code == 200, answer.text
            found = _States()
            found.feed(answer.text)
            return found

        yield _states


@pytest.mark.parametrize("extra", [(), ("held",)], ids=["declared", "one-more"])
def test_the_pages_list_exactly_the_declared_job_states(pages, monkeypatch, extra):
    # "one-more": a state added to the declaration shows up with no dashboard edit.
    monkeypatch.setattr(jobs, "JOB_STATES", (*jobs.JOB_STATES, *extra))
    states = list(jobs.JOB_STATES)
    overview, listing, run = pages("/"), pages("/jobs"), pages("/runs/1")
    for page in (overview, listing, run):
        assert page.body == states
    assert overview.columns == states
    assert listing.options == states
    assert run.legend == states
