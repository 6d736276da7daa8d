"""A run page showing DAG data flow (docs/dags.md): a mapped node drawn as one
node with its elements counted, skipped and waiting nodes, results cut short with
"show all", the Signal button (payload, confirmation, the API's refusal as is)
for operators, and Rerun from here."""

from __future__ import annotations

import json

from playwright.sync_api import Page, expect

from sluice.auth.principal import Role
from tests.dashboard.conftest import shoot
from tests.dashboard.engine import finish_job, node_job, node_state, scalar
from tests.dashboard.test_runs import node, start_run

FLOW = {
    "nodes": [
        {"id": "split", "task": "noop"},
        {
            "id": "parse",
            "task": "noop",
            "depends_on": ["split"],
            "map": "{{ nodes.split.result.files }}",
            "payload": {"file": "{{ item }}"},
        },
        {"id": "merge", "task": "noop", "depends_on": ["parse"]},
        {"id": "check", "task": "noop"},
        {
            "id": "big",
            "task": "noop",
            "depends_on": ["check"],
            "when": "$.nodes.check.result.rows > 1000",
        },
        {"id": "approve", "depends_on": ["merge"], "wait": {"signal": True, "timeout": "1h"}},
        {"id": "legal", "depends_on": ["merge"], "wait": {"signal": True}},
        {"id": "publish", "task": "noop", "depends_on": ["approve", "legal"]},
        {"id": "cool-down", "wait": {"for": "1h"}},
    ]
}
FILES = ["a.csv", "b.csv", "c.csv"]
# A result longer than the 200 characters a run's page shows of it.
MERGED = {"rows": 3, "lines": [f"line {n} of the merged file" for n in range(40)]}


def row(page: Page, node_id: str):
    return page.locator(f'#nodes tbody tr[data-node="{node_id}"]')


def elements(sql, run_id: int) -> list[int]:
    return [
        r[0]
        for r in sql.execute(
            "SELECT id FROM sluice.jobs WHERE run_id = %s AND map_index IS NOT NULL"
            " ORDER BY map_index",
            (run_id,),
        ).fetchall()
    ]


def test_a_run_page_shows_maps_skips_waits_and_results(sign_in, api_server, sql, screenshots):
    run = start_run(api_server, FLOW)
    run_id = run["id"]
    page = sign_in(Role.operator)
    page.goto(f"/runs/{run_id}")
    expect(node(page, "cool-down")).to_have_attribute("data-state", "waiting")
    expect(row(page, "cool-down").locator(".detail")).to_contain_text("wakes in")
    expect(node(page, "cool-down").locator(".wait-mark text")).to_contain_text("until")

    # The condition is false: skipped, grey and dashed, saying why.
    finish_job(sql, node_job(sql, run_id, "check"), {"rows": 5})
    expect(node(page, "big")).to_have_attribute("data-state", "skipped")
    dash = (
        node(page, "big")
        .locator("rect")
        .first.evaluate("rect => getComputedStyle(rect).strokeDasharray")
    )
    assert dash not in ("", "none"), dash
    expect(row(page, "big").locator(".detail")).to_have_text("its condition was false")
    expect(row(page, "big").locator(".badge")).to_have_text("skipped")

    # The map: one node, its elements counted as they finish.
    finish_job(sql, node_job(sql, run_id, "split"), {"files": FILES})
    expect(node(page, "parse")).to_have_attribute("data-state", "waiting")
    expect(node(page, "parse")).to_have_class("node state-waiting mapped")
    expect(node(page, "parse").locator("text.mark")).to_have_text("0/3")
    parts = elements(sql, run_id)
    assert len(parts) == 3
    for index, job_id in enumerate(parts[:2]):
        finish_job(sql, job_id, {"file": FILES[index], "rows": 1})
    expect(node(page, "parse").locator("text.mark")).to_have_text("2/3")
    expect(node(page, "parse").locator('.map-bar .segment[data-state="succeeded"]')).to_have_count(
        1
    )
    expect(row(page, "parse").locator(".detail")).to_contain_text("2 of 3 elements done")
    expect(page.locator("svg.dag g.node")).to_have_count(
        len(FLOW["nodes"])
    )  # elements are not nodes
    shoot(page, screenshots, "run-map")
    finish_job(sql, parts[2], {"file": FILES[2], "rows": 1})
    expect(node(page, "parse")).to_have_attribute("data-state", "succeeded")
    expect(node(page, "parse").locator("text.mark")).to_have_text("3/3")

    # A long result is cut short; "show all" shows the whole of it.
    finish_job(sql, node_job(sql, run_id, "merge"), MERGED)
    merge = row(page, "merge")
    expect(merge.locator(".result code")).to_contain_text('"line 0 of the merged file"')
    assert "line 39" not in merge.locator(".result code").inner_text()
    merge.locator("button.show-all").click()
    expect(page.locator("#result-panel")).to_be_visible()
    expect(page.locator("#result-title")).to_have_text("Result of merge")
    assert json.loads(page.locator("#result-full").inner_text()) == MERGED
    # A short result is shown whole, with nothing to open.
    expect(row(page, "check").locator(".result code")).to_have_text('{"rows": 5}')
    expect(row(page, "check").locator("button.show-all")).to_have_count(0)

    # Both approvals wait for a signal.
    for waiting in ("approve", "legal"):
        expect(node(page, waiting)).to_have_attribute("data-state", "waiting")
        expect(row(page, waiting).locator(".detail")).to_contain_text("waiting for a signal")
    expect(row(page, "approve").locator(".detail")).to_contain_text("times out in")
    expect(row(page, "legal").locator(".detail")).to_contain_text("no timeout")
    expect(node(page, "approve").locator(".wait-mark text")).to_have_text("signal")
    shoot(page, screenshots, "run-waiting")


