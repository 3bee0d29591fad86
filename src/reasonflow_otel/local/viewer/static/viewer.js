// reasonflow-otel viewer: plain JavaScript, no build step, no network beyond this server.
// Pages are drawn from the JSON API; text from traces is only ever set as textContent.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 5000;
const WINDOWS = { "": "any time", "15m": "last 15 minutes", "1h": "last hour", "24h": "last 24 hours", "7d": "last 7 days" };
const WINDOW_MS = { "15m": 9e5, "1h": 36e5, "24h": 864e5, "7d": 6048e5 };
let refreshTimer = null;

// --- Small helpers ------------------------------------------------------------------------------

function h(tag, attributes, ...children) {
  return fill(document.createElement(tag), attributes, children);
}

function s(tag, attributes, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attributes, children);
}

function fill(element, attributes, children) {
  setAttributes(element, attributes);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function setAttributes(element, attributes) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === "function") listen(element, name.slice(2), value);
    else if (name === "style") element.style.cssText = value; // CSSOM: allowed by the CSP
    else element.setAttribute(name, value === true ? "" : String(value));
  }
}

function listen(element, event, handler) {
  element.addEventListener(event, handler);
  if (event === "click" && !["A", "BUTTON", "SELECT", "INPUT"].includes(element.tagName)) {
    // Clickable rows and graph nodes work from the keyboard too.
    element.setAttribute("tabindex", "0");
    element.addEventListener("keydown", (e) => { if (e.key === "Enter") handler(e); });
  }
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds <= 0) return "0 ms";
  if (seconds < 0.001) return (seconds * 1000).toFixed(3) + " ms";
  if (seconds < 1) return (seconds * 1000).toPrecision(3) + " ms";
  if (seconds < 59.95) return seconds.toPrecision(3) + " s";
  const minutes = Math.floor(Math.round(seconds) / 60);
  return minutes >= 60
    ? `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`
    : `${minutes}m ${String(Math.round(seconds) % 60).padStart(2, "0")}s`;
}

function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let scaled = Math.abs(value);
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) { scaled /= 1024; unit += 1; }
  return (value < 0 ? "-" : "") + (unit ? scaled.toFixed(1) : scaled) + " " + units[unit];
}

function percent(ratio) { return (ratio * 100).toFixed(1) + "%"; }

