// A stacked bar chart as SVG: one bar per entry, one segment per part, coloured
// by the part's state class. Scales to its container through its viewBox.
import { el, number } from "./api.js";

const WIDTH = 1000;
const HEIGHT = 200;
const AXIS = 36; // room for the y labels on the left
const FOOT = 18; // and the x labels below

export function barChart(entries) {
  const totals = entries.map((e) => e.parts.reduce((sum, [, n]) => sum + n, 0));
  const top = Math.max(1, ...totals);
  const slot = (WIDTH - AXIS) / Math.max(entries.length, 1);
  const scale = (HEIGHT - FOOT - 8) / top;
  const sums = {};
  for (const entry of entries) {
    for (const [name, n] of entry.parts) sums[name] = (sums[name] ?? 0) + n;
  }
  const summary = Object.entries(sums).map(([name, n]) => `${number(n)} ${name}`).join(", ");

  const bars = entries.map((entry, i) => {
    let y = HEIGHT - FOOT;
    const x = AXIS + i * slot + 1;
    const segments = entry.parts.filter(([, n]) => n > 0).map(([name, n]) => {
      const h = n * scale;
      y -= h;
      return el("rect", { class: `segment state-${name}`, x, y, width: Math.max(slot - 2, 1), height: h });
    });
    const label = `${entry.label}: ${entry.parts.map(([name, n]) => `${n} ${name}`).join(", ")}`;
    return el("g", { class: "bar" }, el("title", {}, label), segments,
      // An invisible full-height target, so an empty minute has a tooltip too.
      el("rect", { class: "hit", x, y: 0, width: Math.max(slot - 2, 1), height: HEIGHT - FOOT }));
  });

  const every = Math.max(1, Math.ceil(entries.length / 6));
  const xLabels = entries.map((entry, i) => (i % every === 0 || i === entries.length - 1
    ? el("text", { class: "tick", x: AXIS + i * slot + slot / 2, y: HEIGHT - 4, "text-anchor": "middle" }, entry.label)
    : null));
  const yLabels = [0, top].map((value) => el("text", {
    class: "tick", x: AXIS - 6, y: HEIGHT - FOOT - value * scale + 4, "text-anchor": "end",
  }, number(value)));

  return el("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "bars",
    "aria-label": `Jobs finished per minute over the last hour: ${summary || "none"}.`,
  },
  el("line", { class: "axis", x1: AXIS, x2: WIDTH, y1: HEIGHT - FOOT, y2: HEIGHT - FOOT }),
  yLabels, xLabels, bars);
}
