// The dead-letter queue: retry or discard one entry, or every selected one.
import { api, can, el, live, notify, number, query, time } from "./api.js";

const operator = can("operator");
const body = document.querySelector("#dlq tbody");
const more = document.getElementById("more");
let shown = 100;

function selected() {
  return [...body.querySelectorAll("input.pick:checked")].map((box) => box.value);
}

function syncBulk() {
  if (!operator) return;
  const count = selected().length;
  document.getElementById("retry-selected").disabled = count === 0;
  document.getElementById("discard-selected").disabled = count === 0;
  const all = document.getElementById("select-all");
  all.checked = count > 0 && count === body.querySelectorAll("input.pick").length;
}

// Act on several entries at once (one request each, a few at a time), then say
// how it went and show the list without them.
async function resolve(jobIds, verb) {
  if (verb === "discard" && !confirm(`Discard ${jobIds.length} dead letter(s)? The jobs stay failed.`)) return;
  const failures = [];
  for (let i = 0; i < jobIds.length; i += 8) {
    await Promise.all(jobIds.slice(i, i + 8).map((jobId) =>
      api(`/dlq/${jobId}/${verb}`, { method: "POST" }).catch((error) => failures.push(`${jobId}: ${error.message}`))));
  }
  const done = jobIds.length - failures.length;
  const what = verb === "retry" ? "retried" : "discarded";
  notify(`${done} ${what}.${failures.length ? ` Failed: ${failures.join("; ")}` : ""}`,
    failures.length ? "error" : "info");
  await poller.restart();
}

function row(entry) {
  const errors = entry.errors.map((e) => el("li", {}, `attempt ${e.attempt} (${e.outcome}): ${e.error ?? ""}`));
  return el("tr", { "data-job": entry.job_id },
    operator ? el("td", {}, el("input", { type: "checkbox", class: "pick", value: entry.job_id,
      "aria-label": `Select job ${entry.job_id}`, onchange: syncBulk })) : null,
    el("td", { class: "num", "data-label": "Job" }, el("a", { href: `/jobs/${entry.job_id}` }, String(entry.job_id))),
    el("td", { "data-label": "Task" }, entry.task),
    el("td", { "data-label": "Queue" }, entry.queue),
    el("td", { class: "num", "data-label": "Attempts" }, String(entry.attempts)),
    el("td", { class: "error-cell", "data-label": "Error" },
      el("details", {}, el("summary", {}, entry.last_error ?? entry.reason), el("ul", {}, errors))),
    el("td", { "data-label": "Failed" }, time(entry.failed_at)),
    operator ? el("td", {}, el("div", { class: "buttons" },
      el("button", { type: "button", class: "small", onclick: () => resolve([entry.job_id], "retry") }, "Retry"),
      el("button", { type: "button", class: "small danger", onclick: () => resolve([entry.job_id], "discard") }, "Discard")))
      : null,
  );
}

async function refresh() {
  const keep = new Set(selected());
  const [page, size] = await Promise.all([api(`/dlq${query({ limit: shown })}`), api("/dlq/size")]);
  body.replaceChildren(...page.items.map(row));
  for (const box of body.querySelectorAll("input.pick")) box.checked = keep.has(box.value);
  syncBulk();
  more.hidden = !page.next_cursor;
  document.getElementById("dlq-empty").hidden = page.items.length > 0;
  document.getElementById("dlq-count").textContent = `(${number(size.size)})`;
}

const poller = live(refresh, 10000);
more.addEventListener("click", () => { shown = Math.min(shown + 100, 1000); poller.restart(); });
if (operator) {
  document.getElementById("select-all").addEventListener("change", (event) => {
    for (const box of body.querySelectorAll("input.pick")) box.checked = event.target.checked;
    syncBulk();
  });
  document.getElementById("retry-selected").addEventListener("click", () => resolve(selected(), "retry"));
  document.getElementById("discard-selected").addEventListener("click", () => resolve(selected(), "discard"));
}