function localTime(iso, milliseconds = false) {
  const date = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  const ms = milliseconds ? "." + String(date.getMilliseconds()).padStart(3, "0") : "";
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}${ms}`;
}

function statusBadge(status) {
  return h("span", { class: `badge ${status}` }, status === "error" ? "error" : "ok");
}

function valueText(value) {
  if (typeof value === "number" && !Number.isInteger(value)) return String(Number(value.toPrecision(6)));
  return typeof value === "string" ? value : JSON.stringify(value);
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showFileState(file) {
  const parts = [`${file.traces} traces · ${file.spans} spans`];
  if (file.source === "jaeger") parts.push("from Jaeger");
  if (!file.exists) parts.splice(0, 1, (file.source === "jaeger" ? "asking Jaeger at " : "waiting for ") + file.path);
  if (file.error) parts.splice(0, 1, file.error);
  if (file.skipped_lines) parts.push(`${file.skipped_lines} unreadable lines skipped`);
  if (file.indexing) parts.push(`reading the file… ${percent(file.indexed_bytes / Math.max(file.size_bytes, 1))}`);
  const state = document.getElementById("file-state");
  state.textContent = parts.join(" · ");
  state.title = [file.path, file.first_skipped].filter(Boolean).join("\n");
}

function render(...children) {
  const app = document.getElementById("app");
  app.replaceChildren(...children.flat(Infinity).filter((child) => child !== null && child !== undefined));
}

function failure(error) {
  render(h("p", { class: "error-box" }, String(error.message || error)));
}

// --- Routing ------------------------------------------------------------------------------------

function route() {
  clearTimeout(refreshTimer);
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(search || "");
  const page = parts[0] || "runs";
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === (page === "run" ? "runs" : page));
  }
  if (page === "run" && parts[1]) runPage(decodeURIComponent(parts[1])).catch(failure);
  else if (page === "workflows") workflowsPage().catch(failure);
  else runsPage(params).catch(failure);
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// --- Runs ---------------------------------------------------------------------------------------

async function runsPage(params) {
  const data = await getJSON("/api/traces?" + tracesQuery(params));
  render(h("h1", null, "Runs"), runFilters(params, data.workflows), h("div", { id: "runs-results" }));
  showRuns(data, params);
}

async function refreshRuns(params) {
  // Only the results: the filters keep their focus and what is being typed.
  try {
    const data = await getJSON("/api/traces?" + tracesQuery(params));
    if (document.getElementById("runs-results")) showRuns(data, params);
  } catch (error) { // e.g. a trace id that is not hex: said under the filters
    const results = document.getElementById("runs-results");
    if (results) results.replaceChildren(h("p", { class: "error-box" }, error.message));
  }
}

function tracesQuery(params) {
  const query = new URLSearchParams();
  for (const name of ["workflow", "status", "q"]) {
    if (params.get(name)) query.set(name, params.get(name));
  }
  const window_ = params.get("window") || "";
  if (WINDOW_MS[window_]) query.set("since", new Date(Date.now() - WINDOW_MS[window_]).toISOString());
  return query.toString();
}

function showRuns(data, params) {
  showFileState(data.file);
  document.getElementById("runs-results").replaceChildren(
    data.traces.length ? runsTable(data.traces) : h("p", { class: "empty" }, emptyText(data)),
    data.matched > data.traces.length
      ? h("p", { class: "muted" }, `${data.traces.length} of ${data.matched} traces shown`)
      : "",
  );
  refreshTimer = setTimeout(() => refreshRuns(params), data.file.indexing ? 1000 : REFRESH_MS);
}

function emptyText(data) {
  if (data.file.error) return data.file.error;
  if (data.file.source === "jaeger") {
    return data.file.traces ? "No run matches the filters." : `Jaeger at ${data.file.path} has no traces from the last 7 days yet.`;
  }
  if (!data.file.exists) return `No trace file yet at ${data.file.path}: run an instrumented program.`;
  return data.file.traces ? "No run matches the filters." : `No traces in ${data.file.path} yet.`;
}

function runFilters(params, workflows) {
  const apply = () => {
    const form = document.getElementById("filters");
    const next = new URLSearchParams();
    for (const field of form.querySelectorAll("[name]")) {
      if (field.value.trim()) next.set(field.name, field.value.trim());
    }
    // The address follows the filters without redrawing them (typing keeps its focus).
    history.replaceState(null, "", "#/runs?" + next.toString());
    clearTimeout(refreshTimer);
    refreshRuns(next);
  };
  const select = (name, options, label) => h(
    "label", null, label,
    h("select", { name, onchange: apply },
      Object.entries(options).map(([value, text]) =>
        h("option", { value, selected: (params.get(name) || "") === value }, text))),
  );
  const workflowOptions = { "": "all workflows" };
  for (const name of workflows) workflowOptions[name] = name;
  let typing = null;
  return h("form", { id: "filters", class: "filters", onsubmit: (e) => e.preventDefault() },
    select("workflow", workflowOptions, "Workflow"),
    select("status", { "": "any status", ok: "ok", error: "error" }, "Status"),
    select("window", WINDOWS, "Time"),
    h("label", null, "Trace id",
      h("input", {
        name: "q", value: params.get("q") || "", placeholder: "prefix, e.g. 4bf92f35",
        spellcheck: "false", autocomplete: "off",
        oninput: () => { clearTimeout(typing); typing = setTimeout(apply, 400); },
      })),
  );
}

function runsTable(traces) {
  const maxDuration = Math.max(...traces.map((t) => t.duration_s), 1e-9);
  return h("table", { class: "runs" },
    h("thead", null, h("tr", null,
      ["Time", "Trace id", "Workflow", "Service", "Status"].map((t) => h("th", null, t)),
      ["Duration", "Spans"].map((t) => h("th", { class: "num" }, t)))),
    h("tbody", null, traces.map((trace) => h("tr", {
      "data-trace-id": trace.trace_id,
      class: "clickable",
      onclick: () => { location.hash = "#/run/" + trace.trace_id; },
    },
    h("td", { title: trace.start }, localTime(trace.start, true)),
    h("td", { class: "mono" }, h("a", { href: "#/run/" + trace.trace_id }, trace.trace_id.slice(0, 16))),
    h("td", null, trace.root),
    h("td", { class: "muted" }, trace.service),
    h("td", null, statusBadge(trace.status)),
    h("td", { class: "num" },
      h("span", { class: "mini-bar", style: `width:${Math.max(2, 60 * trace.duration_s / maxDuration)}px` }),
      duration(trace.duration_s)),
    h("td", { class: "num" }, trace.spans),
    ))),
  );
}

// --- One run ------------------------------------------------------------------------------------

async function runPage(traceId) {
  let trace;
  try {
    trace = await getJSON("/api/traces/" + encodeURIComponent(traceId));
  } catch (error) {
    // A large file still being read may not have reached this trace: look again shortly.
    if (error.message.includes("still being read")) refreshTimer = setTimeout(route, 1000);
    throw error;
  }
  const spans = new Map(trace.span_list.map((span) => [span.span_id, span]));
  const panel = h("aside", { class: "panel", id: "span-panel" });
  const select = (spanId) => {
    for (const row of document.querySelectorAll("[data-span-id].selected")) row.classList.remove("selected");
    for (const row of document.querySelectorAll(`[data-span-id="${spanId}"]`)) row.classList.add("selected");
    panel.replaceChildren(...spanPanel(spans.get(spanId), trace.logs));
  };
  render(
    h("p", null, h("a", { href: "#/runs" }, "← Runs")),
    h("h1", null, trace.root, " ", statusBadge(trace.status)),
    h("p", { class: "muted" },
      h("span", { class: "mono" }, trace.trace_id), ` · ${localTime(trace.start)} · ${duration(trace.duration_s)}`,
      ` · ${trace.spans} spans · ${trace.service}`),
    trace.graphs.length ? h("section", { class: "graphs" },
      h("p", { class: "muted small graph-legend" }, "Each graph once, with how often each node ran (×) ",
        "and each transition ran (solid, ×); dashed: never ran in this trace; ",
        h("span", { class: "miss-sample" }, "!"), " a routing miss."),
      trace.graphs.map((graph) => flowGraph(graph, select))) : null,
    h("div", { class: "run-body" },
      h("section", { class: "waterfall-box" }, h("h2", null, "Waterfall"), waterfall(trace, select)),
      panel),
  );
  const failed = trace.span_list.filter((span) => span.status === "error");
  // The deepest failure, else a routing miss, else the root.
  const first = failed[failed.length - 1] || trace.span_list.find((span) => span.routing_miss) ||
    trace.span_list[0];
  if (first) select(first.span_id);
}

const ITEMS_SHOWN = 5; // a batch of more than twice this shows its first items and eventful ones

function waterfall(trace, select) {
  const total = Math.max(trace.duration_s, 1e-9);
  const expanded = new Set();
  const box = h("div", { class: "waterfall", role: "tree" });
  const draw = () => box.replaceChildren(
    h("div", { class: "wf-row wf-head" },
      h("div", { class: "wf-name" }, "Span"),
      h("div", { class: "wf-track" }, ticks(total))),
    ...foldItems(trace.span_list, expanded).map((row) => row.more
      ? h("div", {
        class: "wf-row wf-more", "data-parent-id": row.parent,
        onclick: () => { expanded.add(row.parent); draw(); },
      }, h("div", { class: "wf-name", style: `padding-left:${8 + row.depth * 16}px` },
        `… ${row.more} more items (show)`), h("div", { class: "wf-track" }))
      : waterfallRow(row, total, select)));
  draw();
  return box;
}

function foldItems(spans, expanded) {
  // Rows to draw: a large batch keeps its first items and the eventful ones (failed, retried,
  // fell back); the others, with everything under them, become one "more items" row.
  const counts = new Map();
  for (const span of spans) if (span.kind === "item") counts.set(span.parent_id, (counts.get(span.parent_id) || 0) + 1);
  const folds = (span) => span.kind === "item" && counts.get(span.parent_id) > 2 * ITEMS_SHOWN &&
    !expanded.has(span.parent_id) && span.status === "ok" && !span.retries && !span.fallback;
  const seen = new Map();
  const hidden = new Map();
  const foldedIds = new Set();
  for (const span of spans) {
    const index = seen.get(span.parent_id) || 0;
    if (span.kind === "item") seen.set(span.parent_id, index + 1);
    if (index >= ITEMS_SHOWN && folds(span)) {
      foldedIds.add(span.span_id);
      hidden.set(span.parent_id, (hidden.get(span.parent_id) || 0) + 1);
    }
  }
  const rows = [];
  const marked = new Set();
  let skipBelow = null;
  for (const span of spans) {
    if (skipBelow !== null && span.depth > skipBelow) continue;
    skipBelow = null;
    if (!foldedIds.has(span.span_id)) { rows.push(span); continue; }
    skipBelow = span.depth;
    if (!marked.has(span.parent_id)) {
      marked.add(span.parent_id);
      rows.push({ more: hidden.get(span.parent_id), parent: span.parent_id, depth: span.depth });
    }
  }
  return rows;
}

function waterfallRow(span, total, select) {
  const left = (100 * span.start_offset_s) / total;
  const width = Math.max((100 * span.duration_s) / total, 0.3);
  const notes = [];
  if (span.retries) notes.push(`${span.retries} ${span.retries === 1 ? "retry" : "retries"}`);
  if (span.fallback) notes.push("fallback");
  if (span.routing_miss) notes.push("routing miss");
  return h("div", {
    class: `wf-row ${span.status} kind-${span.kind}`,
    "data-span-id": span.span_id,
    "data-depth": span.depth,
    "data-name": span.name,
    role: "treeitem",
    onclick: () => select(span.span_id),
  },
  h("div", { class: "wf-name", style: `padding-left:${8 + span.depth * 16}px`, title: span.name },
    h("span", { class: "dot" }), span.name, itemIndex(span),
    notes.length ? [" ", h("span", { class: "notes" }, notes.join(" · "))] : null),
  h("div", { class: "wf-track" },
    h("div", { class: "wf-bar", style: `left:${left}%;width:${width}%` }),
    h("span", { class: "wf-label", style: labelPlace(left, width) }, duration(span.duration_s))));
}

function itemIndex(span) {
  const index = span.attributes["reasonflow.batch.index"];
  return span.kind === "item" && index !== undefined ? ` #${index}` : null;
}

