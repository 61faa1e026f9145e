// One live connection for all of this browser's Punctual tabs (a SharedWorker).
// Browsers allow about 6 HTTP/1.1 connections per server; one EventSource per tab would use them up
// with a few tabs open (and each open stream holds one of the server's threads). So the tabs share
// this worker's EventSource, and it passes every message on to each of them.

const ports = new Set();
let source = null;
let last = { type: "status", text: "connecting…", kind: "" };
let live = false;

function tell(message) {
  for (const port of ports) port.postMessage(message);
}

function status(text, kind) {
  last = { type: "status", text, kind, live };
  tell(last);
}

function connect() {
  if (source) source.close();
  source = new EventSource("/stream");
  const current = source;
  current.addEventListener("hello", () => { live = true; tell({ type: "hello" }); status("live", "on"); });
  current.addEventListener("changes", (e) => tell({ type: "changes", data: e.data }));
  current.addEventListener("resync", () => tell({ type: "resync" }));
  current.addEventListener("bye", () => { live = false; status("server restarting…", "wait"); });
  current.addEventListener("unavailable", () => {
    current.close();
    live = false;
    status("polling every 5 s", "wait");
    tell({ type: "poll" });
  });
  current.onerror = () => {
    live = false;
    if (current.readyState === EventSource.CLOSED) {  // refused, e.g. 503: too many live pages
      status("polling every 5 s", "wait");
      tell({ type: "poll" });
      setTimeout(() => { if (source === current) connect(); }, 15000);
    } else {
      status("reconnecting…", "wait");
    }
  };
}

self.onconnect = (event) => {
  const port = event.ports[0];
  ports.add(port);
  port.onmessage = (message) => { if (message.data === "close") ports.delete(port); };
  port.start();
  port.postMessage(last);
  if (last.type === "status" && last.kind === "wait" && last.text.startsWith("polling")) port.postMessage({ type: "poll" });
  if (!source) connect();
};
