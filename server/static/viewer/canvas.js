// Draws one workflow's graph into the page's SVG: nodes at their stored positions, as boxes
// with their type's icon, colour and label; edges as curves between the handles the
// connections name, on the sides the node types declare. Drag to pan, wheel or +/- to zoom.
// It only draws: main.js tells it the states.

const SVG = "http://www.w3.org/2000/svg";
const W = 180;
const H = 64;
// Glyphs every common font has (no icon font is fetched): the type's icon name -> a symbol.
const ICONS = { play: "▶", webhook: "⚡", clock: "◷", globe: "◍", database: "▤", mail: "✉",
  sparkles: "✦", branch: "↱", merge: "⋈", timer: "◔", code: "</>", resize: "⤡", image: "▣",
  convert: "⇄", table: "▦", braces: "{ }", flag: "⚑" };
const STATE_TEXT = { idle: "idle", queued: "queued", running: "running", paused: "paused",
  completed: "completed", failed: "failed", skipped: "skipped", stopped: "stopped" };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function handlePoint(box, handles, id, fallback) {
  const list = handles.length ? handles : [{ id, position: fallback }];
  const index = Math.max(0, list.findIndex((h) => h.id === id));
  const side = list[index].position || fallback;
  const share = (index + 1) / (list.length + 1);
  const at = { left: [box.x, box.y + H * share], right: [box.x + W, box.y + H * share],
    top: [box.x + W * share, box.y], bottom: [box.x + W * share, box.y + H] }[side];
  return { x: at[0], y: at[1], side };
}

function curve(a, b) {
  const pull = Math.max(40, Math.abs(b.x - a.x) / 2);
  const out = { left: [-pull, 0], right: [pull, 0], top: [0, -pull], bottom: [0, pull] };
  const [ax, ay] = out[a.side];
  const [bx, by] = out[b.side];
  return `M ${a.x} ${a.y} C ${a.x + ax} ${a.y + ay} ${b.x + bx} ${b.y + by} ${b.x} ${b.y}`;
}

export class Canvas {
  constructor(svg, onOpen) {
    this.svg = svg;
    this.view = svg.querySelector("#view");
    this.onOpen = onOpen;
    this.nodes = new Map();
    this.edges = new Map();
    this.pan = { x: 40, y: 40, zoom: 1 };
    this.listen();
  }

  draw(workflow, types) {
    const nodesLayer = this.view.querySelector("#nodes");
    const edgesLayer = this.view.querySelector("#edges");
    nodesLayer.replaceChildren();
    edgesLayer.replaceChildren();
    this.nodes.clear();
    this.edges.clear();
    const boxes = new Map();
    for (const node of workflow.nodes) {
      const type = types.get(node.type) || { label: node.type, icon: "", color: "#55555c", inputs: [], outputs: [] };
      const box = { x: node.position.x, y: node.position.y, type };
      boxes.set(node.id, box);
      const label = node.data.label || type.label;
      const group = el("g", { class: "node", "data-node-id": node.id, "data-state": "idle", tabindex: "0",
        role: "button", transform: `translate(${box.x} ${box.y})` });
      group.append(el("rect", { width: W, height: H }),
        el("rect", { x: 0, y: 0, width: 6, height: H, fill: type.color }),
        el("text", { x: 14, y: 22, class: "icon", fill: type.color }, ICONS[type.icon] || "•"),
        el("text", { x: 40, y: 22 }, label.length > 20 ? `${label.slice(0, 19)}…` : label),
        el("text", { x: 14, y: 44, class: "state-label" }, STATE_TEXT.idle),
        el("rect", { x: 14, y: 52, width: 0, height: 4, class: "bar" }));
      group.addEventListener("click", () => this.onOpen(node.id));
      group.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") this.onOpen(node.id); });
      nodesLayer.append(group);
      this.nodes.set(node.id, { group, label, state: "", progress: 0 });
      this.setNode(node.id, "idle", 0);
    }
    for (const c of workflow.connections) {
      const from = boxes.get(c.source);
      const to = boxes.get(c.target);
      if (!from || !to) continue;
      const a = handlePoint(from, from.type.outputs, c.sourceHandle, "right");
      const b = handlePoint(to, to.type.inputs, c.targetHandle, "left");
      const group = el("g", { class: "edge", "data-edge-id": c.id });
      const count = el("text", { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 - 6, "text-anchor": "middle" }, "");
      group.append(el("path", { d: curve(a, b), "marker-end": "url(#arrow)" }), count);
      edgesLayer.append(group);
      this.edges.set(c.id, { group, count, timer: 0 });
    }
    this.fit(workflow.nodes);
  }

