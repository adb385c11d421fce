// The run viewer: the workflow list, the selected workflow's canvas, its runs live from
// `/api/events?workflowId=`, the controls and the node inspector. Only the public HTTP API and
// SSE streams are used, so this is also a reference client of them.

import { api } from "./api.js";
import { Canvas } from "./canvas.js";
import { setupLibrary } from "./library.js";
import { follow } from "./live.js";

const $ = (selector) => document.querySelector(selector);
const NODE_STATE = { "node.queued": "queued", "node.started": "running", "node.progress": "running",
  "node.completed": "completed", "node.failed": "failed", "node.skipped": "skipped", "node.stopped": "stopped" };
const FINAL = new Set(["completed", "failed", "stopped"]);

const page = { workflow: null, run: null, types: new Map(), progress: new Map(), stop: null,
  breakpoints: new Set(), inspected: null };
const canvas = new Canvas($("#canvas"), inspect);

function say(text) { $("#message").textContent = text || ""; }

function setRun(id, state) {
  page.run = id ? { id, state } : null;
  $("#run-id").textContent = id || "none";
  const badge = $("#run-badge");
  badge.dataset.runState = state || "none";
  badge.textContent = state || "no run";
  const entry = page.workflow && document.querySelector(`[data-workflow-id="${page.workflow.id}"] .state`);
  if (entry && state) entry.textContent = state;
  const can = { execute: Boolean(page.workflow), pause: state === "running", resume: state === "paused",
    step: state === "paused", stop: state === "running" || state === "paused", replay: FINAL.has(state) };
  for (const [action, enabled] of Object.entries(can)) {
    document.querySelector(`[data-action="${action}"]`).disabled = !enabled;
  }
}

function showRun(run) {
  setRun(run.id, run.state);
  canvas.clearEdges();
  for (const [id, node] of Object.entries(run.nodes)) {
    page.progress.set(id, node.progress);
    canvas.setNode(id, node.state, node.progress);
  }
}

// The workflow's latest runs, newest first; opening one shows its final (or current) state.
async function refreshRuns() {
  if (!page.workflow) return;
  const list = $("#runs");
  try {
    const runs = (await api.runs(page.workflow.id)).items;
    list.replaceChildren(...runs.map((run) => {
      const item = document.createElement("li");
      item.dataset.runId = run.id;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `${run.createdAt.slice(11, 19)} ${run.kind === "replay" ? "replay " : ""}${run.state}`;
      button.setAttribute("aria-current", String(Boolean(page.run && page.run.id === run.id)));
      button.addEventListener("click", async () => {
        try { showRun(await api.run(run.id)); } catch (error) { say(error.message); }
      });
      item.append(button);
      return item;
    }));
  } catch (error) { say(error.message); }
}

async function reload() {
  if (!page.run) return;
  try { showRun(await api.run(page.run.id)); } catch (error) { say(error.message); }
}

// Events are applied once per frame, however many arrive: a busy run sends hundreds a second.
const pending = [];

function enqueue(name, data) {
  pending.push([name, data]);
  if (pending.length === 1) requestAnimationFrame(() => { for (const [n, d] of pending.splice(0)) onEvent(n, d); });
}

function onEvent(name, data) {
  if (name === "run.started") {
    if (page.run && page.run.id === data.runId) return;
    page.progress.clear();
    for (const id of Object.keys(canvas.states())) canvas.setNode(id, "idle", 0);
    canvas.clearEdges();
    setRun(data.runId, "running");
    refreshRuns();
    return;
  }
  if (!page.run || data.runId !== page.run.id) return;
  const nodeState = NODE_STATE[name];
  if (nodeState) {
    const progress = name === "node.progress" ? data.progress : (nodeState === "running" ? 0 : 1);
    page.progress.set(data.nodeId, progress);
    canvas.setNode(data.nodeId, nodeState, progress);
  } else if (name === "edge.data") {
    canvas.flowEdge(data.connectionId, data.items);
  } else if (name === "run.paused" || name === "run.resumed") {
    pausedOrResumed(name === "run.paused" ? "paused" : "running");
  } else if (name.startsWith("run.")) {
    setRun(page.run.id, name.slice(4));
    refreshRuns();
  }
}

// The run and its nodes change together, whichever comes first: the event, or the answer to
// the user's own pause or resume (applying both changes nothing more).
function pausedOrResumed(to) {
  const from = to === "paused" ? "running" : "paused";
  for (const [id, state] of Object.entries(canvas.states())) {
    if (state === from) canvas.setNode(id, to, page.progress.get(id));
  }
  setRun(page.run.id, to);
}

