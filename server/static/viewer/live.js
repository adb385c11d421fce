// Follows every run of one workflow on `GET /api/events?workflowId=`. The browser's EventSource
// reconnects by itself and sends Last-Event-ID, so nothing is missed or repeated; meanwhile the
// status says "reconnecting". If the browser gives up (the server answered an error, or was
// restarting), the stream is reopened here with `?lastEventId=`. Every reopening, and every
// `stream.gap`, asks the page to reload what it shows: it never shows stale state silently.

const NAMES = ["run.started", "run.paused", "run.resumed", "run.completed", "run.failed", "run.stopped",
  "node.queued", "node.started", "node.progress", "node.completed", "node.failed", "node.skipped",
  "node.stopped", "edge.data", "stream.gap"];

export function follow(workflowId, { onEvent, onReload, onStatus }) {
  let source = null;
  let lastId = null;
  let retry = null;
  let closed = false;
  let reopened = false;

  const open = () => {
    const query = new URLSearchParams({ workflowId });
    if (lastId !== null) query.set("lastEventId", lastId);
    source = new EventSource(`/api/events?${query}`);
    source.onopen = () => {
      onStatus("live");
      if (reopened) onReload();  // whatever happened while away is read again
    };
    source.onerror = () => {
      reopened = true;
      if (source.readyState === EventSource.CLOSED) {  // the browser gave up: try again soon
        onStatus("reconnecting");
        retry = setTimeout(() => { if (!closed) open(); }, 1000);
      } else {
        onStatus("reconnecting");
      }
    };
    for (const name of NAMES) {
      source.addEventListener(name, (message) => {
        if (message.lastEventId) lastId = message.lastEventId;
        if (name === "stream.gap") onReload();
        else onEvent(name, JSON.parse(message.data));
      });
    }
  };

  onStatus("connecting");
  open();
  return () => {
    closed = true;
    clearTimeout(retry);
    if (source) source.close();
    onStatus("closed");
  };
}
