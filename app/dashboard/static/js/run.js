// One DAG run drawn as a graph. The layout (where each node goes, by
// dependency depth) is fetched once: a run's shape never changes. The states
// are polled while the run is running, and each node's colour follows its state.
import { actionButton, api, can, el, found, live, number, runProgress, runSummary, stateBadge, time } from "./api.js";

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
      el("text", { x: 10, y: h / 2 + 5 }, label(node.id, 20)));
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

function colour(nodes) {
  for (const node of nodes) {
    const shape = shapes.get(node.id);
    if (!shape) continue;
    shape.setAttribute("class", `node state-${node.state}`);
    shape.dataset.state = node.state;
    shape.querySelector("title").textContent = `${node.id}: ${node.state}${node.last_error ? ` — ${node.last_error}` : ""}`;
    shape.parentNode.setAttribute("aria-label", `node ${node.id}, ${node.state}`);
  }
}

// The node table stops at TABLE_LIMIT rows (a huge run would make every refresh
// slow); the jobs list, filtered by run, pages through the rest.
const TABLE_LIMIT = 1000;

function nodeRows(nodes) {
  const depth = new Map(drawing.nodes.map((n) => [n.id, n.depth]));
  const rest = nodes.length > TABLE_LIMIT
    ? el("tr", {}, el("td", { colspan: 6, class: "empty" }, `${number(nodes.length - TABLE_LIMIT)} more: `,
      el("a", { href: `/jobs?run_id=${id}` }, "every job of this run")))
    : null;
  return [...nodes.slice(0, TABLE_LIMIT).map((node) => el("tr", { "data-node": node.id },
    el("th", { scope: "row" }, el("a", { href: `/jobs/${node.job_id}` }, node.id)),
    el("td", { class: "num" }, String(depth.get(node.id) ?? "")),
    el("td", {}, node.task),
    el("td", {}, stateBadge(node.state)),
    el("td", { class: "num" }, `${node.attempt}/${node.max_attempts}`),
    el("td", { class: "error-cell" }, node.last_error ?? node.reason ?? ""),
  )), rest].filter(Boolean);
}

function buttons(run) {
  return [
    can("operator") && (run.failed > 0 || run.cancelled > 0) && actionButton("Retry failed nodes",
      `/runs/${id}/retry`, { id: "retry", done: "Failed nodes will run again.", after: () => poller.restart() }),
    can("submitter") && run.state === "running" && actionButton("Cancel run", `/runs/${id}/cancel`,
      { id: "cancel", kind: "danger", done: `Run ${id} cancelled.`, after: () => poller.restart() }),
  ].filter(Boolean);
}

function facts(run) {
  const pairs = [
    ["DAG", run.dag_name ? `${run.dag_name} v${run.dag_version}` : "inline definition"],
    ["Nodes", `${number(run.nodes)}: ${run.succeeded} succeeded, ${run.running} running, ${run.ready} ready, `
      + `${run.blocked} blocked, ${run.failed} failed, ${run.cancelled} cancelled`],
    ["Progress", runSummary(run)],
    ["Created", time(run.created_at)],
    ["Finished", time(run.finished_at)],
  ];
  return pairs.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]);
}

async function refresh() {
  const graphState = await found(`/runs/${id}`, "run-missing");
  if (!graphState) return false;
  const { run, nodes } = graphState;
  if (!drawing) {
    drawing = await api(`/runs/${id}/layout`);
    document.getElementById("run").hidden = false;
    if (drawing.drawn) draw(drawing);
  }
  if (drawing.drawn) colour(nodes);
  else summarise(drawing, nodes);
  document.getElementById("run-state").replaceChildren(stateBadge(run.state));
  document.getElementById("actions").replaceChildren(...buttons(run));
  document.getElementById("facts").replaceChildren(...facts(run));
  document.getElementById("progress").replaceChildren(runProgress(run));
  document.querySelector("#nodes tbody").replaceChildren(...nodeRows(nodes));
  return run.state === "running";
}

// Runs too large to draw are polled less often: each poll carries every node's state.
const poller = live(refresh, () => (drawing && !drawing.drawn ? 5000 : 1000));