  fit(nodes) {
    // The whole graph in view at first (never enlarged), with a margin.
    const xs = nodes.map((n) => n.position.x);
    const ys = nodes.map((n) => n.position.y);
    const box = this.svg.getBoundingClientRect();
    if (!xs.length || !box.width) { this.apply(); return; }
    const [minX, minY] = [Math.min(...xs), Math.min(...ys)];
    const width = Math.max(...xs) - minX + W + 80;
    const height = Math.max(...ys) - minY + H + 80;
    const zoom = Math.min(1, box.width / width, box.height / height);
    this.pan = { x: 40 - minX * zoom, y: 40 - minY * zoom, zoom };
    this.apply();
  }

  setNode(id, state, progress) {
    const node = this.nodes.get(id);
    if (!node || (node.state === state && node.progress === progress)) return;
    if (node.state !== state) {  // attributes only when the state changes: each one restyles the node
      node.group.setAttribute("data-state", state);
      node.group.setAttribute("aria-label", `${node.label}: ${STATE_TEXT[state] || state}`);
    }
    node.state = state;
    node.progress = progress;
    const pct = state === "running" || state === "paused" ? Math.round((progress || 0) * 100) : 0;
    node.group.querySelector(".state-label").textContent =
      pct ? `${STATE_TEXT[state]} ${pct}%` : (STATE_TEXT[state] || state);
    node.group.querySelector(".bar").setAttribute("width", String((W - 28) * (pct / 100)));
  }

  markBreakpoints(ids) {
    for (const [id, node] of this.nodes) node.group.classList.toggle("breakpoint", ids.has(id));
  }

  states() {
    return Object.fromEntries([...this.nodes].map(([id, n]) => [id, n.state]));
  }

  flowEdge(id, items) {
    const edge = this.edges.get(id);
    if (!edge) return;
    edge.count.textContent = `${items} item${items === 1 ? "" : "s"}`;
    // Lit for 600 ms from the last data that crossed it.
    edge.group.classList.add("flowing");
    clearTimeout(edge.timer);
    edge.timer = setTimeout(() => edge.group.classList.remove("flowing"), 600);
  }

  clearEdges() {
    for (const edge of this.edges.values()) {
      if (!edge.count.textContent) continue;  // untouched: changing nothing costs no restyle
      clearTimeout(edge.timer);
      edge.count.textContent = "";
      edge.group.classList.remove("flowing");
    }
  }

  apply() {
    this.view.setAttribute("transform", `translate(${this.pan.x} ${this.pan.y}) scale(${this.pan.zoom})`);
  }

  zoom(factor) {
    this.pan.zoom = Math.min(4, Math.max(0.1, this.pan.zoom * factor));
    this.apply();
  }

  listen() {
    let drag = null;
    this.svg.addEventListener("pointerdown", (e) => {
      if (e.target.closest(".node")) return;
      drag = { x: e.clientX - this.pan.x, y: e.clientY - this.pan.y };
      this.svg.setPointerCapture(e.pointerId);
    });
    this.svg.addEventListener("pointermove", (e) => {
      if (!drag) return;
      this.pan.x = e.clientX - drag.x;
      this.pan.y = e.clientY - drag.y;
      this.apply();
    });
    this.svg.addEventListener("pointerup", () => { drag = null; });
    this.svg.addEventListener("wheel", (e) => { e.preventDefault(); this.zoom(e.deltaY < 0 ? 1.1 : 1 / 1.1); },
      { passive: false });
    document.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLInputElement) return;
      if (e.key === "+" || e.key === "=") this.zoom(1.1);
      if (e.key === "-") this.zoom(1 / 1.1);
    });
  }
}
