// The overview: queue depths, throughput chart, wait times, workers, DLQ size,
// refreshed every few seconds.
import { JOB_STATES, api, duration, el, live, number, updated } from "./api.js";
import { barChart } from "./chart.js";

function queueRow(queue) {
  return el("tr", { "data-queue": queue.name },
    el("th", { scope: "row" }, el("a", { href: `/jobs?queue=${encodeURIComponent(queue.name)}` }, queue.name)),
    JOB_STATES.map((state) => el("td", { class: "num", "data-state": state }, number(queue[state]))),
    el("td", { class: "num" }, queue.ready ? duration(queue.oldest_ready_seconds) : "–"),
    el("td", {}, queue.paused
      ? el("span", { class: "badge paused" }, "paused")
      : el("span", { class: "muted" }, "active")),
  );
}

function waitRow(wait, label) {
  return el("tr", { "data-queue": wait.queue ?? "" },
    el("th", { scope: "row" }, label),
    el("td", { class: "num" }, number(wait.jobs)),
    ["p50", "p90", "p99", "max"].map((key) => el("td", { class: "num", "data-key": key }, duration(wait[key]))),
  );
}

function workerRow(worker) {
  return el("tr", { "data-worker": worker.worker_id },
    el("th", { scope: "row" }, worker.worker_id, el("span", { class: "muted" }, ` ${worker.hostname}`)),
    el("td", {}, worker.queues.join(", ")),
    el("td", { class: "num" }, number(worker.running)),
    el("td", { class: "num" }, number(worker.concurrency)),
    el("td", {}, new Date(worker.heartbeat_at).toLocaleTimeString()),
    el("td", {}, worker.alive
      ? el("span", { class: "badge ok" }, worker.paused ? "alive, paused" : "alive")
      : el("span", { class: "muted" }, worker.stopped_at ? "stopped" : "lost")),
  );
}

function fill(tableId, rows, emptyText, columns) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colspan: columns, class: "empty" }, emptyText))]));
}

async function refresh() {
  const [queues, throughput, waits, workers, dlq] = await Promise.all([
    api("/queues"),
    api("/jobs/throughput?minutes=60"),
    api("/jobs/wait-times?minutes=60"),
    api("/workers"),
    api("/dlq/size"),
  ]);
  const alive = workers.items.filter((w) => w.alive);
  const sum = (state) => queues.items.reduce((total, q) => total + q[state], 0);
  document.getElementById("workers-alive").textContent = number(alive.length);
  document.getElementById("total-ready").textContent = number(sum("ready"));
  document.getElementById("total-running").textContent = number(sum("running"));
  document.getElementById("dlq-size").textContent = number(dlq.size);

  fill("queues", queues.items.map(queueRow), "No queues yet.", 10);
  fill("waits", waits.overall.jobs
    ? [waitRow(waits.overall, "All queues"), ...waits.items.map((w) => waitRow(w, w.queue))]
    : [], "No job started in the last hour.", 6);
  fill("workers", workers.items.filter((w) => w.alive || !w.stopped_at).map(workerRow),
    "No workers: start one with `sluice worker`.", 6);

  document.getElementById("throughput").replaceChildren(barChart(throughput.items.map((m) => ({
    label: new Date(m.minute).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
    parts: [["succeeded", m.succeeded], ["failed", m.failed], ["cancelled", m.cancelled]],
  }))));
  updated();
}

live(refresh, 5000);
