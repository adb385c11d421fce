// The few calls the viewer makes, all to Flowstage's public HTTP API. A problem+json answer
// becomes an Error carrying its `detail`.

async function call(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    throw new Error((data && (data.detail || data.title)) || `${method} ${path}: HTTP ${resp.status}`);
  }
  return data;
}

async function upload(fileList) {
  const form = new FormData();
  for (const file of fileList) form.append("file", file, file.name);
  const resp = await fetch("/api/files/upload", { method: "POST", body: form });
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.detail || data.title || `upload: HTTP ${resp.status}`);
  return data;
}

export const api = {
  templates: () => call("GET", "/api/templates?limit=50"),
  applyTemplate: (id, name) => call("POST", `/api/templates/${encodeURIComponent(id)}/apply`, { name }),
  files: () => call("GET", "/api/files?limit=50"),
  upload,
  workflows: () => call("GET", "/api/workflows?limit=100"),
  workflow: (id) => call("GET", `/api/workflows/${encodeURIComponent(id)}`),
  status: (id) => call("GET", `/api/workflows/${encodeURIComponent(id)}/status`),
  nodeTypes: () => call("GET", "/api/node-types"),
  runs: (id) => call("GET", `/api/workflows/${encodeURIComponent(id)}/runs?limit=20`),
  replay: (runId) => call("POST", `/api/runs/${encodeURIComponent(runId)}/replay`, {}),
  breakpoints: (runId, nodeIds) =>
    call("PUT", `/api/runs/${encodeURIComponent(runId)}/breakpoints`, { nodeIds }),
  run: (id) => call("GET", `/api/runs/${encodeURIComponent(id)}`),
  node: (runId, nodeId) =>
    call("GET", `/api/runs/${encodeURIComponent(runId)}/nodes/${encodeURIComponent(nodeId)}`),
  execute: (id, body) => call("POST", `/api/workflows/${encodeURIComponent(id)}/execute`, body),
  control: (runId, action) => call("POST", `/api/runs/${encodeURIComponent(runId)}/${action}`),
};