def test_an_operator_signals_a_waiting_node(sign_in, api_server, sql, screenshots):
    run = start_run(api_server, FLOW)
    run_id = run["id"]
    finish_job(sql, node_job(sql, run_id, "split"), {"files": []})  # an empty map succeeds at once
    finish_job(sql, node_job(sql, run_id, "merge"), {"rows": 0})
    page = sign_in(Role.operator)
    page.goto(f"/runs/{run_id}")
    expect(row(page, "parse").locator(".detail")).to_contain_text("0 of 0 elements done")
    signal = row(page, "approve").locator("button.signal")
    expect(signal).to_be_visible()
    expect(row(page, "publish").locator("button.signal")).to_have_count(0)

    # Not JSON: said in the dialog, nothing sent.
    signal.click()
    dialog = page.locator("#signal-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#signal-title")).to_have_text("Signal approve")
    page.fill("#signal-payload", "{approved: yes")
    page.click("#signal-send")
    expect(page.locator("#signal-error")).to_contain_text("not JSON")
    assert node_state(sql, run_id, "approve") == "waiting"

    # Declining the confirmation sends nothing either.
    page.fill("#signal-payload", '{"approved_by": "ann"}')
    page.once("dialog", lambda d: d.dismiss())
    page.click("#signal-send")
    expect(dialog).to_be_visible()
    assert node_state(sql, run_id, "approve") == "waiting"

    # Confirmed: the node succeeds with the payload as its result.
    confirmations: list[str] = []

    def accept(d):
        confirmations.append(d.message)
        d.accept()

    page.once("dialog", accept)
    page.click("#signal-send")
    expect(dialog).to_be_hidden()
    assert "approve" in confirmations[0]
    expect(node(page, "approve")).to_have_attribute("data-state", "succeeded")
    expect(row(page, "approve").locator(".result code")).to_have_text('{"approved_by": "ann"}')
    expect(row(page, "approve").locator("button.signal")).to_have_count(0)

    # Someone else signals `legal` while the dialog is open: the API's 409, as it is.
    row(page, "legal").locator("button.signal").click()
    sql.execute("SELECT sluice.signal(%s, 'legal', '{\"by\": \"psql\"}')", (run_id,))
    page.once("dialog", lambda d: d.accept())
    page.click("#signal-send")
    error = page.locator("#signal-error")
    expect(error).to_contain_text("not waiting for a signal")
    expect(error).to_contain_text("legal")
    expect(dialog).to_be_visible()
    shoot(page, screenshots, "run-signal-refused", full_page=False)
    page.click("#signal-cancel")
    expect(node(page, "publish")).to_have_attribute("data-state", "ready")