function labelPlace(left, width) {
  // After the bar when there is room, else before it, else inside it.
  if (left + width <= 82) return `left:${left + width}%`;
  if (left >= 14) return `right:${100 - left}%;margin-right:6px`;
  return `left:${left}%;color:#fff`;
}

function ticks(total) {
  return [0, 0.25, 0.5, 0.75].map((f) => h("span", { class: "tick", style: `left:${f * 100}%` }, duration(f * total)));
}

function spanPanel(span, logs) {
  if (!span) return [];
  const sections = [
    h("h2", null, span.name),
    h("p", null, statusBadge(span.status), " ", duration(span.duration_s),
      h("span", { class: "muted" }, ` at +${duration(span.start_offset_s)} · ${span.kind}`)),
  ];
  if (span.error) sections.push(h("p", { class: "error-box" }, span.error));
  if (span.routing_miss) {
    sections.push(h("p", { class: "warn-box" },
      `Routing miss: action "${span.routing_miss.action}" has no successor ` +
      `(expected ${span.routing_miss.expected.map((a) => `"${a}"`).join(", ")}); the flow ended here.`));
  }
  if (span.exception) {
    sections.push(h("h3", null, "Exception"),
      h("p", null, h("b", null, span.exception.type), ": ", span.exception.message),
      span.exception.stacktrace ? h("pre", { class: "stack" }, span.exception.stacktrace) : null);
  }
  const events = span.events.filter((event) => event.name !== "exception");
  if (events.length) {
    sections.push(h("h3", null, "Events"), h("ul", { class: "events" }, events.map((event) => h("li", null,
      h("b", null, eventTitle(event)), " ",
      Object.entries(event.attributes).map(([k, v]) => h("span", { class: "kv" }, `${k}=${valueText(v)}`))))));
  }
  const ownLogs = logs.filter((log) => log.span_id === span.span_id);
  if (ownLogs.length) {
    sections.push(h("h3", null, "Logs"), h("ul", { class: "logs" }, ownLogs.map((log) => h("li", null,
      h("span", { class: `sev ${log.severity}` }, log.severity), " ",
      h("span", { class: "muted" }, localTime(log.time).slice(11)), " ", log.body))));
  }
  if (Object.keys(span.payloads).length) {
    sections.push(h("h3", null, "Captured payloads"), keyValues(span.payloads, "payloads"));
  }
  const attributes = Object.fromEntries(
    Object.entries(span.attributes).filter(([key]) => key !== "reasonflow.flow.graph"));
  sections.push(h("h3", null, "Attributes"), keyValues(attributes, "attributes"));
  sections.push(h("p", { class: "muted mono small" }, `span ${span.span_id}`,
    span.parent_id ? ` · parent ${span.parent_id}` : ""));
  return sections;
}

