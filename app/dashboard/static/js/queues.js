// Queues: depth, pause and resume, concurrency limit (operators and admins).
import { act, actionButton, api, can, duration, el, live, number, updated } from "./api.js";

const operator = can("operator");

function limitForm(queue) {
  const input = el("input", { type: "number", min: 1, max: 1000000, name: "limit", class: "narrow",
    value: queue.concurrency_limit ?? "", placeholder: "none", "aria-label": `Concurrency limit of ${queue.name}` });
  return el("form", { class: "inline", "data-limit": queue.name, onsubmit: (event) => {
    event.preventDefault();
    const limit = input.value === "" ? null : Number(input.value);
    act(event.submitter ?? event.target.querySelector("button"), () => api(`/queues/${encodeURIComponent(queue.name)}/concurrency`,
      { method: "PUT", body: { limit } }), `${queue.name}: ${limit === null ? "no limit" : `at most ${limit} at once`}.`).then(refresh);
  } }, input, el("button", { type: "submit", class: "small" }, "Set"));
}

// Live, unpaused workers per queue (the rule of sluice.queue_stats.consumers):
// a worker taking "*" takes every queue.
function consumers(workers) {
  const count = new Map();
  let everyQueue = 0;
  for (const worker of workers) {
    if (!worker.alive || worker.paused) continue;
    if (worker.queues.includes("*")) everyQueue += 1;
    else for (const queue of new Set(worker.queues)) count.set(queue, (count.get(queue) ?? 0) + 1);
  }
  return (queue) => (count.get(queue) ?? 0) + everyQueue;
}

function status(queue, takers) {
  const badges = [queue.paused ? el("span", { class: "badge paused" }, "paused") : el("span", { class: "muted" }, "active")];
  if (queue.ready + queue.scheduled > 0 && !takers) {
    badges.push(" ", el("span", { class: "badge state state-failed no-consumer", title:
      "Jobs wait here and no live worker takes this queue: start one with --queue " + queue.name },
    "no live worker"));
  }
  return badges;
}

function row(queue, takers) {
  const name = encodeURIComponent(queue.name);
  const toggle = queue.paused
    ? actionButton("Resume", `/queues/${name}/resume`, { kind: "small", done: `${queue.name} resumed.`, after: refresh })
    : actionButton("Pause", `/queues/${name}/pause`, { kind: "small danger", done: `${queue.name} paused.`, after: refresh });
  return el("tr", { "data-queue": queue.name, "data-consumers": takers },
    el("th", { scope: "row" }, el("a", { href: `/jobs?queue=${name}` }, queue.name)),
    ["ready", "running", "scheduled", "blocked", "failed"].map((state) =>
      el("td", { class: "num", "data-state": state }, number(queue[state]))),
    el("td", { class: "num" }, queue.ready ? duration(queue.oldest_ready_seconds) : "–"),
    el("td", {}, ...status(queue, takers)),
    el("td", {}, operator ? limitForm(queue) : (queue.concurrency_limit ?? "none")),
    operator ? el("td", {}, toggle) : null,
  );
}

async function refresh() {
  // Not while someone is typing a limit: a refresh would replace the field.
  if (document.activeElement?.name === "limit") return true;
  const [queues, workers] = await Promise.all([api("/queues"), api("/workers")]);
  const takers = consumers(workers.items);
  document.querySelector("#queues tbody").replaceChildren(
    ...queues.items.map((queue) => row(queue, takers(queue.name))));
  document.getElementById("queues-empty").hidden = queues.items.length > 0;
  updated();
  return true;
}

live(refresh, 5000);
