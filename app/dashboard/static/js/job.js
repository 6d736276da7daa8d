// One job: facts, payload, result, attempts as a timeline; Cancel and Retry for
// the roles that may. Refreshed while the job is not finished.
import { actionButton, can, duration, el, found, json, live, stateBadge, time } from "./api.js";

const id = document.getElementById("main").dataset.jobId;
const FINISHED = ["succeeded", "failed", "cancelled"];

function fact(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

function facts(job) {
  return [
    fact("Task", job.task),
    fact("Queue", el("a", { href: `/jobs?queue=${encodeURIComponent(job.queue)}` }, job.queue)),
    fact("Tenant", job.tenant),
    fact("Attempt", `${job.attempt} of ${job.max_attempts}`),
    fact("Priority", String(job.priority)),
    job.run_id ? fact("Run", el("a", { href: `/runs/${job.run_id}` }, `run ${job.run_id}`), ` · node ${job.node}`) : [],
    job.depends_on.length ? fact("Depends on", job.depends_on.flatMap((p, i) => [
      i ? ", " : "", el("a", { href: `/jobs/${p}` }, String(p))])) : [],
    fact("Created", time(job.created_at)),
    fact("Runs at", time(job.run_at)),
    fact("Started", time(job.started_at)),
    fact("Finished", time(job.finished_at)),
    job.worker_id ? fact("Worker", job.worker_id) : [],
    job.reason ? fact("Reason", job.reason) : [],
    job.progress !== null ? fact("Progress", json(job.progress)) : [],
  ].flat();
}

function attempt(a) {
  const took = a.started_at ? (new Date(a.finished_at) - new Date(a.started_at)) / 1000 : null;
  return el("li", { class: `attempt outcome-${a.outcome}`, "data-attempt": a.attempt },
    el("div", { class: "attempt-head" },
      el("strong", {}, `Attempt ${a.attempt}`),
      el("span", { class: `badge state state-${a.outcome === "succeeded" ? "succeeded" : a.outcome === "cancelled" ? "cancelled" : "failed"}` }, a.outcome),
      el("span", { class: "muted" }, a.worker_id ?? ""),
      time(a.finished_at),
      el("span", { class: "muted" }, took === null ? "" : `took ${duration(took)}`)),
    a.error ? el("pre", { class: "error-text" }, a.error) : null,
    a.output ? el("details", {}, el("summary", {}, "Output (tail)"), el("pre", { class: "output" }, a.output)) : null,
  );
}

function buttons(job) {
  return [
    can("submitter") && !FINISHED.includes(job.state) && actionButton("Cancel", `/jobs/${id}/cancel`,
      { id: "cancel", kind: "danger", done: `Job ${id} cancelled.`, after: refresh }),
    can("operator") && ["failed", "cancelled"].includes(job.state) && actionButton("Retry", `/jobs/${id}/retry`,
      { id: "retry", done: `Job ${id} will run again.`, after: () => poller.restart() }),
  ].filter(Boolean);
}

async function refresh() {
  const job = await found(`/jobs/${id}`, "job-missing");
  if (!job) return false;
  document.getElementById("job").hidden = false;
  document.getElementById("job-state").replaceChildren(stateBadge(job.state));
  document.getElementById("actions").replaceChildren(...buttons(job));
  document.getElementById("facts").replaceChildren(...facts(job));
  document.getElementById("payload").textContent = json(job.payload);
  document.getElementById("result").textContent = json(job.result);
  document.getElementById("error-section").hidden = !job.last_error;
  document.getElementById("last-error").textContent = job.last_error ?? "";
  document.getElementById("attempts").replaceChildren(...job.attempts.map(attempt));
  document.getElementById("no-attempts").hidden = job.attempts.length > 0;
  return !FINISHED.includes(job.state);
}

const poller = live(refresh, 2000);
