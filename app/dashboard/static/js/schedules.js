// Schedules: what each starts, when it fires next; enable and disable.
import { act, api, can, el, zonedTime } from "./api.js";

const operator = can("operator");

async function upcoming(schedule) {
  try {
    const next = await api(`/schedules/${schedule.id}/upcoming?count=3`);
    if (!next.times.length) return el("span", { class: "muted" }, "no more occurrences");
    return el("ol", { class: "plain" }, next.times.map((t) => el("li", {}, zonedTime(t, schedule.timezone))));
  } catch (error) {
    return el("span", { class: "error-text" }, error.message);
  }
}

// Next fire times are computed per schedule (one request each): for the first
// UPCOMING_LIMIT schedules; the others show the one the scheduler has set.
const UPCOMING_LIMIT = 100;

async function row(schedule, index) {
  const target = schedule.dag
    ? ["DAG ", el("strong", {}, schedule.dag)]
    : ["job ", el("strong", {}, schedule.job?.task ?? "?")];
  const toggle = el("button", { type: "button", class: schedule.enabled ? "small danger" : "small",
    onclick: (e) => act(e.target, () => api(`/schedules/${schedule.id}`,
      { method: "PATCH", body: { enabled: !schedule.enabled } }),
    `${schedule.name} ${schedule.enabled ? "disabled" : "enabled"}.`).then(refresh) },
  schedule.enabled ? "Disable" : "Enable");
  return el("tr", { "data-schedule": schedule.name },
    el("th", { scope: "row" }, schedule.name),
    el("td", {}, el("code", {}, schedule.cron), el("span", { class: "muted" }, ` ${schedule.timezone}`)),
    el("td", {}, target),
    el("td", {}, schedule.enabled ? el("span", { class: "badge ok" }, "enabled") : el("span", { class: "badge paused" }, "disabled"),
      schedule.last_error ? el("div", { class: "error-text small" }, schedule.last_error) : null),
    el("td", {}, !schedule.enabled ? el("span", { class: "muted" }, "not while disabled")
      : index < UPCOMING_LIMIT ? await upcoming(schedule) : zonedTime(schedule.next_fire_at, schedule.timezone)),
    el("td", {}, zonedTime(schedule.last_fired_at, schedule.timezone)),
    operator ? el("td", {}, toggle) : null,
  );
}

async function refresh() {
  const items = [];
  let cursor;
  do {
    const page = await api(`/schedules?limit=200${cursor ? `&cursor=${cursor}` : ""}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < 1000);
  document.querySelector("#schedules tbody").replaceChildren(...await Promise.all(items.map(row)));
  document.getElementById("schedules-empty").hidden = items.length > 0;
}

refresh().catch((error) => {
  const empty = document.getElementById("schedules-empty");
  empty.hidden = false;
  empty.textContent = error.message;
});
