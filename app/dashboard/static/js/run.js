// One DAG run drawn as a graph. The layout (where each node goes, by
// dependency depth) is fetched once: a run's shape never changes. The states
// are polled while the run is running, and each node's colour follows its state.
// A mapped node is one node with its elements counted; a waiting node says what
// it waits for; operators signal waiting nodes and rerun from a finished one.
import {
  ApiError, act, actionButton, api, can, el, found, live, notify, number, runProgress, runSummary, stateBadge, time,
} from "./api.js";

const id = document.getElementById("main").dataset.runId;
const graph = document.getElementById("graph");
const shapes = new Map(); // node id -> the SVG group drawn for it
let drawing;

function label(text, room) {
  return text.length > room ? `${text.slice(0, room - 1)}…` : text;
}

function draw(layout) {
  const w = layout.node_width;
  const h = layout.node_height;
  const edges = layout.edges.map((edge) => el("path", {
    class: "edge",
    d: edge.points.map(([x, y], i) => `${i ? "L" : "M"}${x},${y}`).join(" "),
    "marker-end": "url(#arrow)",
  }));
  const nodes = layout.nodes.map((node) => {
    const group = el("g", { class: "node", "data-node": node.id, transform: `translate(${node.x - w / 2},${node.y - h / 2})` },
      el("title", {}, node.id),
      el("rect", { width: w, height: h, rx: 6 }),
      el("text", { x: 10, y: h / 2 + 5 }, label(node.id, 20)),
      // What the state leaves unsaid: a map's counts, what a wait waits for.
      el("text", { class: "mark", x: w - 8, y: 12, "text-anchor": "end" }, ""));
    group.dataset.width = w;
    group.dataset.height = h;
    shapes.set(node.id, group);
    return el("a", { svg: true, href: `/jobs/${node.job_id}`, "aria-label": `node ${node.id}` }, group);
  });
  const svg = el("svg", {
    class: "dag", viewBox: `0 0 ${layout.width} ${layout.height}`, role: "group",
    "aria-label": `DAG of run ${id}: ${layout.nodes.length} nodes`, "data-width": layout.width,
  },
  el("defs", {}, el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))),
  el("g", { class: "edges" }, edges),
  el("g", { class: "nodes" }, nodes));
  fit(svg, true);
  graph.replaceChildren(svg);
}

// Fit the drawing to the page width (the default), or show it at actual size.
function fit(svg, fitted) {
  const width = Number(svg.dataset.width);
  svg.style.width = fitted ? `${Math.min(width, graph.clientWidth || width)}px` : `${width}px`;
  const button = document.getElementById("zoom");
  button.setAttribute("aria-pressed", String(!fitted));
  button.textContent = fitted ? "Actual size" : "Fit to width";
}
document.getElementById("zoom").addEventListener("click", () => {
  const svg = graph.querySelector("svg.dag");
  if (svg) fit(svg, document.getElementById("zoom").getAttribute("aria-pressed") === "true");
});