function eventTitle(event) {
  const titles = {
    "reasonflow.retry": "retry",
    "reasonflow.fallback": "fallback",
    "reasonflow.fallback_failed": "fallback failed",
    "reasonflow.routing_miss": "routing miss",
  };
  return titles[event.name] || event.name;
}

function keyValues(values, name) {
  return h("table", { class: `kv-table ${name}` }, Object.entries(values).sort().map(([key, value]) =>
    h("tr", null, h("th", null, key), h("td", null, h("code", null, valueText(value))))));
}

// --- Flow graphs ----------------------------------------------------------------------------------

function layers(graph) {
  // Longest path from the start node over forward edges (back edges close loops).
  const outgoing = new Map(graph.nodes.map((node) => [node.id, []]));
  for (const edge of graph.edges) if (outgoing.has(edge.source)) outgoing.get(edge.source).push(edge);
  const state = new Map();
  const back = new Set();
  const order = [];
  const visit = (id) => {
    state.set(id, "open");
    for (const edge of outgoing.get(id) || []) {
      if (!outgoing.has(edge.target)) continue;
      if (state.get(edge.target) === "open") back.add(edge);
      else if (!state.has(edge.target)) visit(edge.target);
    }
    state.set(id, "done");
    order.push(id);
  };
  for (const node of graph.nodes) if (!state.has(node.id)) visit(node.id);
  const layer = new Map(graph.nodes.map((node) => [node.id, 0]));
  for (const id of order.reverse()) {
    for (const edge of outgoing.get(id) || []) {
      if (back.has(edge) || !layer.has(edge.target)) continue;
      layer.set(edge.target, Math.max(layer.get(edge.target), layer.get(id) + 1));
    }
  }
  return { layer, back };
}

