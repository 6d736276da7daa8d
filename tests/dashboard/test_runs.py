"""DAG runs: the list, and a run's page drawing its DAG with each node coloured
by its state, following the run as it progresses; retry and cancel."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from sluice.auth.principal import Role
from tests.api.conftest import bearer
from tests.dashboard.conftest import shoot
from tests.dashboard.engine import claim, complete, fail

# extract -> (clean, enrich) -> load -> report, and extract -> report directly.
DIAMOND = {
    "nodes": [
        {"id": "extract", "task": "noop"},
        {"id": "clean", "task": "noop", "depends_on": ["extract"]},
        {"id": "enrich", "task": "noop", "depends_on": ["extract"]},
        {"id": "load", "task": "noop", "depends_on": ["clean", "enrich"]},
        {"id": "report", "task": "noop", "depends_on": ["load", "extract"]},
    ]
}


def start_run(api_server: str, definition: dict) -> dict:
    answer = httpx.post(
        f"{api_server}/api/v1/runs",
        json={"definition": definition},
        headers=bearer(Role.submitter),
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def node(page: Page, node_id: str):
    return page.locator(f'svg.dag g.node[data-node="{node_id}"]')


def colour(page: Page, node_id: str) -> str:
    return node(page, node_id).locator("rect").evaluate("rect => getComputedStyle(rect).fill")


def expect_states(page: Page, **states: str) -> None:
    for node_id, state in states.items():
        expect(node(page, node_id)).to_have_attribute("data-state", state)


def run_node(sql, node_id: str, outcome: str = "succeeded") -> None:
    """Claim the ready job of `node_id` and finish it, as a worker would."""
    [job] = claim(sql)
    assert job["node"] == node_id, f"expected {node_id} to be next, got {job['node']}"
    if outcome == "succeeded":
        complete(sql, job, {"rows": 42})
    else:
        fail(sql, job, error=f"{node_id} failed")


def test_a_run_page_colours_nodes_as_the_run_progresses(sign_in, api_server, sql, screenshots):
    run = start_run(api_server, DIAMOND)
    page = sign_in(Role.operator)
    page.goto(f"/runs/{run['id']}")
    expect(page.locator("svg.dag g.node")).to_have_count(5)
    expect_states(page, extract="ready", clean="blocked", load="blocked", report="blocked")
    palette = {"ready": colour(page, "extract"), "blocked": colour(page, "load")}
    expect(page.locator("#retry")).to_have_count(0)  # nothing failed yet

    # Each step is one worker action; the page follows it without a reload.
    [extract] = claim(sql)
    expect_states(page, extract="running")
    palette["running"] = colour(page, "extract")
    complete(sql, extract)
    expect_states(page, extract="succeeded", clean="ready", enrich="ready", load="blocked")
    palette["succeeded"] = colour(page, "extract")
    run_node(sql, "clean")
    run_node(sql, "enrich", outcome="failed")
    expect_states(page, clean="succeeded", enrich="failed", load="cancelled", report="cancelled")
    palette["failed"] = colour(page, "enrich")
    palette["cancelled"] = colour(page, "load")
    expect(page.locator("#run-state")).to_have_text("failed")
    # Six states seen, six different colours.
    assert len(set(palette.values())) == 6, palette
    shoot(page, screenshots, "run")

    # Retry the failed node: it and the nodes it cancelled come back.
    page.click("#retry")
    expect_states(page, enrich="ready", load="blocked", report="blocked", clean="succeeded")
    expect(page.locator("#run-state")).to_have_text("running")
    for node_id in ("enrich", "load", "report"):
        run_node(sql, node_id)
    expect_states(page, enrich="succeeded", load="succeeded", report="succeeded")
    expect(page.locator("#run-state")).to_have_text("succeeded")
    assert colour(page, "report") == palette["succeeded"]

    # A node opens its job.
    [[enrich]] = sql.execute(
        "SELECT id FROM sluice.jobs WHERE run_id = %s AND node = 'enrich'", (run["id"],)
    ).fetchall()
    node(page, "enrich").click()
    expect(page).to_have_url(f"{api_server}/jobs/{enrich}")
    expect(page.locator("#attempts li")).to_have_count(2)  # failed once, then succeeded


# Each node sleeps long enough for the page (polling every second) to see it run.
SLEEPY = {
    "nodes": [
        {**node, "task": "sleep", "payload": {"seconds": 2}} if node["id"] != "report" else node
        for node in DIAMOND["nodes"]
    ]
}
# Records, in the page, every state each node of the drawing is shown in.
RECORD_STATES = """() => {
  window.seenStates = {};
  for (const g of document.querySelectorAll("svg.dag g.node")) {
    window.seenStates[g.dataset.node] = [g.dataset.state];
  }
  new MutationObserver((records) => {
    for (const { target } of records) {
      const seen = window.seenStates[target.dataset.node];
      if (seen.at(-1) !== target.dataset.state) seen.push(target.dataset.state);
    }
  }).observe(document.querySelector("svg.dag"),
             { attributes: true, attributeFilter: ["data-state"], subtree: true });
}"""


def test_a_worker_runs_the_dag_while_the_page_watches(
    sign_in, api_server, start_worker, screenshots
):
    run = start_run(api_server, SLEEPY)
    page = sign_in(Role.viewer)
    page.goto(f"/runs/{run['id']}")
    expect_states(page, extract="ready", clean="blocked", load="blocked", report="blocked")
    before = {n: colour(page, n) for n in ("extract", "load")}
    page.evaluate(RECORD_STATES)

    worker = start_worker()
    expect(page.locator("#run-state")).to_have_text("succeeded", timeout=40_000)
    assert worker.poll() is None, "the worker died"
    seen = page.evaluate("window.seenStates")
    for node_id, states in seen.items():
        assert states[0] in ("ready", "blocked") and states[-1] == "succeeded", (node_id, states)
    sleepers = [n for n in seen if n != "report"]
    # The page showed the nodes running as the worker ran them (each ran 2 s).
    assert sum("running" in seen[n] for n in sleepers) >= 3, seen
    succeeded = colour(page, "extract")
    assert succeeded not in before.values()
    assert {colour(page, n) for n in seen} == {succeeded}
    shoot(page, screenshots, "run-by-worker")


def test_runs_list_and_cancel(sign_in, api_server, sql, screenshots):
    first = start_run(api_server, DIAMOND)
    second = start_run(api_server, {"nodes": [{"id": "only", "task": "noop"}]})
    run_node(sql, "extract")
    page = sign_in(Role.submitter)
    page.goto("/runs")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    progress = page.locator(f'#runs tr[data-run="{first["id"]}"] [role=progressbar]')
    expect(progress).to_have_attribute("aria-valuenow", "20")  # 1 node of 5 succeeded
    shoot(page, screenshots, "runs")

    page.click(f'#runs tr[data-run="{second["id"]}"] a')
    expect(page.locator("#cancel")).to_be_visible()
    expect(page.locator("#retry")).to_have_count(0)  # submitters cannot retry
    page.click("#cancel")
    expect(page.locator("#run-state")).to_have_text("cancelled")
    expect_states(page, only="cancelled")
    expect(page.locator("#cancel")).to_have_count(0)


def test_a_run_too_large_to_draw_is_summarised_by_depth(sign_in, api_server, sql, screenshots):
    fan_out = [{"id": f"part-{i}", "task": "noop", "depends_on": ["split"]} for i in range(600)]
    run = start_run(api_server, {"nodes": [{"id": "split", "task": "noop"}, *fan_out]})
    run_node(sql, "split")
    page = sign_in(Role.viewer)
    page.goto(f"/runs/{run['id']}")
    expect(page.locator("#graph-note")).to_contain_text("601 nodes")
    expect(page.locator("svg.dag")).to_have_count(0)
    expect(page.locator('tr[data-depth="0"] .badge')).to_have_text(["1 succeeded"])
    expect(page.locator('tr[data-depth="1"] .badge')).to_have_text(["600 ready"])
    expect(page.locator("#nodes tbody tr")).to_have_count(601)
    shoot(page, screenshots, "run-large", full_page=False)


def test_a_failed_run_is_shown_failed_not_done(sign_in, api_server, sql, screenshots):
    """1 failed, 2 cancelled: a red and grey bar and 0% succeeded, never "Done 100%"."""
    run = start_run(
        api_server,
        {
            "nodes": [
                {"id": "extract", "task": "noop"},
                {"id": "clean", "task": "noop", "depends_on": ["extract"]},
                {"id": "load", "task": "noop", "depends_on": ["extract"]},
            ]
        },
    )
    run_node(sql, "extract", outcome="failed")
    page = sign_in(Role.viewer)
    page.goto(f"/runs/{run['id']}")
    expect(page.locator("#run-state")).to_have_text("failed")
    facts = page.locator("#facts")
    expect(facts).to_contain_text("0 of 3 succeeded (0%), 1 failed, 2 cancelled")
    expect(facts).not_to_contain_text("100%")
    bar = page.locator("#progress [role=progressbar]")
    expect(bar).to_have_attribute("aria-valuenow", "0")
    expect(bar.locator(".segment")).to_have_count(2)
    expect(bar.locator('.segment[data-state="succeeded"]')).to_have_count(0)
    widths = bar.evaluate(
        """bar => Object.fromEntries([...bar.children].map(s => [s.dataset.state,
            s.getBoundingClientRect().width / bar.getBoundingClientRect().width]))"""
    )
    assert widths == {
        "failed": pytest.approx(1 / 3, abs=0.02),
        "cancelled": pytest.approx(2 / 3, abs=0.02),
    }
    red = bar.locator('.segment[data-state="failed"]').evaluate(
        "s => getComputedStyle(s).backgroundColor"
    )
    assert red == colour(page, "extract")  # the failed node's colour
    shoot(page, screenshots, "run-failed")

    page.goto("/runs")
    listed = page.locator(f'#runs tr[data-run="{run["id"]}"] [role=progressbar]')
    expect(listed).to_have_attribute("aria-valuenow", "0")
    expect(listed.locator('.segment[data-state="failed"]')).to_have_count(1)
