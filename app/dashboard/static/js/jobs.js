// The jobs list: the filter form is a plain GET form (so a filtered list has a
// URL); this reads the same parameters and asks the API for matching jobs.
import { api, can, el, query, stateBadge, time } from "./api.js";

const params = new URLSearchParams(location.search);
const form = document.getElementById("filters");
for (const field of form.elements) {
  if (field.name && params.has(field.name)) field.value = params.get(field.name);
}

// datetime-local fields hold local time without a zone; the API wants RFC 3339.
const instant = (local) => (local ? new Date(local).toISOString() : undefined);

const filters = {
  state: params.get("state") || undefined,
  queue: params.get("queue") || undefined,
  task: params.get("task") || undefined,
  run_id: params.get("run_id") || undefined,
  created_after: instant(params.get("created_after")),
  created_before: instant(params.get("created_before")),
  tenant: params.get("tenant") || undefined,
};

if (filters.run_id) {
  document.querySelector("h1").textContent = `Jobs of run ${filters.run_id}`;
}

function row(job) {
  return el("tr", { "data-job": job.id },
    el("td", { class: "num" }, el("a", { href: `/jobs/${job.id}` }, String(job.id))),
    el("td", {}, job.task),
    el("td", {}, job.queue),
    el("td", {}, stateBadge(job.state)),
    el("td", { class: "num" }, `${job.attempt}/${job.max_attempts}`),
    el("td", {}, job.run_id ? el("a", { href: `/runs/${job.run_id}` }, `${job.run_id} · ${job.node}`) : "–"),
    can("admin") ? el("td", {}, job.tenant) : null,
    el("td", {}, time(job.created_at)),
    el("td", {}, time(job.finished_at)),
  );
}

const body = document.querySelector("#jobs tbody");
const more = document.getElementById("more");
let cursor;

async function load() {
  const page = await api(`/jobs${query({ ...filters, cursor, limit: 50 })}`);
  body.append(...page.items.map(row));
  cursor = page.next_cursor;
  more.hidden = !cursor;
  document.getElementById("jobs-empty").hidden = body.children.length > 0;
}

more.addEventListener("click", () => load());
document.getElementById("find").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = document.getElementById("find-id").value.trim();
  if (/^[0-9]+$/.test(id)) location.assign(`/jobs/${id}`);
});

load().catch((error) => {
  document.getElementById("jobs-empty").hidden = false;
  document.getElementById("jobs-empty").textContent = error.message;
});