const NODE_W = 150, NODE_H = 46, GAP_X = 60, GAP_Y = 26, PAD = 20, ARC = 22;
// Room around an edge label between two columns: its margins and the arrowhead.
const LABEL_FONT = "600 11px", LABEL_ROOM = 18;

function edgeText(edge) {
  return [edge.action !== "default" ? edge.action : "", edge.taken ? `×${edge.runs}` : ""]
    .filter(Boolean).join(" ");
}

let measuring;
function labelWidth(text) {
  measuring ||= document.createElement("canvas").getContext("2d");
  measuring.font = `${LABEL_FONT} ${getComputedStyle(document.body).fontFamily}`;
  return measuring.measureText(text).width;
}

function columnLefts(graph, layer, back) {
  // Each gap is as wide as the widest label drawn in it, so no label runs under a box.
  const columns = Math.max(...layer.values(), 0) + 1;
  const gaps = Array(columns).fill(GAP_X);
  for (const edge of graph.edges) {
    const from = layer.get(edge.source);
    const text = edgeText(edge);
    if (!text || back.has(edge) || layer.get(edge.target) !== from + 1) continue;
    gaps[from] = Math.max(gaps[from], Math.ceil(labelWidth(text)) + LABEL_ROOM);
  }
  const lefts = [PAD];
  for (let column = 1; column <= columns; column++) lefts.push(lefts[column - 1] + NODE_W + gaps[column - 1]);
  return lefts;
}

function flowGraph(graph, select) {
  const { layer, back } = layers(graph);
  const lefts = columnLefts(graph, layer, back);
  const rows = new Map();
  const position = new Map();
  for (const node of graph.nodes) {
    const column = layer.get(node.id);
    const row = rows.get(column) || 0;
    rows.set(column, row + 1);
    position.set(node.id, { x: lefts[column], y: PAD + 18 + row * (NODE_H + GAP_Y), column });
  }
  const width = lefts[lefts.length - 2] + NODE_W + PAD;
  const skips = graph.edges.some((e) => layer.get(e.target) - layer.get(e.source) > 1);
  const height = PAD * 2 + 18 + Math.max(...rows.values(), 1) * (NODE_H + GAP_Y) - GAP_Y + (skips ? 2 * ARC : 0);
  const svg = s("svg", {
    class: "flow-graph", width, height, viewBox: `0 0 ${width} ${height}`,
    "data-workflow": graph.workflow, role: "img", "aria-label": `${graph.workflow} graph`,
  },
  s("defs", null,
    ["plain", "taken"].map((kind) => s("marker", {
      id: `arrow-${kind}`, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
    }, s("path", { d: "M0,0 L10,5 L0,10 z", class: `arrow ${kind}` })))),
  graph.edges.map((edge) => graphEdge(edge, position, back.has(edge))),
  graph.nodes.map((node) => graphNode(node, position.get(node.id), select,
    graph.routing_misses.filter((miss) => miss.node_id === node.id))));
  const misses = graph.routing_misses.map((miss) => h("p", { class: "warn-box" },
    `Routing miss at ${miss.node}: action "${miss.action}" has no successor (expected ` +
    `${miss.expected.map((a) => `"${a}"`).join(", ")}).`));
  // A graph that ran several times in this trace (a sub-flow in a loop, a fan-out) is drawn
  // once: its counts are totals over those runs.
  const times = graph.runs > 1 ? ` · ran ${graph.runs} times in this run (counts are totals)` : "";
  return h("figure", { class: "graph-box", "data-workflow": graph.workflow, "data-runs": graph.runs },
    h("figcaption", null, h("b", null, graph.workflow), h("span", { class: "graph-runs muted" }, times),
      graph.truncated ? h("span", { class: "muted" }, " · graph truncated") : null),
    h("div", { class: "graph-scroll" }, svg), misses);
}