// Too many nodes to draw one by one: a row per depth with its nodes counted by state.
function summarise(layout, nodes) {
  document.getElementById("zoom").hidden = true;
  const note = document.getElementById("graph-note");
  note.hidden = false;
  note.textContent = `This run has ${number(layout.nodes.length)} nodes, more than are drawn one by one: `
    + "each depth is summarised by state.";
  const depth = new Map(layout.nodes.map((n) => [n.id, n.depth]));
  const rows = new Map();
  for (const node of nodes) {
    const d = depth.get(node.id) ?? 0;
    const counts = rows.get(d) ?? {};
    counts[node.state] = (counts[node.state] ?? 0) + 1;
    rows.set(d, counts);
  }
  const table = el("table", { class: "depths" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Depth"), el("th", { scope: "col" }, "Nodes by state"))),
    el("tbody", {}, [...rows.keys()].sort((a, b) => a - b).map((d) => el("tr", { "data-depth": d },
      el("th", { scope: "row" }, String(d)),
      el("td", {}, Object.entries(rows.get(d)).map(([state, n]) =>
        el("span", { class: `badge state state-${state}`, "data-state": state }, `${number(n)} ${state}`)))))));
  graph.replaceChildren(table);
}

// A mapped node's elements per state, in the order a bar shows them.
const ELEMENT_STATES = ["succeeded", "failed", "cancelled", "running", "ready", "scheduled"];
const ELEMENTS_DONE = ["succeeded", "failed", "cancelled"];

// A mapped node that has expanded (an empty map succeeds with none): its elements
// say more than its state. Before (or when the map itself failed) there are none.
function mapped(node) {
  return node.map && (node.map.total > 0 || node.state === "succeeded") ? node.map : null;
}

function elementsDone(counts) {
  return ELEMENTS_DONE.reduce((sum, state) => sum + (counts[state] ?? 0), 0);
}

// Why a node was skipped or ended, in words (reason codes of docs/dags.md).
const REASONS = {
  condition_false: "its condition was false",
  upstream_skipped: "a parent was skipped",
  upstream_failed: "a node above it failed",
  no_upstream_success: "no parent succeeded",
  no_upstream_failure: "no parent failed",
  wait_timeout: "no signal before its timeout",
  run_timeout: "the run timed out",
  when_unknown: "its condition was neither true nor false",
  template_error: "its payload could not be rendered",
  map_invalid: "its map is not a list",
  map_too_large: "its map is too long",
  result_too_large: "its result is too large",
};

// "14:05" today, "Dec 2, 14:05" another day: short enough for a node's corner.
function clock(value) {
  const date = new Date(value);
  const today = date.toDateString() === new Date().toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

// One line on what a node is doing beyond its state, for the graph's tooltip.
function status(node) {
  const c = mapped(node);
  if (c) {
    return `map: ${number(elementsDone(c))} of ${number(c.total)} elements done`
      + (c.failed ? `, ${number(c.failed)} failed` : "") + (c.running ? `, ${number(c.running)} running` : "");
  }
  if (node.state === "waiting" && node.waiting_for === "signal") {
    return `waiting for a signal${node.wakes_at ? `, times out at ${clock(node.wakes_at)}` : ""}`;
  }
  if (node.state === "waiting" && node.waiting_for === "duration") return `waiting until ${clock(node.wakes_at)}`;
  if (node.state === "skipped") return `skipped: ${REASONS[node.reason] ?? node.reason ?? "skipped"}`;
  return node.last_error ?? "";
}

// The short mark drawn in a node's corner: a map's done/total.
function mark(node) {
  const c = mapped(node);
  return c ? `${number(elementsDone(c))}/${number(c.total)}` : "";
}

// A wait's mark, top left: an hourglass (drawn, not a glyph a font may lack) and
// what it waits for.
function waitMark(node) {
  const text = node.waiting_for === "signal" ? "signal" : `until ${clock(node.wakes_at)}`;
  return el("g", { class: "wait-mark" },
    el("path", { d: "M8,3 h7 l-3.5,4.5 l3.5,4.5 h-7 l3.5,-4.5 z" }),
    el("text", { x: 19, y: 12 }, text));
}

// A stacked bar of a map's elements per state: inside the node (SVG) or in the table (HTML).
function mapBar(counts, w, h) {
  const total = counts.total || 1;
  let x = 8;
  const room = w - 16;
  const parts = ELEMENT_STATES.filter((state) => counts[state] > 0).map((state) => {
    const width = (room * counts[state]) / total;
    const part = el("rect", { class: `segment state-${state}`, x, y: h - 8, width, height: 4, "data-state": state });
    x += width;
    return part;
  });
  return el("g", { class: "map-bar" }, el("rect", { class: "track", x: 8, y: h - 8, width: room, height: 4 }), parts);
}

function mapCounts(counts) {
  const segments = ELEMENT_STATES.filter((state) => counts[state] > 0).map((state) => {
    const part = el("span", { class: `segment state-${state}`, "data-state": state });
    part.style.width = `${(100 * counts[state]) / (counts.total || 1)}%`;
    return part;
  });
  const words = ELEMENT_STATES.filter((state) => counts[state] > 0).map((state) => `${number(counts[state])} ${state}`);
  return el("span", { class: "map-counts", "data-total": counts.total },
    el("span", { class: "progress", role: "img", "aria-label": words.join(", ") || "no elements" }, segments),
    ` ${number(elementsDone(counts))} of ${number(counts.total)} elements done`,
    words.length ? el("span", { class: "muted small" }, ` (${words.join(", ")})`) : null,
    // The elements themselves, one job each, page by page in the jobs list.
    counts.total ? [" · ", el("a", { href: `/jobs?run_id=${id}`, class: "small" }, "jobs")] : null);
}

function colour(nodes) {
  for (const node of nodes) {
    const shape = shapes.get(node.id);
    if (!shape) continue;
    shape.setAttribute("class", `node state-${node.state}${node.map ? " mapped" : ""}`);
    shape.dataset.state = node.state;
    const said = status(node);
    shape.querySelector("title").textContent = `${node.id}: ${node.state}${said ? ` — ${said}` : ""}`;
    shape.querySelector("text.mark").textContent = mark(node);
    shape.querySelector("g.map-bar")?.remove();
    if (mapped(node)) shape.append(mapBar(node.map, Number(shape.dataset.width), Number(shape.dataset.height)));
    shape.querySelector("g.wait-mark")?.remove();
    if (node.state === "waiting" && node.waiting_for !== "map") shape.append(waitMark(node));
    shape.parentNode.setAttribute("aria-label", `node ${node.id}, ${node.state}${said ? `, ${said}` : ""}`);
  }
}

// The node table stops at TABLE_LIMIT rows (a huge run would make every refresh
// slow); the jobs list, filtered by run, pages through the rest.
const TABLE_LIMIT = 1000;

function detail(node) {
  if (mapped(node)) return [mapCounts(node.map), node.last_error ? el("div", {}, node.last_error) : null];
  if (node.state === "waiting" && node.waiting_for === "signal") {
    return el("span", { class: "waiting" }, "waiting for a signal",
      node.wakes_at ? [", times out ", time(node.wakes_at)] : " (no timeout)");
  }
  if (node.state === "waiting" && node.waiting_for === "duration") {
    return el("span", { class: "waiting" }, "waiting: wakes ", time(node.wakes_at));
  }
  if (node.state === "skipped") return el("span", { class: "muted" }, REASONS[node.reason] ?? node.reason ?? "");
  return node.last_error ?? node.reason ?? "";
}

function result(node) {
  if (node.result_preview === null || node.result_preview === undefined) return el("span", { class: "muted" }, "–");
  return el("span", { class: "result" },
    el("code", {}, node.result_truncated ? `${node.result_preview}…` : node.result_preview),
    node.result_truncated
      ? el("button", { type: "button", class: "quiet small show-all", onclick: () => showResult(node.id) }, "show all")
      : null);
}

const FINISHED_NODE = ["succeeded", "failed", "cancelled", "skipped"];

function nodeActions(run, node) {
  if (!can("operator")) return [];
  return [
    node.state === "waiting" && node.waiting_for === "signal"
      && el("button", { type: "button", class: "small signal", onclick: () => openSignal(node) }, "Signal"),
    run.state !== "queued" && FINISHED_NODE.includes(node.state)
      && el("button", { type: "button", class: "quiet small rerun", onclick: (event) => rerun(event.currentTarget, node.id) },
        "Rerun from here"),
  ].filter(Boolean);
}

function nodeRows(run, nodes) {
  const depth = new Map(drawing.nodes.map((n) => [n.id, n.depth]));
  const rest = nodes.length > TABLE_LIMIT
    ? el("tr", {}, el("td", { colspan: 9, class: "empty" }, `${number(nodes.length - TABLE_LIMIT)} more: `,
      el("a", { href: `/jobs?run_id=${id}` }, "every job of this run")))
    : null;
  return [...nodes.slice(0, TABLE_LIMIT).map((node) => el("tr", { "data-node": node.id },
    el("th", { scope: "row" }, el("a", { href: `/jobs/${node.job_id}` }, node.id)),
    el("td", { class: "num" }, String(depth.get(node.id) ?? "")),
    el("td", {}, node.task),
    el("td", {}, stateBadge(node.state)),
    el("td", { class: "num" }, `${node.attempt}/${node.max_attempts}`),
    el("td", { class: "error-cell detail" }, detail(node)),
    el("td", { class: "result-cell" }, result(node)),
    el("td", {}, el("div", { class: "buttons" }, nodeActions(run, node))),
  )), rest].filter(Boolean);
}

// The whole result of a node in the panel below the table (which the refresh
// leaves alone). Past SHOWN_CHARACTERS the JSON is cut: the raw link has it all.
const SHOWN_CHARACTERS = 200_000;

async function showResult(node) {
  const panel = document.getElementById("result-panel");
  const path = `/runs/${id}/nodes/${encodeURIComponent(node)}/result`;
  let answer;
  try {
    answer = await api(path);
  } catch (error) {
    notify(error.message, "error");
    return;
  }
  const text = JSON.stringify(answer.result, null, 2) ?? "null";
  document.getElementById("result-title").textContent = `Result of ${node}`;
  document.getElementById("result-raw").href = `/api/v1${path}`;
  const note = document.getElementById("result-note");
  note.hidden = text.length <= SHOWN_CHARACTERS;
  note.textContent = `The first ${number(SHOWN_CHARACTERS)} of ${number(text.length)} characters: open it as JSON for all of it.`;
  document.getElementById("result-full").textContent = text.slice(0, SHOWN_CHARACTERS);
  panel.hidden = false;
  panel.scrollIntoView({ block: "nearest" });
}
document.getElementById("result-close").addEventListener("click", () => {
  document.getElementById("result-panel").hidden = true;
});

async function rerun(button, node) {
  if (!confirm(`Rerun run ${id} from ${node}? ${node} and every node below it run again; the others keep their results.`)) {
    return;
  }
  await act(button, () => api(`/runs/${id}/rerun`, { method: "POST", body: { from: node } }),
    `Run ${id} runs again from ${node}.`);
  poller.restart();
}

// The Signal dialog (operators only: the template leaves it out for other roles).
const signalDialog = document.getElementById("signal-dialog");
let signalled = null;

function openSignal(node) {
  signalled = node.id;
  document.getElementById("signal-title").textContent = `Signal ${node.id}`;
  document.getElementById("signal-help").textContent = `Node ${node.id} of run ${id} waits for a signal`
    + `${node.wakes_at ? ` until ${new Date(node.wakes_at).toLocaleString()}` : ""}. It succeeds with this `
    + "payload as its result, and the nodes after it move on.";
  document.getElementById("signal-payload").value = "{}";
  document.getElementById("signal-error").hidden = true;
  signalDialog.showModal();
  document.getElementById("signal-payload").focus();
}

function signalError(message) {
  const box = document.getElementById("signal-error");
  box.textContent = message;
  box.hidden = false;
}

signalDialog?.querySelector("#signal-cancel").addEventListener("click", () => signalDialog.close());
signalDialog?.querySelector("#signal-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  let payload;
  try {
    payload = JSON.parse(document.getElementById("signal-payload").value);
  } catch (error) {
    signalError(`The payload is not JSON: ${error.message}`);
    return;
  }
  if (!confirm(`Signal ${signalled} of run ${id}? It succeeds now, with this payload as its result.`)) return;
  const button = document.getElementById("signal-send");
  button.disabled = true;
  try {
    const node = await api(`/runs/${id}/nodes/${encodeURIComponent(signalled)}/signal`,
      { method: "POST", body: { payload } });
    signalDialog.close();
    notify(`${signalled} signalled: ${node.state}.`);
    poller.restart();
  } catch (error) {
    // The API's own words (a 409 says why the node is not waiting for a signal).
    signalError(error instanceof ApiError ? error.message : String(error));
  } finally {
    button.disabled = false;
  }
});

function buttons(run) {
  return [
    can("operator") && (run.failed > 0 || run.cancelled > 0) && actionButton("Retry failed nodes",
      `/runs/${id}/retry`, { id: "retry", done: "Failed nodes will run again.", after: () => poller.restart() }),
    can("submitter") && ACTIVE.includes(run.state) && actionButton("Cancel run", `/runs/${id}/cancel`,
      { id: "cancel", kind: "danger", done: `Run ${id} cancelled.`, after: () => poller.restart() }),
  ].filter(Boolean);
}

// A run still moving: running, or queued behind its DAG's concurrency limit.
const ACTIVE = ["queued", "running"];

function facts(run) {
  const counts = ["succeeded", "running", "ready", "waiting", "blocked", "failed", "cancelled", "skipped"]
    .filter((state) => run[state] !== undefined && (run[state] > 0 || !["waiting", "skipped"].includes(state)))
    .map((state) => `${number(run[state])} ${state}`);
  const pairs = [
    ["DAG", run.dag_name ? `${run.dag_name} v${run.dag_version}` : "inline definition"],
    run.state === "queued" && ["Queued", run.queue_position === null || run.queue_position === undefined
      ? "waiting for a concurrency slot"
      : `waiting for a concurrency slot, ${number(run.queue_position)} queued runs first`],
    ["Nodes", `${number(run.nodes)}: ${counts.join(", ")}`],
    run.elements > 0 && ["Map elements", `${number(run.elements_done)} of ${number(run.elements)} done`],
    ["Progress", runSummary(run)],
    run.occurrence && ["Occurrence", time(run.occurrence)],
    ["Created", time(run.created_at)],
    run.deadline && ["Deadline", time(run.deadline)],
    ["Finished", time(run.finished_at)],
    run.reason && ["Reason", run.reason === "timeout" ? "timed out: what was left was cancelled" : run.reason],
  ].filter(Boolean);
  return pairs.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]);
}

async function refresh() {
  const graphState = await found(`/runs/${id}`, "run-missing");
  if (!graphState) return false;
  const { run, nodes } = graphState;
  // A run's shape never changes once it has started; a queued run has no nodes
  // until then, so it is drawn again when they appear.
  if (!drawing || drawing.nodes.length !== nodes.length) {
    drawing = await api(`/runs/${id}/layout`);
    document.getElementById("run").hidden = false;
    shapes.clear();
    if (drawing.drawn) draw(drawing);
  }
  if (drawing.drawn) colour(nodes);
  else summarise(drawing, nodes);
  document.getElementById("run-state").replaceChildren(stateBadge(run.state));
  document.getElementById("actions").replaceChildren(...buttons(run));
  document.getElementById("facts").replaceChildren(...facts(run));
  document.getElementById("progress").replaceChildren(runProgress(run));
  document.querySelector("#nodes tbody").replaceChildren(...nodeRows(run, nodes));
  return ACTIVE.includes(run.state);
}

// Runs too large to draw are polled less often: each poll carries every node's state.
const poller = live(refresh, () => (drawing && !drawing.drawn ? 5000 : 1000));