def test_viewers_see_waits_but_no_signal_or_rerun(sign_in, api_server, sql):
    run = start_run(api_server, FLOW)
    finish_job(sql, node_job(sql, run["id"], "check"), {"rows": 5})
    page = sign_in(Role.viewer)
    page.goto(f"/runs/{run['id']}")
    expect(node(page, "big")).to_have_attribute("data-state", "skipped")
    expect(row(page, "cool-down").locator(".detail")).to_contain_text("wakes in")
    expect(page.locator("#nodes button.signal, #nodes button.rerun")).to_have_count(0)
    expect(page.locator("#signal-dialog")).to_have_count(0)


def test_rerun_from_a_finished_node(sign_in, api_server, sql):
    run = start_run(
        api_server,
        {
            "nodes": [
                {"id": "extract", "task": "noop"},
                {"id": "load", "task": "noop", "depends_on": ["extract"],
                 "payload": {"rows": "{{ nodes.extract.result.rows }}"}},
            ]
        },
    )  # fmt: skip
    run_id = run["id"]
    finish_job(sql, node_job(sql, run_id, "extract"), {"rows": 1})
    load = node_job(sql, run_id, "load")
    finish_job(sql, load, {"loaded": 1})
    page = sign_in(Role.operator)
    page.goto(f"/runs/{run_id}")
    expect(page.locator("#run-state")).to_have_text("succeeded")

    page.once("dialog", lambda d: d.accept())
    row(page, "extract").locator("button.rerun").click()
    expect(node(page, "extract")).to_have_attribute("data-state", "ready")
    expect(node(page, "load")).to_have_attribute("data-state", "blocked")
    expect(page.locator("#run-state")).to_have_text("running")
    expect(row(page, "extract").locator("button.rerun")).to_have_count(0)  # not finished now
    finish_job(sql, node_job(sql, run_id, "extract"), {"rows": 2})
    expect(node(page, "load")).to_have_attribute("data-state", "ready")
    payload = scalar(sql, "SELECT payload FROM sluice.jobs WHERE id = %s", load)
    assert payload == {"rows": 2}  # rendered again from the new result


def test_queued_runs_show_their_place_and_start_when_a_slot_frees(sign_in, api_server, sql):
    one_at_a_time = {"concurrency": 1, "timeout": "1h", "nodes": [{"id": "only", "task": "noop"}]}
    first = start_run(api_server, one_at_a_time)
    second = start_run(api_server, one_at_a_time)
    third = start_run(api_server, one_at_a_time)
    assert (first["state"], second["state"], third["state"]) == ("running", "queued", "queued")
    page = sign_in(Role.submitter)
    page.goto("/runs")
    listed = page.locator(f'#runs tr[data-run="{third["id"]}"]')
    expect(listed.locator(".badge")).to_have_text("queued")
    expect(listed.locator(".queue-position")).to_have_text("1 ahead")

    page.goto(f"/runs/{second['id']}")
    expect(page.locator("#run-state")).to_have_text("queued")
    expect(page.locator("#facts")).to_contain_text(
        "waiting for a concurrency slot, 0 queued runs first"
    )
    expect(page.locator("svg.dag g.node")).to_have_count(0)  # no nodes until it starts
    expect(page.locator("#facts")).not_to_contain_text("Deadline")  # counted from its start
    # The first run ends: the second starts, and the page follows it.
    finish_job(sql, node_job(sql, first["id"], "only"))
    expect(page.locator("#run-state")).to_have_text("running")
    expect(node(page, "only")).to_have_attribute("data-state", "ready")
    expect(page.locator("#facts")).to_contain_text("Deadline")