function graphEdge(edge, position, isBack) {
  const from = position.get(edge.source);
  const to = position.get(edge.target);
  if (!from || !to) return null;
  const kind = edge.taken ? "taken" : "plain";
  let d;
  let label;
  if (isBack || to.column <= from.column) {
    const top = Math.min(from.y, to.y) - 14;
    d = `M${from.x + NODE_W / 2},${from.y} C${from.x + NODE_W / 2},${top - 20} ${to.x + NODE_W / 2},${top - 20} ${to.x + NODE_W / 2},${to.y}`;
    label = { x: (from.x + to.x + NODE_W) / 2, y: top - 12 };
  } else if (to.column - from.column > 1) {
    // Skips a column: arc below the nodes in between instead of running through them.
    const x1 = from.x + NODE_W / 2, y1 = from.y + NODE_H, x2 = to.x + NODE_W / 2, y2 = to.y + NODE_H;
    const bottom = Math.max(y1, y2) + 2 * ARC;
    d = `M${x1},${y1} C${x1},${bottom} ${x2},${bottom} ${x2},${y2}`;
    label = { x: (x1 + x2) / 2, y: Math.max(y1, y2) + 1.5 * ARC + 4 };
  } else {
    const x1 = from.x + NODE_W, y1 = from.y + NODE_H / 2, x2 = to.x, y2 = to.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    d = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
    // A straight edge is labelled above its middle, a bent one just before its target.
    label = y1 === y2 ? { x: mid, y: y1 - 6 } : { x: x2 - 6, y: y2 - 8, anchor: "end" };
  }
  const text = edgeText(edge);
  return s("g", {
    class: `graph-edge ${kind}`, "data-source": edge.source, "data-target": edge.target,
    "data-action": edge.action, "data-taken": String(edge.taken), "data-runs": edge.runs,
  },
  s("title", null, edge.taken ? `ran ${edge.runs} ${edge.runs === 1 ? "time" : "times"}` : "never ran"),
  s("path", { d, "marker-end": `url(#arrow-${kind})` }),
  text ? s("text", { x: label.x, y: label.y, "text-anchor": label.anchor || "middle" }, text) : null);
}

function graphNode(node, at, select, misses) {
  if (node.status === "terminal") return terminalNode(node, at);
  const taken = node.runs > 0;
  const detail = taken
    ? `×${node.runs} · ${duration(node.duration_s)}`
    : "not run";
  const missed = misses.map((miss) => `routing miss: "${miss.action}" has no successor`);
  return s("g", {
    class: `graph-node ${node.status}${misses.length ? " missed" : ""}`, transform: `translate(${at.x},${at.y})`,
    "data-node-id": node.id, "data-name": node.name, "data-taken": String(taken), "data-status": node.status,
    "data-runs": node.runs, onclick: taken ? () => select((misses[0] || {}).span_id || node.span_ids[0]) : null,
  },
  s("title", null, [`${node.name} (${node.class}): ${taken ? `${node.runs} ${node.runs === 1 ? "run" : "runs"}, ` : ""}${detail}`, ...missed].join("\n")),
  s("rect", { width: NODE_W, height: NODE_H, rx: 8 }),
  s("text", { x: NODE_W / 2, y: 19, "text-anchor": "middle", class: "node-name" }, clip(node.name, 20)),
  s("text", { x: NODE_W / 2, y: 36, "text-anchor": "middle", class: "node-detail" }, detail),
  misses.length ? s("g", { class: "routing-miss", transform: `translate(${NODE_W},0)`, "data-action": misses[0].action },
    s("circle", { r: 9 }), s("text", { y: 4, "text-anchor": "middle" }, "!")) : null);
}

