// The runs list, newest first, with each run's progress; refreshed while any
// run shown is still running.
import { api, el, live, number, query, runProgress, stateBadge, time } from "./api.js";

const params = new URLSearchParams(location.search);
const form = document.getElementById("filters");
for (const field of form.elements) {
  if (field.name && params.has(field.name)) field.value = params.get(field.name);
}
const filters = { state: params.get("state") || undefined, dag: params.get("dag") || undefined };

function row(run) {
  return el("tr", { "data-run": run.id },
    el("td", { class: "num" }, el("a", { href: `/runs/${run.id}` }, String(run.id))),
    el("td", {}, run.dag_name ? `${run.dag_name} v${run.dag_version}` : el("span", { class: "muted" }, "inline")),
    el("td", {}, stateBadge(run.state), run.state === "queued" && run.queue_position !== null
      && run.queue_position !== undefined
      ? el("span", { class: "muted small queue-position" }, ` ${number(run.queue_position)} ahead`) : null),
    el("td", {}, runProgress(run), el("span", { class: "muted small" },
      ` ${run.succeeded} ok · ${run.running} running · ${run.failed} failed · ${run.cancelled} cancelled`
      + (run.skipped ? ` · ${run.skipped} skipped` : "") + (run.waiting ? ` · ${run.waiting} waiting` : ""))),
    el("td", { class: "num" }, number(run.nodes)),
    el("td", {}, time(run.created_at)),
    el("td", {}, time(run.finished_at)),
  );
}

const body = document.querySelector("#runs tbody");
const more = document.getElementById("more");
let shown = 50;
let cursor;

// The first `shown` runs, refreshed as a whole; "Load more" widens the window.
async function refresh() {
  const page = await api(`/runs${query({ ...filters, limit: Math.min(shown, 1000) })}`);
  body.replaceChildren(...page.items.map(row));
  cursor = page.next_cursor;
  more.hidden = !cursor;
  document.getElementById("runs-empty").hidden = page.items.length > 0;
  return page.items.some((run) => run.state === "running" || run.state === "queued");
}

const poller = live(refresh, 3000);
more.addEventListener("click", () => { shown += 50; poller.restart(); });
