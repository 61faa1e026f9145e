// One live connection for all of this browser's Punctual tabs (a SharedWorker; a tab without SharedWorker
// runs this same file as its own dedicated Worker).
// Browsers allow about 6 HTTP/1.1 connections per server; one stream per tab would use them up with a few
// tabs open (and each open stream holds one of the server's threads). So the tabs share this worker's
// stream, and it passes every message on to each of them.
//
// /stream needs `Authorization: Bearer <token>` once the server has tokens, and EventSource cannot send
// headers: so the stream is a fetch() whose body is read as it arrives and parsed as Server-Sent Events
// here. The tabs hand their token over ({type: "token"}); a 401 is told to the tabs ({type: "unauthorized",
// token}), and the worker waits for a token that works before it connects again.
//
// Tab -> worker: {type: "token", token} (null: no token needed), "close" (the tab goes away).
// Worker -> tabs: {type: "status", text, kind, live}, {type: "hello"}, {type: "changes", data},
//                 {type: "resync"}, {type: "poll"}, {type: "unauthorized", token}.

const ports = new Set();
let last = { type: "status", text: "connecting…", kind: "" };
let live = false;
let token;               // undefined: no tab has said yet; null: the server needs none
let refused = null;      // the token the server answered 401 to: not tried again
let current = null;      // {abort: AbortController} of the connection in use
let retryTimer = null;  // set while waiting to connect again
let retryMs = 2000;      // the server's `retry:` field overrides this
let failures = 0;

function tell(message) {
  for (const port of ports) port.postMessage(message);
}

function status(text, kind) {
  last = { type: "status", text, kind, live };
  tell(last);
}

function later(ms) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => { retryTimer = null; connect(); }, ms);
}

/** Server-Sent Events from a stream of text chunks (the WHATWG parsing rules, minus `id`). */
function sseParser(onMessage) {
  let buffer = "";
  let event = "";
  let data = [];
  return (chunk) => {
    let text = buffer + chunk;
    const held = text.endsWith("\r") ? "\r" : "";  // "\r\n" may be split across two chunks: one line end
    if (held) text = text.slice(0, -1);
    const lines = text.split(/\r\n|\r|\n/);
    buffer = lines.pop() + held;  // an unfinished line waits for the next chunk
    for (const line of lines) {
      if (line === "") {
        if (data.length) onMessage(event || "message", data.join("\n"));
        event = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;  // a comment: the heartbeat
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
    }
  };
}

async function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (current) current.abort.abort();
  if (token === undefined || (token && token === refused)) return;  // wait for a (working) token
  const mine = { abort: new AbortController() };
  current = mine;
  const headers = { Accept: "text/event-stream" };
  if (token) headers.Authorization = "Bearer " + token;
  let response;
  try {
    response = await fetch("/stream", { headers, signal: mine.abort.signal, cache: "no-store" });
  } catch {
    if (current !== mine) return;  // replaced on purpose (a new token)
    current = null;
    live = false;
    failures += 1;
    status("reconnecting…", "wait");
    later(Math.min(30000, retryMs * failures));
    return;
  }
  if (current !== mine) return;
  if (response.status === 401) {
    current = null;
    live = false;
    refused = token;
    status("needs a token", "wait");
    tell({ type: "unauthorized", token });
    return;
  }
  if (response.status === 503 || !response.ok || !response.body) {  // 503: too many live pages open
    current = null;
    live = false;
    status("polling every 5 s", "wait");
    tell({ type: "poll" });
    later(15000);
    return;
  }
  let ended = "reconnecting…";
  let stop = false;
  const parse = sseParser((event, data) => {
    switch (event) {
      case "hello": failures = 0; live = true; tell({ type: "hello" }); status("live", "on"); break;
      case "changes": tell({ type: "changes", data }); break;
      case "resync": tell({ type: "resync" }); break;
      case "bye": live = false; ended = "server restarting…"; status(ended, "wait"); break;
      case "unavailable":  // an API-only process: it has no live changes to give
        live = false;
        stop = true;
        status("polling every 5 s", "wait");
        tell({ type: "poll" });
        break;
    }
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done || stop) break;
      parse(value);
      if (stop) break;
    }
  } catch { /* the connection broke, or was aborted for a new token */ }
  if (current !== mine) return;
  mine.abort.abort();
  current = null;
  live = false;
  if (stop) { later(Math.max(retryMs, 60000)); return; }
  failures += 1;
  status(ended, "wait");
  later(Math.min(30000, retryMs * failures));
}

function setToken(given) {
  const value = given || null;
  if (value === token) {
    if (!current && !retryTimer) connect();  // e.g. the first tab's token; never skips a back-off wait
    return;
  }
  token = value;  // a new token: the stream is opened again with it at once
  failures = 0;
  connect();
}

function attach(port) {
  ports.add(port);
  port.onmessage = (message) => {
    const data = message.data;
    if (data === "close") { ports.delete(port); return; }
    // A tab sends only a token the server has just accepted (GET /whoami): worth trying even if refused before.
    if (data && data.type === "token") { refused = null; setToken(data.token); }
  };
  if (port.start) port.start();
  port.postMessage(last);
  if (last.kind === "wait" && last.text.startsWith("polling")) port.postMessage({ type: "poll" });
}

if (typeof SharedWorkerGlobalScope === "function" && self instanceof SharedWorkerGlobalScope) {
  self.onconnect = (event) => attach(event.ports[0]);
} else {
  attach(self);  // a dedicated Worker: the one tab that started it is the only port
}