function terminalNode(node, at) {
  // An entry or exit point of the graph (LangGraph's __start__, __end__): it does not run.
  return s("g", {
    class: "graph-node terminal", transform: `translate(${at.x},${at.y + NODE_H / 4})`,
    "data-node-id": node.id, "data-name": node.name, "data-status": node.status,
  },
  s("title", null, `${node.name}: where the graph starts or ends`),
  s("rect", { width: NODE_W, height: NODE_H / 2, rx: NODE_H / 4 }),
  s("text", { x: NODE_W / 2, y: NODE_H / 4 + 4, "text-anchor": "middle" }, node.name.replace(/^_+|_+$/g, "")));
}

function clip(text, length) { return text.length > length ? text.slice(0, length - 1) + "…" : text; }

// --- Workflows ------------------------------------------------------------------------------------

async function workflowsPage() {
  const stats = await getJSON("/api/stats");
  showFileState(stats.file);
  const names = Object.keys(stats.workflows);
  render(
    h("h1", null, "Workflows"),
    names.length ? null : h("p", { class: "empty" }, "No workflow runs recorded yet."),
    names.map((name) => workflowCard(name, stats.workflows[name])),
    Object.keys(stats.failures).length || Object.keys(stats.routing_misses).length
      ? failuresCard(stats.failures, stats.routing_misses) : null,
  );
  refreshTimer = setTimeout(route, stats.file.indexing ? 1000 : REFRESH_MS * 2);
}

function figure(label, value, title) {
  return h("div", { class: "figure", title }, h("div", { class: "figure-value" }, value), h("div", { class: "figure-label" }, label));
}

function workflowCard(name, workflow) {
  const prediction = workflow.prediction;
  return h("section", { class: "card workflow", "data-workflow": name },
    h("h2", null, name),
    h("div", { class: "figures" },
      figure("runs", workflow.runs),
      figure("error rate", percent(workflow.error_rate)),
      figure("p50", duration(workflow.p50_s)),
      figure("p95", duration(workflow.p95_s)),
      figure("max", duration(workflow.max_s)),
      figure("CPU time", duration(workflow.cpu_s), "sum over the nodes it ran"),
      figure("memory growth", bytes(workflow.memory_growth_bytes), "sum over the nodes it ran"),
      figure("next run", `${duration(prediction.p50_s)} – ${duration(prediction.p95_s)}`, prediction.basis)),
    h("p", { class: "prediction muted" },
      `Next run: likely about ${duration(prediction.p50_s)}, under ${duration(prediction.p95_s)} ` +
      `in 95% of cases — the ${prediction.basis.replace(/ \(nearest rank\)/, "")} ` +
      `(${prediction.runs} run${prediction.runs === 1 ? "" : "s"} available).`),
    h("div", { class: "columns" },
      h("div", null, h("h3", null, "Bottlenecks"), h("p", { class: "muted small" }, "share of the workflow's time"),
        h("ol", { class: "bottlenecks" }, workflow.bottlenecks.map((b) => h("li", { class: "bottleneck", "data-step": b.step },
          h("span", { class: "b-name" }, b.step),
          h("span", { class: "b-bar" }, h("span", { style: `width:${Math.min(100, b.share * 100)}%` })),
          h("span", { class: "num" }, percent(b.share)))))),
      h("div", null, h("h3", null, "Slower than usual"), h("p", { class: "muted small" }, "latest run ÷ the step's own p50"),
        workflow.slower_than_usual.length ? h("table", { class: "slow" },
          h("tr", null, h("th", null, "Step"), ["latest", "p50", "×"].map((c) => h("th", { class: "num" }, c))),
          workflow.slower_than_usual.map((row) => h("tr", { class: row.ratio >= 1.5 ? "hot" : "" },
            h("td", null, row.step), h("td", { class: "num" }, duration(row.latest_s)),
            h("td", { class: "num" }, duration(row.p50_s)), h("td", { class: "num" }, row.ratio.toFixed(2)))))
          : h("p", { class: "muted" }, "Needs two runs of a step."))),
    h("h3", null, "Resource trend"), trendChart(workflow.trend),
    h("h3", null, "Steps"), stepsTable(workflow.steps));
}

