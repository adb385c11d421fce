// A small client typed by what openapi-typescript generates from GET /api/openapi.json, written
// as an editor's code would be. tests/test_contract_typescript.py generates the types into
// "flowstage-api" and compiles this file with `tsc --noEmit`: if the document makes ordinary use
// a type error (a free-form object typed as having no keys, a defaulted field made required, a
// body that may be left out made mandatory), this stops compiling.
import type { components, operations, paths } from "flowstage-api";

type Schemas = components["schemas"];
type Workflow = Schemas["Workflow"];
type Run = Schemas["Run"];
type Problem = Schemas["Problem"];
type NewWorkflow = operations["createWorkflow"]["requestBody"]["content"]["application/json"];
type ExecuteBody = NonNullable<operations["executeWorkflow"]["requestBody"]>["content"]["application/json"];

// execute's body may be left out altogether.
const noBody: paths["/api/workflows/{id}/execute"]["post"]["requestBody"] = undefined;

async function call<T>(base: string, method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`${base}${path}`, init);
  if (!response.ok) {
    const problem = (await response.json()) as Problem;
    const where = (problem.errors ?? []).map((e) => e.loc.join(".")).join(", ");
    throw new Error(`${problem.status} ${problem.title}: ${problem.detail ?? ""} ${where}`);
  }
  return (await response.json()) as T;
}

export async function fetchAndRun(base: string): Promise<Run> {
  // Only what the editor knows: no description, tags, labels or connection ids (all defaulted).
  const draft: NewWorkflow = {
    name: "Fetch",
    nodes: [
      { id: "t", type: "manual_trigger", position: { x: 0, y: 0 } },
      { id: "h", type: "http_request", position: { x: 200, y: 0 }, data: { config: { url: "https://example.com/a" } } },
    ],
    connections: [{ source: "t", target: "h" }],
  };
  const workflow = await call<Workflow>(base, "POST", "/api/workflows", draft);
  const url: unknown = workflow.nodes[1]?.data.config["url"];
  console.log(workflow.id, workflow.version, url);

  // An empty POST starts a run; a body, when sent, sets only what it names.
  const started = await call<Run>(base, "POST", `/api/workflows/${workflow.id}/execute`, noBody);
  const slower: ExecuteBody = { speed: 0.5 };
  console.log(slower);

  const run = await call<Run>(base, "GET", `/api/runs/${started.id}`);
  const progress: number = run.progress;
  const failureRate: number = run.failureRate;
  const kind: "workflow" | "process-files" | "replay" = run.kind;
  for (const [nodeId, node] of Object.entries(run.nodes)) {
    const output: unknown = node.output;
    console.log(nodeId, node.state, node.progress, output, node.error?.message);
  }
  console.log(run.state, progress, failureRate, kind);
  return run;
}

// What a run's event stream carries, told apart by `event`.
export function describe(event: Schemas["StreamEvent"]): string {
  switch (event.event) {
    case "run.started":
      return `run ${event.runId} of version ${event.workflowVersion} at speed ${event.speed}`;
    case "node.completed":
      return `${event.nodeId} gave ${JSON.stringify(event.output)}`;
    case "edge.data":
      return `${event.items} items over ${event.connectionId}`;
    case "run.failed":
      return `failed: ${event.error.message}`;
    case "stream.gap":
      return `lost events after ${event.lastEventId ?? "the start"} (${event.reason})`;
    default:
      return `${event.event} #${event.seq}`;
  }
}

export function lastOfRun(events: Schemas["RunEvent"][]): Schemas["RunEvent"]["event"] | undefined {
  return events.at(-1)?.event;
}
