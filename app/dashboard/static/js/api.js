// What every page shares: calling /api/v1 with the session cookie, building
// DOM nodes (text only: data from the API is never parsed as HTML), formats,
// roles, notices and live refresh.

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const ROLES = ["none", "viewer", "submitter", "operator", "admin"];
// The job states in the engine's order (sluice.core.jobs, rendered into the page).
export const JOB_STATES = (document.body.dataset.jobStates ?? "").split(" ").filter(Boolean);

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `The API answered ${status}${body?.statusText ? ` ${body.statusText}` : ""}.`);
    this.status = status;
    this.body = body;
  }
}

// Call the REST API. The browser sends the HttpOnly session cookie; writes add
// the CSRF token the page was rendered with. A 401 means the session ended.
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = CSRF;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    // No answer at all (the server stopped, the network dropped): no status to show.
    throw new ApiError(0, { message: "Cannot reach the Sluice API: is it running?" });
  }
  if (response.status === 401) {
    const here = location.pathname + location.search;
    location.assign(`/login?next=${encodeURIComponent(here)}`);
    throw new ApiError(401, { message: "Your session has ended; sign in again." });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data ?? { statusText: response.statusText });
  return data;
}

// The query string for `params`, leaving out empty values; arrays repeat the key.
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, item);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// el("a", {href: "/x", class: "y"}, "text", otherNode): a DOM element.
export function el(tag, attributes = {}, ...children) {
  const svg = ["svg", "g", "rect", "path", "text", "title", "defs", "marker", "line"].includes(tag)
    || (tag === "a" && attributes.svg);
  const node = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "svg" || value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// The role the page was rendered for, and whether it reaches `role`.
export function can(role) {
  return ROLES.indexOf(document.body.dataset.role) >= ROLES.indexOf(role);
}

export function stateBadge(state) {
  return el("span", { class: `badge state state-${state}`, "data-state": state }, state);
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

// "3 min ago" for a recent time, with the full time as a tooltip.
export function time(value) {
  if (!value) return el("span", { class: "muted" }, "–");
  const date = new Date(value);
  const seconds = (date.getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  let text;
  if (abs < 60) text = relative.format(Math.round(seconds), "second");
  else if (abs < 3600) text = relative.format(Math.round(seconds / 60), "minute");
  else if (abs < 86400) text = relative.format(Math.round(seconds / 3600), "hour");
  else text = date.toLocaleString();
  return el("time", { datetime: date.toISOString(), title: date.toLocaleString() }, text);
}

// A time as the clock of `timeZone` shows it ("Mon, Dec 2, 09:00 Europe/Paris"),
// with how far away it is; the tooltip gives it in the viewer's own zone. For
// schedules: "0 9 * * *" in Europe/Paris fires at 09:00 there, wherever you are.
export function zonedTime(value, timeZone) {
  if (!value) return el("span", { class: "muted" }, "–");
  const date = new Date(value);
  let clock;
  try {
    clock = new Intl.DateTimeFormat(undefined, { timeZone, weekday: "short", month: "short",
      day: "numeric", hour: "2-digit", minute: "2-digit" }).format(date);
  } catch {
    return time(value); // a zone this browser does not know
  }
  // Within a day, how far away it is ("in 3 hours"); beyond, the date says enough.
  const near = Math.abs(date.getTime() - Date.now()) < 86_400_000;
  return el("time", { datetime: date.toISOString(), title: `${date.toLocaleString()} (your time)`,
    "data-zone": timeZone }, `${clock} ${timeZone}`,
  near ? el("span", { class: "muted" }, ` (${time(value).textContent})`) : null);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export const number = (n) => (n ?? 0).toLocaleString();

export function json(value) {
  return value === null || value === undefined ? "null" : JSON.stringify(value, null, 2);
}

// A message in the page's live region (read out by screen readers).
let noticeTimer;
export function notify(message, kind = "info") {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.className = `notice ${kind}`;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 10000 : 4000);
}

// Run an action from a button: disabled while it runs, errors shown, not thrown.
export async function act(button, action, success) {
  button.disabled = true;
  try {
    const result = await action();
    if (success) notify(success);
    return result;
  } catch (error) {
    notify(error.message, "error");
    return undefined;
  } finally {
    button.disabled = false;
  }
}

// A button that POSTs to `path` (an API action), says `done` when that worked,
// then calls `after` (typically a refresh).
export function actionButton(label, path, { id, kind = "", done, after } = {}) {
  return el("button", {
    type: "button", id, class: kind || undefined,
    onclick: (event) => act(event.currentTarget, () => api(path, { method: "POST" }), done).then(after),
  }, label);
}

// The resource at `path`, or null (and the page's `missing` message shown) on a 404.
export async function found(path, missing) {
  try {
    return await api(path);
  } catch (error) {
    if (error.status !== 404) throw error;
    document.getElementById(missing).hidden = false;
    return null;
  }
}

// Call `refresh` now and every `ms` (a number, or a function giving one) while
// the page is visible, and at once when it becomes visible again; `refresh`
// returns false to stop until restart().
export function live(refresh, ms) {
  let timer;
  let stopped = false;
  const tick = async () => {
    clearTimeout(timer);
    if (stopped) return;
    let again = true;
    try {
      again = (await refresh()) !== false;
    } catch (error) {
      notify(error.message, "error");
    }
    if (again && !document.hidden) timer = setTimeout(tick, typeof ms === "function" ? ms() : ms);
    else if (!again) stopped = true;
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
  tick();
  return { restart() { stopped = false; tick(); } };
}

export function updated() {
  const line = document.getElementById("updated");
  if (line) line.textContent = `Updated ${new Date().toLocaleTimeString()}`;
}

// The sign-out button (every signed-in page has one).
document.getElementById("logout")?.addEventListener("click", async () => {
  await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": CSRF }, credentials: "same-origin" });
  location.assign("/login");
});

// A run's progress bar: one segment per finished state, so a failed run shows
// red (and grey for what its failure cancelled), never a full green bar.
// Skipped nodes are done too (a branch its condition left out).
const FINISHED = ["succeeded", "failed", "cancelled", "skipped"];

export function runProgress(run) {
  const total = run.nodes || 0;
  const share = (n) => (total ? (100 * n) / total : 0);
  const segments = FINISHED.filter((state) => run[state] > 0).map((state) => {
    const segment = el("div", { class: `segment state-${state}`, "data-state": state });
    segment.style.width = `${share(run[state])}%`;
    return segment;
  });
  const succeeded = Math.round(share(run.succeeded));
  return el("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": succeeded, "aria-valuetext": runSummary(run),
    "aria-label": `Run ${run.id} progress`, "data-run-state": run.state }, ...segments);
}

// "2 of 3 succeeded (67%), 1 failed": what the bar shows, in words.
export function runSummary(run) {
  const total = run.nodes || 0;
  const pct = total ? Math.round((100 * run.succeeded) / total) : 0;
  const parts = [`${number(run.succeeded)} of ${number(total)} succeeded (${pct}%)`];
  if (run.failed) parts.push(`${number(run.failed)} failed`);
  if (run.cancelled) parts.push(`${number(run.cancelled)} cancelled`);
  if (run.skipped) parts.push(`${number(run.skipped)} skipped`);
  const pending = total - run.succeeded - run.failed - run.cancelled - (run.skipped ?? 0);
  if (pending > 0) parts.push(`${number(pending)} to go`);
  return parts.join(", ");
}