function stepsTable(steps) {
  const columns = ["Step", "runs", "error %", "p50", "p95", "max", "CPU", "memory", "retries", "fallbacks", "routing misses"];
  return h("table", { class: "steps" },
    h("tr", null, columns.map((c, i) => h("th", { class: i ? "num" : null }, c))),
    Object.entries(steps).map(([name, step]) => h("tr", { "data-step": name },
      h("td", null, name, step.kind === "flow" ? h("span", { class: "muted" }, " (flow)") : null),
      h("td", { class: "num" }, step.runs),
      h("td", { class: "num" }, percent(step.error_rate)),
      h("td", { class: "num" }, duration(step.p50_s)),
      h("td", { class: "num" }, duration(step.p95_s)),
      h("td", { class: "num" }, duration(step.max_s)),
      h("td", { class: "num" }, duration(step.cpu_s)),
      h("td", { class: "num" }, bytes(step.memory_growth_bytes)),
      h("td", { class: "num" }, step.retries),
      h("td", { class: "num" }, step.fallbacks),
      h("td", { class: "num" }, step.routing_misses))));
}

function trendChart(trend) {
  if (!trend.length) return h("p", { class: "muted" }, "No runs yet.");
  const W = 720, H = 150, L = 56, R = 56, T = 10, B = 24;
  const maxDuration = Math.max(...trend.map((p) => p.duration_s), 1e-9);
  const maxCpu = Math.max(...trend.map((p) => p.cpu_s || 0), 1e-9);
  const step = (W - L - R) / Math.max(trend.length, 1);
  const barWidth = Math.max(Math.min(step * 0.7, 24), 1);
  const y = (value, max) => T + (H - T - B) * (1 - value / max);
  const cpuLine = trend.map((p, i) => `${i ? "L" : "M"}${L + step * (i + 0.5)},${y(p.cpu_s || 0, maxCpu)}`).join(" ");
  return h("figure", { class: "trend" }, s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "duration and CPU time per run" },
    s("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }),
    s("text", { x: L - 6, y: T + 8, "text-anchor": "end", class: "axis-label" }, duration(maxDuration)),
    s("text", { x: W - R + 6, y: T + 8, class: "axis-label cpu" }, duration(maxCpu)),
    s("text", { x: L, y: H - 6, class: "axis-label" }, localTime(trend[0].start)),
    s("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "axis-label" }, localTime(trend[trend.length - 1].start)),
    trend.map((p, i) => s("rect", {
      class: `trend-bar ${p.status}`, x: L + step * i + (step - barWidth) / 2, y: y(p.duration_s, maxDuration),
      width: barWidth, height: Math.max(H - B - y(p.duration_s, maxDuration), 1),
    }, s("title", null, `${localTime(p.start)}: ${duration(p.duration_s)}, CPU ${duration(p.cpu_s)}, memory ${bytes(p.memory_growth_bytes)}`))),
    s("path", { d: cpuLine, class: "cpu-line" })),
  h("figcaption", { class: "muted small" }, h("span", { class: "legend bar" }), "duration per run (red: failed) ",
    h("span", { class: "legend line" }), "CPU time of its nodes"));
}

function failuresCard(failures, routingMisses) {
  const misses = Object.entries(routingMisses);
  return h("section", { class: "card failures" }, h("h2", null, "Failures"),
    h("p", { class: "muted small" }, "by error.type: runs that failed, attempts that were retried, and where"),
    h("table", null,
      h("tr", null, ["error.type", "failed runs", "retried attempts", "where", "example"].map((c) => h("th", null, c))),
      Object.entries(failures).map(([type, f]) => h("tr", { "data-error-type": type },
        h("td", null, h("b", null, type)),
        h("td", { class: "num" }, f.failed_runs),
        h("td", { class: "num" }, f.retried_attempts),
        h("td", null, Object.entries(f.where).map(([node, n]) => `${node} (${n})`).join(", ")),
        h("td", { class: "muted" }, f.example)))),
    misses.length ? [
      h("h3", null, "Routing misses"),
      h("p", { class: "muted small" }, "a node returned an action with no successor, so the flow ended there"),
      h("ul", { class: "routing-misses" }, misses.map(([where, count]) => h("li", null, `${where}: ${count}`))),
    ] : null);
}