async function open(workflowId) {
  say("");
  if (page.stop) page.stop();
  for (const entry of document.querySelectorAll("[data-workflow-id] button")) {
    entry.setAttribute("aria-current", String(entry.parentElement.dataset.workflowId === workflowId));
  }
  try {
    page.workflow = await api.workflow(workflowId);
    canvas.draw(page.workflow, page.types);
    setRun(null, null);
    page.breakpoints.clear();
    const status = await api.status(workflowId);
    if (status.id) showRun(status);
    refreshRuns();
  } catch (error) {
    say(error.message);
    return;
  }
  page.stop = follow(workflowId, {
    onEvent: enqueue,
    onReload: reload,
    onStatus: (status) => {
      const line = $("#stream-status");
      line.dataset.stream = status;
      line.textContent = status === "live" ? "live" : status;
    },
  });
}

async function inspect(nodeId) {
  const node = page.workflow.nodes.find((n) => n.id === nodeId);
  const panel = $("#inspector");
  panel.hidden = false;
  page.inspected = nodeId;
  $("#breakpoint").checked = page.breakpoints.has(nodeId);
  $("#inspector-title").textContent = `${node.data.label || node.type} (${nodeId})`;
  let detail = { config: node.data.config };
  if (page.run) {
    try {
      const seen = await api.node(page.run.id, nodeId);
      detail = { state: seen.state, config: node.data.config, inputs: seen.inputs, output: seen.output,
        error: seen.error, durationMs: seen.durationMs, attempt: seen.attempt };
    } catch (error) { say(error.message); }
  }
  $("#inspector-body").textContent = JSON.stringify(detail, null, 2);
}

async function control(action) {
  say("");
  try {
    if (action === "execute") {
      const body = { speed: Number($("#speed").value) || 1, failureRate: Number($("#failure-rate").value) || 0 };
      if ($("#seed").value !== "") body.seed = Number($("#seed").value);
      if (page.breakpoints.size) body.breakpoints = [...page.breakpoints];
      const run = await api.execute(page.workflow.id, body);
      if (!page.run || page.run.id !== run.id) showRun(run);
    } else if (action === "replay" && page.run) {
      const run = await api.replay(page.run.id);
      if (page.run.id !== run.id) showRun(run);
    } else if (page.run) {
      const run = await api.control(page.run.id, action);
      if (FINAL.has(page.run.state) || page.run.id !== run.id) return;
      if ((action === "pause" && run.state === "paused") || (action === "resume" && run.state === "running")) {
        pausedOrResumed(run.state);
      } else {
        setRun(run.id, run.state);
      }
    }
  } catch (error) {
    say(error.message);
  }
}

function addWorkflow(wf, first = false) {
  const item = document.createElement("li");
  item.dataset.workflowId = wf.id;
  const button = document.createElement("button");
  button.type = "button";
  button.innerHTML = '<span class="name"></span><span class="state"></span>';
  button.querySelector(".name").textContent = wf.name;
  button.addEventListener("click", () => open(wf.id));
  item.append(button);
  const list = $("#workflows");
  if (first) list.prepend(item); else list.append(item);
}

async function start() {
  try {
    for (const type of (await api.nodeTypes()).items) page.types.set(type.type, type);
    const workflows = (await api.workflows()).items;
    for (const wf of workflows) addWorkflow(wf);
    await Promise.all(workflows.map(async (wf) => {
      const status = await api.status(wf.id);
      document.querySelector(`[data-workflow-id="${wf.id}"] .state`).textContent = status.state;
    }));
  } catch (error) {
    say(error.message);
  }
  setupLibrary((workflow) => { addWorkflow(workflow, true); open(workflow.id); }, say);
  $("#controls").addEventListener("submit", (e) => { e.preventDefault(); control("execute"); });
  $("#breakpoint").addEventListener("change", async (e) => {
    if (e.target.checked) page.breakpoints.add(page.inspected); else page.breakpoints.delete(page.inspected);
    canvas.markBreakpoints(page.breakpoints);
    if (page.run && !FINAL.has(page.run.state)) {
      try { await api.breakpoints(page.run.id, [...page.breakpoints]); } catch (error) { say(error.message); }
    }
  });
  for (const action of ["pause", "resume", "step", "stop", "replay"]) {
    document.querySelector(`[data-action="${action}"]`).addEventListener("click", () => control(action));
  }
}

start();
