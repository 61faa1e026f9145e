// Punctual's web client: one module, no build step, no dependencies.
// Rules kept throughout: user-supplied text is only ever set with textContent (never innerHTML);
// times are shown in the person's zone with UTC on hover; the page learns *which* events changed
// from the server's Server-Sent Events stream (/stream) and fetches only the rows it shows.

const $ = (id) => document.getElementById(id);
const STATES = ["scheduled", "running", "finished", "failed", "cancelled"];
const PAGE = 50;

/** Build an element; children are nodes or strings (strings become text nodes, never markup). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---------------------------------------------------------------------------------------------
// API: JSON in and out, with this tab's token; errors as readable text.
//
// Access (DESIGN.md "Access"): once the server has tokens, every request needs one. The page asks
// GET /whoami first and shows nothing until it answers: with no token kept, or a refused one, it asks for
// a token (kept in sessionStorage: this tab only, gone when the tab closes). The answer's scope decides
// what is shown at all (read < write, desk < admin); a later 401 (revoked, expired) asks again.

class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error;
    super(error ? error.message : `the server answered ${status}`);
    this.status = status;
    this.code = error ? error.code : "http_" + status;
    this.details = (error && error.details) || {};
  }
}

const TOKEN_KEY = "punctual.token";
const COVERS = { read: ["read"], write: ["read", "write"], desk: ["read", "desk"], admin: ["read", "write", "desk", "admin"] };
/** Who this tab is, from GET /whoami; scope null while signed out (nothing is shown then). */
const access = { name: null, scope: null, required: false };

function can(scope) { return Boolean(access.scope && COVERS[access.scope] && COVERS[access.scope].includes(scope)); }
function storedToken() { return sessionStorage.getItem(TOKEN_KEY); }

/** One request, no retries: {status, ok, data}. Throws an ApiError only when the server cannot be reached. */
async function send(method, path, body, token) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, { error: { code: "offline", message: "the server cannot be reached; is Punctual running?" } });
  }
  const text = await response.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = null; } }
  return { status: response.status, ok: response.ok, data };
}

function refusal(status, data) {
  const error = new ApiError(status, data);
  if (status === 403) {  // say it in the person's terms: which token, which scope, what it would need
    const { needed, scope } = error.details;
    error.message = needed
      ? `your token "${access.name}" has the ${scope || access.scope} scope, and this needs ${needed}`
      : `not allowed with your token "${access.name}" (${scope || access.scope}): ${error.message}`;
  }
  return error;
}

let rechecking = null;

/** After a 403: the token's scope may have changed since the page asked; if so, show what it allows now. */
function recheckAccess() {
  if (rechecking) return;
  rechecking = send("GET", "/whoami", undefined, storedToken())
    .then(async ({ ok, data }) => {
      if (!ok || !access.scope || !setAccess(data)) return;
      await signedIn(true);
      showNotice(`Your token "${access.name}" now has the ${access.scope} scope: what it does not allow is no longer shown.`);
    })
    .catch(() => {})
    .finally(() => { rechecking = null; });
}

async function api(method, path, body) {
  for (let round = 0; round < 3; round++) {
    if (!access.scope) throw new ApiError(401, { error: { code: "unauthorized", message: "sign in with a token first" } });
    const token = storedToken();
    const { status, ok, data } = await send(method, path, body, token);
    if (status === 401) {
      // Revoked or wrong: ask again (once for all the requests that hit it), then send this one again.
      if (storedToken() === token) await signIn("The server no longer accepts this tab's token. Enter one that works.");
      continue;
    }
    if (status === 403) recheckAccess();
    if (!ok) throw refusal(status, data);
    return { status, data };
  }
  throw new ApiError(401, { error: { code: "unauthorized", message: "the token was refused" } });
}

/** The token dialog: resolves with what was typed; rejects when the person cancels. */
function askToken(message) {
  return new Promise((resolve, reject) => {
    const dialog = $("token-dialog");
    const input = $("t-token");
    input.value = "";
    $("t-msg").textContent = message || "";
    $("t-msg").hidden = !message;
    const done = (token) => {
      cleanup();
      if (dialog.open) dialog.close();
      if (token) resolve(token);
      else reject(new ApiError(401, { error: { code: "unauthorized", message: "no token was given" } }));
    };
    const onSubmit = (e) => { e.preventDefault(); const token = input.value.trim(); if (token) done(token); else input.focus(); };
    const onCancel = (e) => { e.preventDefault(); done(null); };
    const cleanup = () => {
      $("token-form").removeEventListener("submit", onSubmit);
      $("t-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
    };
    $("token-form").addEventListener("submit", onSubmit);
    $("t-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    document.body.dataset.auth = "asking";
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

let signingIn = null;

/** Ask for a token until the server accepts one (or the person gives up: signed out), then show the page
 * for that token's scope. Shared: the requests that all got a 401 at once ask only once. */
function signIn(message) {
  if (signingIn) return signingIn;
  signingIn = (async () => {
    try {
      for (;;) {
        let token;
        try { token = await askToken(message); } catch (err) { signedOut(); throw err; }
        const { status, ok, data } = await send("GET", "/whoami", undefined, token);
        if (status === 401) { message = "That token was refused (unknown or revoked). Check it and try again."; continue; }
        if (!ok) throw refusal(status, data);
        sessionStorage.setItem(TOKEN_KEY, token);
        const changed = setAccess(data);
        await signedIn(changed);
        return;
      }
    } finally {
      signingIn = null;
      delete document.body.dataset.auth;
    }
  })();
  return signingIn;
}

/** Take on the identity /whoami answered; true when it differs from the one the page showed. */
function setAccess(who) {
  const before = `${access.name}|${access.scope}`;
  access.name = who.name;
  access.scope = COVERS[who.scope] ? who.scope : "read";  // an unknown scope shows the least
  access.required = Boolean(who.tokens_required);
  for (const scope of ["write", "desk", "admin"]) document.body.classList.toggle("may-" + scope, can(scope));
  document.body.dataset.scope = access.scope;
  $("who").hidden = !access.required;
  $("who-name").textContent = access.name;
  $("who-scope").textContent = access.scope;
  $("nav-desk").hidden = !can("desk") && !can("write");
  $("signed-out").hidden = true;
  return before !== `${access.name}|${access.scope}`;
}

/** No token the server accepts: show nothing but the way to give one. */
function signedOut() {
  access.name = access.scope = null;
  for (const scope of ["write", "desk", "admin"]) document.body.classList.remove("may-" + scope);
  delete document.body.dataset.scope;
  $("who").hidden = true;
  stopPolling();
  deskStop();
  if ($("detail").open) $("detail").close();
  table.rows.clear();
  renderTable();
  callbacks = [];
  fillCallbackPickers();
  renderCallbacks();
  schedules = [];
  renderSchedules();
  clearWorkflows();
  $("counts").replaceChildren();
  $("chart").replaceChildren();
  $("lateness").replaceChildren();
  latenessLast = 0;
  $("health-warning").hidden = true;
  showNotice("");
  for (const name of VIEWS) $("view-" + name).hidden = true;
  $("signed-out").hidden = false;
}

async function signOut() {
  // A held alert goes back to the queue with the token that holds it (no prompt if that token is dead).
  const held = desk.held;
  const back = asHolder(desk.lease);
  const token = storedToken();
  deskStop();
  if (held) {
    keepLease(held.id, null);
    await send("POST", `/events/${held.id}/release`, back, token).catch(() => {});
  }
  sessionStorage.removeItem(TOKEN_KEY);
  signedOut();
  signIn().catch(() => { /* cancelled: the signed-out panel stays */ });
}

// ---------------------------------------------------------------------------------------------
// Times: shown in the person's zone, UTC on hover; sent with the person's offset.

const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
const fmtTime = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const fmtDateTime = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
const fmtYear = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
const fmtMinute = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fmtFull = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });

function utcText(date) { return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC"); }

/** A <time> element: local time as text, UTC in the tooltip. */
function timeEl(iso, full = false) {
  if (!iso) return el("span", { class: "muted", text: "—" });
  const date = new Date(iso);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  const format = full ? fmtFull : sameDay ? fmtTime : date.getFullYear() === today.getFullYear() ? fmtDateTime : fmtYear;
  const text = format.format(date);
  return el("time", { datetime: date.toISOString(), title: utcText(date), text });
}

function offsetOf(date) {
  const minutes = -date.getTimezoneOffset();
  const sign = minutes >= 0 ? "+" : "-";
  const abs = Math.abs(minutes);
  return `${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
}

/** "2030-01-01T09:00" from a datetime-local input -> "2030-01-01T09:00:00+01:00" (the offset of that day). */
function localToIso(value) {
  if (!value) return null;
  const withSeconds = value.length === 16 ? value + ":00" : value;
  const date = new Date(withSeconds);
  if (Number.isNaN(date.getTime())) return null;
  return withSeconds + offsetOf(date);
}

function isoToLocalInput(iso) {
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

const ISO_WITH_OFFSET = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$/i;
const ISO_NAIVE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?$/;

/** The schedule form's "When": empty/"now", or ISO 8601 with an offset. {iso, error, note} */
function parseWhen(text) {
  const value = text.trim();
  if (!value || value.toLowerCase() === "now") return { iso: null, note: "Runs as soon as it is scheduled." };
  if (ISO_NAIVE.test(value)) {
    const example = (value.length === 10 ? value + "T09:00:00" : value.replace(" ", "T")) + offsetOf(new Date(value.length === 10 ? value + "T09:00" : value.replace(" ", "T")));
    return { error: `This time has no UTC offset, so it is ambiguous. Add one (Z or ±hh:mm), e.g. ${example} for your zone (${ZONE}), or use the picker.` };
  }
  if (!ISO_WITH_OFFSET.test(value)) return { error: "Not a time Punctual understands: use ISO 8601 with an offset, e.g. 2030-01-01T09:00:00+01:00, or the picker." };
  const date = new Date(value.replace(" ", "T"));
  if (Number.isNaN(date.getTime())) return { error: "This date does not exist." };
  const local = fmtFull.format(date);
  if (date.getTime() < Date.now() - 1000) return { iso: value.replace(" ", "T"), note: `${local}: in the past, so it runs at once.` };
  return { iso: value.replace(" ", "T"), note: `${local} (${utcText(date)}).` };
}

/** A JSON object from a text area, or a readable reason why not. */
function parseObject(text) {
  const parsed = parseJson(text, {});
  if (parsed.error || parsed.empty) return parsed;
  if (parsed.value === null || typeof parsed.value !== "object" || Array.isArray(parsed.value)) {
    return { error: "The payload must be a JSON object, in { braces }." };
  }
  return parsed;
}

/** Any JSON value from a text area ({value}, with `empty` for an empty one), or a readable reason why not. */
function parseJson(text, empty = null) {
  const value = text.trim();
  if (!value) return { value: empty, empty: true };
  try {
    return { value: JSON.parse(value) };
  } catch (err) {
    let where = "";
    const match = /position (\d+)/.exec(err.message);
    if (match) {
      const before = value.slice(0, Number(match[1]));
      const line = before.split("\n").length;
      const column = before.length - before.lastIndexOf("\n");
      where = `line ${line}, column ${column}: `;
    }
    const reason = err.message.replace(/^JSON\.parse: /, "").replace(/ in JSON at position \d+.*$/, "").replace(/\s*\(line \d+ column \d+\)$/, "");
    return { error: `Not valid JSON (${where}${reason}).` };
  }
}

function preview(value, max = 80) {
  const text = JSON.stringify(value);
  if (text === undefined) return "";
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

function badge(state) { return el("span", { class: `badge s-${state}`, text: state }); }

function showNotice(text) {
  const notice = $("notice");
  notice.textContent = text || "";
  notice.hidden = !text;
}

function say(node, text, kind = "") {
  node.textContent = text || "";
  node.className = "form-msg" + (kind ? " " + kind : "");
}

// ---------------------------------------------------------------------------------------------
// Live updates: one /stream connection per browser, shared by its tabs through a SharedWorker
// (live-worker.js); a tab without SharedWorker (e.g. Chrome on Android) runs the same file as its own
// Worker. The stream needs the token, so each tab hands its token to the worker, and the worker says when
// the server refused it. A poll fallback when the server refuses the stream (too many live pages) or has
// none (an API-only process).
//
// No gap between what was read and what is streamed: a change committed before the stream subscribed is
// not in the stream, so the list and the counts are read only once this tab is subscribed (its stream said
// `hello`, or it joined a worker whose stream is already live), and read again at each new subscription
// (a reconnect, a new token) if they were read before it.

const live = {
  listeners: [],
  onChanges(fn) { this.listeners.push(fn); },
  resyncers: [],
  onResync(fn) { this.resyncers.push(fn); },
  fallback: null,
  subscribed: false,  // this tab receives every change of a stream that is subscribed on the server
  waiting: [],        // resolvers of whenSubscribed()
  port: null,         // the worker's port (or the dedicated worker itself)
};

/** Resolves once this tab receives a subscribed stream's changes, or the page must poll, or after `ms`. */
function whenSubscribed(ms) {
  if (live.subscribed || live.fallback) return Promise.resolve();
  return new Promise((resolve) => {
    live.waiting.push(resolve);
    setTimeout(resolve, ms);  // no stream yet (a slow server): read anyway; the subscription reads again
  });
}

function stopWaiting() {
  const waiting = live.waiting;
  live.waiting = [];
  waiting.forEach((resolve) => resolve());
}

/** A new subscription: what was read before it may lack changes committed before it, so read again. */
function subscribed() {
  live.subscribed = true;
  stopPolling();
  stopWaiting();
  if (table.read) resyncAll();
}

function setLive(text, kind) {
  $("live-text").textContent = text;
  $("live").className = "live " + kind;
}

function resyncAll() { live.resyncers.forEach((fn) => fn()); }

function onLive(message) {
  if (!access.scope) {  // signed out: this tab shows nothing, live or not, but keeps track of the stream
    if (message.type === "hello") live.subscribed = true;
    else if (message.type === "status" || message.type === "poll") live.subscribed = Boolean(message.live);
    return;
  }
  switch (message.type) {
    case "status":
      setLive(message.text, message.kind);
      // A live status before any hello: this tab joined a worker whose stream was already subscribed;
      // the worker passes its changes to this tab from now on.
      if (message.live && !live.subscribed) subscribed();
      else if (!message.live) live.subscribed = false;
      break;
    case "hello": subscribed(); break;  // a new subscription (first, reconnect, new token)
    case "changes": {
      let changes;
      try { changes = JSON.parse(message.data); } catch { return; }
      live.listeners.forEach((fn) => fn(changes));
      break;
    }
    case "resync": resyncAll(); break;
    case "poll":
      live.subscribed = false;
      if (!live.fallback) live.fallback = setInterval(resyncAll, 5000);
      stopWaiting();
      break;
    case "unauthorized": {
      // The worker's token was refused. Another tab's stale token? Then ours may work: hand it over.
      // Ours? Then it no longer works: ask for a new one (which is handed over once accepted).
      const mine = storedToken();
      if ((message.token || null) === (mine || null)) {
        signIn("The server no longer accepts this tab's token. Enter one that works.").catch(() => {});
      } else {
        giveLiveToken();
      }
      break;
    }
  }
}

function stopPolling() {
  if (live.fallback) { clearInterval(live.fallback); live.fallback = null; }
}

function giveLiveToken() {
  if (live.port) live.port.postMessage({ type: "token", token: storedToken() });
}

function connectLive() {
  if (live.port) { giveLiveToken(); return; }
  try {
    if (typeof SharedWorker === "function") {
      const worker = new SharedWorker("/live-worker.js", { name: "punctual-live" });
      live.port = worker.port;
      worker.port.onmessage = (e) => onLive(e.data);
      worker.port.start();
      window.addEventListener("pagehide", () => worker.port.postMessage("close"));
    } else {
      const worker = new Worker("/live-worker.js", { name: "punctual-live" });  // this tab's own stream
      live.port = worker;
      worker.onmessage = (e) => onLive(e.data);
    }
  } catch {
    setLive("polling every 5 s", "wait");
    onLive({ type: "poll" });
    return;
  }
  giveLiveToken();
}

// ---------------------------------------------------------------------------------------------
// Callbacks (shared by the pickers, the filters and the callbacks page).

let callbacks = [];

async function loadCallbacks() {
  const { data } = await api("GET", "/callbacks");
  callbacks = data.callbacks;
  fillCallbackPickers();
  renderCallbacks();
}

function fillCallbackPickers() {
  const pick = $("s-callback");
  const current = pick.value;
  pick.replaceChildren(...callbacks.map((c) => el("option", { value: c.name, text: `${c.name} (${c.kind})` })));
  if (callbacks.some((c) => c.name === current)) pick.value = current;
  const filter = $("f-callback");
  const chosen = filter.value;
  filter.replaceChildren(el("option", { value: "", text: "any" }), ...callbacks.map((c) => el("option", { value: c.name, text: c.name })));
  filter.value = chosen;
  const forSchedule = $("sc-callback");
  const picked = forSchedule.value;
  forSchedule.replaceChildren(...callbacks.map((c) => el("option", { value: c.name, text: `${c.name} (${c.kind})` })));
  if (callbacks.some((c) => c.name === picked)) forSchedule.value = picked;
}

// ---------------------------------------------------------------------------------------------
// Events: the live table, counts, chart, detail.

const table = {
  rows: new Map(),       // id -> event shown
  nodes: new Map(),      // id -> <tr>
  cursor: null,          // next_cursor of the last page loaded
  size: PAGE,            // how many rows the person asked to see
  read: false,           // the list was read (or is being read) at least once
  syncing: Promise.resolve(),  // the last of the reads that change the rows (see serial)
};

/** Reads that change the rows run one at a time, in order: a list read that answers after a change's row
 *  was fetched would put the row back as it was before; so changes that arrive during a list read wait
 *  for it, and are applied after it. */
function serial(task) {
  const run = table.syncing.then(task);
  table.syncing = run.catch(() => {});
  return run;
}

function filters() {
  return {
    state: $("f-state").value || null,
    callback: $("f-callback").value || null,
    after: localToIso($("f-after").value),
    before: localToIso($("f-before").value),
  };
}

function matches(event, f = filters()) {
  if (f.state && event.state !== f.state) return false;
  if (f.callback && event.callback !== f.callback) return false;
  const at = new Date(event.scheduled_for).getTime();
  if (f.after && at < new Date(f.after).getTime()) return false;
  if (f.before && at >= new Date(f.before).getTime()) return false;
  return true;
}

function listQuery(limit, cursor) {
  const f = filters();
  const params = new URLSearchParams({ limit: String(limit) });
  if (f.state) params.set("state", f.state);
  if (f.callback) params.set("callback", f.callback);
  if (f.after) params.set("scheduled_after", f.after);
  if (f.before) params.set("scheduled_before", f.before);
  if (cursor) params.set("cursor", String(cursor));
  return "/events?" + params.toString();
}

async function readList() {
  table.read = true;
  const { data } = await api("GET", listQuery(Math.min(table.size, 1000)));
  table.rows = new Map(data.events.map((e) => [e.id, e]));
  table.cursor = data.next_cursor;
  renderTable();
}

async function refreshList() {
  table.read = true;  // from the moment it is asked for: a subscription meanwhile reads again
  try { await serial(readList); showNotice(""); } catch (err) { if (access.scope) showNotice("Could not load events: " + err.message); }
}

function loadOlder() {
  return serial(async () => {
    if (!table.cursor) return;
    const { data } = await api("GET", listQuery(PAGE, table.cursor));
    for (const e of data.events) table.rows.set(e.id, e);
    table.cursor = data.next_cursor;
    table.size = table.rows.size;
    renderTable();
  });
}

function upsert(event) {
  const shown = table.rows.get(event.id);
  if (shown && shown.updated_at > event.updated_at) return;  // an older answer overtaken by a newer one
  if (matches(event)) table.rows.set(event.id, event);
  else table.rows.delete(event.id);
}

function sortedRows() { return [...table.rows.values()].sort((a, b) => b.id - a.id); }

function rowCells(event) {
  return [
    el("td", { class: "num", text: String(event.id) }),
    el("td", { class: "cb" }, event.callback, event.schedule_id
      ? scheduleLink(event.schedule_id, "↻", { class: "from-schedule", title: `Made by schedule ${scheduleName(event.schedule_id)}`,
        "aria-label": `Made by schedule ${scheduleName(event.schedule_id)}` }) : null),
    el("td", { class: "state" }, badge(event.state)),
    el("td", { class: "when" }, timeEl(event.scheduled_for)),
    el("td", { class: "opt num", text: `${event.attempts}/${event.max_attempts}` }),
    el("td", { class: "opt payload", text: preview(event.payload) }),
  ];
}

function renderTable() {
  let rows = sortedRows();
  if (rows.length > table.size) {  // keep the page its size: drop the oldest
    for (const e of rows.slice(table.size)) table.rows.delete(e.id);
    rows = rows.slice(0, table.size);
    table.cursor = rows.length ? rows[rows.length - 1].id : null;
  }
  const body = $("events-body");
  const keep = new Set(rows.map((e) => e.id));
  for (const [id, node] of table.nodes) if (!keep.has(id)) { node.remove(); table.nodes.delete(id); }
  let position = body.firstElementChild;
  for (const event of rows) {
    let node = table.nodes.get(event.id);
    const key = `${event.state}|${event.updated_at}|${event.scheduled_for}|${event.attempts}`;
    if (!node) {
      node = el("tr", { tabindex: "0", "data-id": event.id, "aria-label": `Event ${event.id}, ${event.callback}, ${event.state}` });
      node.addEventListener("click", () => openDetail(event.id));
      node.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openDetail(event.id); }
        else if (e.key === "ArrowDown" && node.nextElementSibling) { e.preventDefault(); node.nextElementSibling.focus(); }
        else if (e.key === "ArrowUp" && node.previousElementSibling) { e.preventDefault(); node.previousElementSibling.focus(); }
      });
      table.nodes.set(event.id, node);
    }
    if (node.dataset.key !== key) {
      const fresh = node.dataset.key !== undefined;
      node.dataset.key = key;
      node.dataset.state = event.state;
      node.setAttribute("aria-label", `Event ${event.id}, ${event.callback}, ${event.state}`);
      node.replaceChildren(...rowCells(event));
      if (fresh) { node.classList.remove("flash"); void node.offsetWidth; node.classList.add("flash"); }
    }
    if (node !== position) body.insertBefore(node, position);
    else position = position.nextElementSibling;
  }
  $("events-empty").hidden = rows.length > 0;
  $("more").hidden = !table.cursor;
  $("list-info").textContent = rows.length ? `${rows.length} shown, newest first` : "";
}

// Changes pushed by the server: fetch the few rows that matter, or the page when many changed.
const pending = new Map();
let flushTimer = null;

function onChanges(changes) {
  for (const change of changes) pending.set(change.id, change);
  if (!flushTimer) flushTimer = setTimeout(flushChanges, 100);
  scheduleStats();
}

function flushChanges() {
  flushTimer = null;
  serial(flushOnce).catch(() => { /* a row that could not be read is read at the next change or resync */ });
}

async function flushOnce() {
  if (!pending.size) return;  // taken by an earlier flush that waited behind the same list read
  const changes = [...pending.values()];
  pending.clear();
  const shown = sortedRows();
  const newest = shown.length ? shown[0].id : 0;
  const full = shown.length >= table.size;
  const f = filters();
  const wanted = [];
  for (const change of changes) {
    if (change.state === null) { table.rows.delete(change.id); continue; }
    const known = table.rows.has(change.id);
    const couldShow = (!f.state || change.state === f.state) && (change.id > newest || !full);
    if (known || couldShow) wanted.push(change.id);
  }
  if (wanted.length > 25) { await readList(); refreshDetailIf(changes); return; }  // already in serial()
  const results = await Promise.allSettled(wanted.map((id) => api("GET", `/events/${id}`)));
  results.forEach((result, i) => {
    if (result.status === "fulfilled") upsert(result.value.data);
    else if (result.reason && result.reason.status === 404) table.rows.delete(wanted[i]);
  });
  renderTable();
  refreshDetailIf(changes);
}

// Counts and chart: read at most once a second while things change, and every 30 s anyway.
// One read at a time: two in flight could answer out of order, and the older answer, shown last, would
// stay until the next change. Asked for during a read, it is read once more right after.
let statsTimer = null;
let statsLast = 0;
let statsRunning = null;  // the read in flight
let statsAgain = false;   // asked for while it was in flight
function scheduleStats() {
  if (statsTimer) return;
  const wait = Math.max(0, 1000 - (Date.now() - statsLast));
  statsTimer = setTimeout(() => { statsTimer = null; loadStats(); }, wait);
}

function loadStats() {
  if (statsRunning) { statsAgain = true; return statsRunning; }
  statsRunning = (async () => {
    try {
      do {
        statsAgain = false;
        statsLast = Date.now();
        try {
          const { data } = await api("GET", "/stats");
          renderCounts(data.counts);
          renderChart(data.per_minute, data.now);
          loadLateness();
        } catch (err) { /* the table shows the error; counts wait for the next round */ }
      } while (statsAgain && access.scope);
    } finally {
      statsRunning = null;
    }
  })();
  return statsRunning;
}

function renderCounts(counts) {
  const box = $("counts");
  const active = $("f-state").value;
  const total = STATES.reduce((sum, s) => sum + (counts[s] || 0), 0);
  const chip = (state, label, n) => el("button", {
    type: "button", class: `chip ${state ? "s-" + state : "all"}`, "aria-pressed": String(active === state),
    "data-state": state || "all",
    onclick: () => { $("f-state").value = state; onFilter(); },
  }, el("span", { class: "chip-n", text: n.toLocaleString() }), el("span", { class: "chip-l", text: label }));
  box.replaceChildren(chip("", "all", total), ...STATES.map((s) => chip(s, s, counts[s] || 0)));
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function renderChart(perMinute, nowIso) {
  const now = new Date(nowIso);
  const start = Math.floor(now.getTime() / 60000) * 60000 - 59 * 60000;
  const buckets = Array.from({ length: 60 }, (_, i) => ({ t: start + i * 60000, finished: 0, failed: 0, cancelled: 0 }));
  for (const row of perMinute) {
    const i = Math.round((new Date(row.minute).getTime() - start) / 60000);
    if (i >= 0 && i < 60) Object.assign(buckets[i], { finished: row.finished, failed: row.failed, cancelled: row.cancelled });
  }
  const max = Math.max(1, ...buckets.map((b) => b.finished + b.failed + b.cancelled));
  const W = 600, H = 90, bw = W / 60;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", preserveAspectRatio: "none", class: "chart-svg" });
  const totals = buckets.reduce((a, b) => ({ finished: a.finished + b.finished, failed: a.failed + b.failed, cancelled: a.cancelled + b.cancelled }), { finished: 0, failed: 0, cancelled: 0 });
  root.setAttribute("aria-label", `Last hour: ${totals.finished} finished, ${totals.failed} failed, ${totals.cancelled} cancelled; busiest minute ${max}.`);
  root.append(svg("line", { x1: 0, y1: H, x2: W, y2: H, class: "axis" }));
  buckets.forEach((b, i) => {
    const g = svg("g");
    const title = svg("title");
    title.textContent = `${fmtMinute.format(new Date(b.t))}: ${b.finished} finished, ${b.failed} failed, ${b.cancelled} cancelled`;
    g.append(title);
    let y = H;
    for (const kind of ["finished", "failed", "cancelled"]) {
      if (!b[kind]) continue;
      const h = Math.max(1.5, (b[kind] / max) * (H - 4));
      y -= h;
      g.append(svg("rect", { x: i * bw + 1, y, width: bw - 2, height: h, class: kind }));
    }
    g.append(svg("rect", { x: i * bw, y: 0, width: bw, height: H, class: "hit" }));
    root.append(g);
  });
  // Labels in HTML: the drawing stretches to the card's width, text must not.
  const axis = el("div", { class: "chart-axis", "aria-hidden": "true" },
    el("span", { text: fmtMinute.format(new Date(start)) }), el("span", { text: totals.finished + totals.failed + totals.cancelled ? `busiest minute: ${max}` : "nothing ended in the last hour" }), el("span", { text: "now" }));
  $("chart").replaceChildren(root, axis);
}

// Lateness: how late attempts started (started_at - scheduled_for), p50 and p99 per minute of the last hour, from
// GET /stats/lateness. Punctuality is what Punctual sells, so it stands beside the outcomes. Read with the counts,
// at most every 10 s (the server keeps its answer that long anyway), one read at a time.
let latenessLast = 0;
let latenessRunning = false;
async function loadLateness() {
  if (latenessRunning || Date.now() - latenessLast < 10000) return;
  latenessRunning = true;
  latenessLast = Date.now();
  try {
    const { data } = await api("GET", "/stats/lateness");
    if (access.scope) renderLateness(data.per_minute, data.now);
  } catch (err) { /* the chart stays as it was; the next round reads again */ }
  finally { latenessRunning = false; }
}

/** Seconds as people read a delay: 0.42 ms, 3.1 ms, 120 ms, 1.25 s, 2.0 min. */
function fmtLate(seconds) {
  const abs = Math.abs(seconds);
  if (abs < 0.001) return `${(seconds * 1000).toFixed(2)} ms`;
  if (abs < 0.01) return `${(seconds * 1000).toFixed(1)} ms`;
  if (abs < 1) return `${Math.round(seconds * 1000)} ms`;
  if (abs < 60) return `${seconds.toFixed(abs < 10 ? 2 : 1)} s`;
  return `${(seconds / 60).toFixed(1)} min`;
}

function renderLateness(perMinute, nowIso) {
  const now = new Date(nowIso);
  const start = Math.floor(now.getTime() / 60000) * 60000 - 59 * 60000;
  const buckets = Array.from({ length: 60 }, (_, i) => ({ t: start + i * 60000, row: null }));
  for (const row of perMinute) {
    const i = Math.round((new Date(row.minute).getTime() - start) / 60000);
    if (i >= 0 && i < 60) buckets[i].row = row;
  }
  const shown = buckets.filter((b) => b.row);
  const W = 600, H = 90, bw = W / 60;
  // A log scale from 1 ms up to the next power of ten over the worst p99 (at least 100 ms): a p99 of seconds
  // must not flatten a p50 of milliseconds.
  const FLOOR = 0.001;
  const worst = shown.reduce((w, b) => (!w || b.row.p99 > w.row.p99 ? b : w), null);
  const top = 10 ** Math.max(-1, Math.ceil(Math.log10(worst ? worst.row.p99 : 0.1)));
  const span = Math.log10(top / FLOOR);
  const y = (v) => H - (Math.log10(Math.max(v, FLOOR) / FLOOR) / span) * H;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", preserveAspectRatio: "none", class: "chart-svg lateness-svg" });
  const latest = shown.length ? shown[shown.length - 1] : null;
  const attempts = shown.reduce((n, b) => n + b.row.attempts, 0);
  root.setAttribute("aria-label", latest
    ? `Last hour: ${attempts} attempts started; worst p99 ${fmtLate(worst.row.p99)} at ${fmtMinute.format(new Date(worst.t))}; ` +
      `latest minute p50 ${fmtLate(latest.row.p50)}, p99 ${fmtLate(latest.row.p99)}.`
    : "Last hour: no attempt started.");
  const marks = [];
  for (let v = FLOOR; v <= top * 1.001; v *= 10) marks.push(v);
  for (const v of marks) root.append(svg("line", { x1: 0, y1: y(v), x2: W, y2: y(v), class: "grid" }));
  buckets.forEach((b, i) => {
    const g = svg("g");
    const title = svg("title");
    title.textContent = b.row
      ? `${fmtMinute.format(new Date(b.t))}: ${b.row.attempts} started; p50 ${fmtLate(b.row.p50)}, p99 ${fmtLate(b.row.p99)}`
      : `${fmtMinute.format(new Date(b.t))}: no attempt started`;
    g.append(title);
    if (b.row) {
      for (const kind of ["p99", "p50"]) {  // the median in front of the 99th percentile
        const edge = Math.min(y(b.row[kind]), H - 1.5);  // at least a sliver: under 1 ms is not nothing
        g.append(svg("rect", { x: i * bw + 1, y: edge, width: bw - 2, height: H - edge, class: kind }));
      }
    }
    g.append(svg("rect", { x: i * bw, y: 0, width: bw, height: H, class: "hit" }));
    root.append(g);
  });
  // Labels in HTML, placed with the style object (the page's policy allows no inline style attribute).
  const scale = el("div", { class: "chart-y", "aria-hidden": "true" });
  for (const v of marks.slice(1)) {
    const label = el("span", { text: v >= 1 ? `${Math.round(v)} s` : `${Math.round(v * 1000)} ms` });
    label.style.top = `${(y(v) / H) * 100}%`;
    scale.append(label);
  }
  const axis = el("div", { class: "chart-axis", "aria-hidden": "true" },
    el("span", { text: fmtMinute.format(new Date(start)) }),
    el("span", { text: latest ? `worst p99: ${fmtLate(worst.row.p99)}` : "no attempt started in the last hour" }),
    el("span", { text: "now" }));
  $("lateness").replaceChildren(el("div", { class: "chart-plot" }, root, scale), axis);
}

// Health: /health's status and reasons (vacuum held back or off, a part down), above every page, read every 30 s.
// A warning, not an error: the page keeps working whatever it says.
async function loadHealth() {
  if (!access.scope) return;
  try {
    const { data } = await send("GET", "/health");
    renderHealth(data);
  } catch (err) { /* unreachable: the requests that fail say so */ }
}

function renderHealth(health) {
  const box = $("health-warning");
  const reasons = (health && Array.isArray(health.reasons)) ? health.reasons : [];
  if (!access.scope || !health || health.status === "ok" || !reasons.length) { box.hidden = true; return; }
  const down = health.status === "down";
  box.classList.toggle("down", down);
  $("health-title").textContent = down
    ? "This Punctual server is down: events may not run on time until this is fixed"
    : "Punctual runs, but something needs attention";
  $("health-reasons").replaceChildren(...reasons.map((reason) => el("li", { text: reason })));
  box.hidden = false;
}

function onFilter() {
  table.size = PAGE;
  table.rows.clear();
  refreshList();
  loadStats();
}

// Detail dialog.
let detailId = null;
let detailState = null;

async function openDetail(id) {
  detailId = id;
  say($("d-msg"), "");
  try {
    const { data } = await api("GET", `/events/${id}`);
    renderDetail(data);
    if (!$("detail").open) $("detail").showModal();
  } catch (err) {
    showNotice(`Could not open event ${id}: ${err.message}`);
  }
}

function refreshDetailIf(changes) {
  if (detailId === null || !$("detail").open) return;
  const change = changes.find((c) => c.id === detailId);
  if (!change) return;
  if (change.state === null) { say($("d-msg"), "This event was deleted.", "warn"); return; }
  // "Scheduled again." is old news once the event moved on (a refusal stays until the next action).
  if (change.state !== detailState && !$("d-msg").classList.contains("bad")) say($("d-msg"), "");
  api("GET", `/events/${detailId}`).then(({ data }) => renderDetail(data)).catch(() => {});
}

function renderDetail(e) {
  detailState = e.state;
  $("d-title").replaceChildren(`Event ${e.id} `, badge(e.state));
  const fact = (name, value) => [el("dt", { text: name }), el("dd", {}, value)];
  const facts = [
    ...fact("Callback", e.callback),
    ...fact("Scheduled for", timeEl(e.scheduled_for, true)),
    ...fact("Attempts", `${e.attempts} of ${e.max_attempts}`),
    ...fact("Priority", String(e.priority)),
    ...fact("Source", e.source),
    ...(e.schedule_id ? fact("Schedule", scheduleLink(e.schedule_id, scheduleName(e.schedule_id))) : []),
    ...(e.workflow_id ? fact("Workflow", workflowLink(e.workflow_id, `${e.workflow_id}, step ${e.workflow_step}`)) : []),
    ...fact("Created", timeEl(e.created_at, true)),
  ];
  if (e.started_at) facts.push(...fact("Started", timeEl(e.started_at, true)));
  if (e.finished_at) facts.push(...fact("Finished", timeEl(e.finished_at, true)));
  if (e.worker) facts.push(...fact("Worker", e.worker));
  if (e.lease_until && e.state === "running") facts.push(...fact("Lease until", timeEl(e.lease_until, true)));
  if (e.idempotency_key) facts.push(...fact("Idempotency key", e.idempotency_key));
  $("d-facts").replaceChildren(...facts);
  if (e.schedule_id && !schedules.some((s) => s.id === e.schedule_id)) {  // a schedule made since the list was read
    loadSchedules().then(() => {
      const link = $("d-facts").querySelector(`a[data-schedule='${e.schedule_id}']`);
      if (link) link.textContent = scheduleName(e.schedule_id);
    }).catch(() => {});
  }
  $("d-payload").textContent = JSON.stringify(e.payload, null, 2);
  const outcome = [];
  if (e.result !== null && e.result !== undefined) outcome.push(el("h3", { text: "Result" }), el("pre", { text: JSON.stringify(e.result, null, 2) }));
  if (e.last_error) outcome.push(el("h3", { text: "Last error" }), el("pre", { class: "error", text: e.last_error }));
  $("d-outcome").replaceChildren(...outcome);
  $("d-history").replaceChildren(...(e.history || []).map((h) => el("li", { class: `s-${h.state}` },
    el("span", { class: "t" }, timeEl(h.at)), " ", badge(h.state),
    h.attempt ? el("span", { class: "muted", text: ` attempt ${h.attempt}` }) : null,
    h.worker ? el("span", { class: "muted", text: ` · ${h.worker}` }) : null,
    h.error ? el("div", { class: "error", text: h.error }) : null)));
  $("d-cancel").hidden = e.state !== "scheduled";
  $("d-retry").hidden = !["failed", "cancelled"].includes(e.state);
  $("d-resched-wrap").hidden = e.state !== "scheduled";
  $("d-delete").hidden = e.state === "running";
  if (e.state === "scheduled" && document.activeElement !== $("d-resched")) $("d-resched").value = isoToLocalInput(e.scheduled_for);
  upsert(e);
  renderTable();
}

async function detailAction(method, suffix, body, done) {
  const id = detailId;
  say($("d-msg"), "Working…");
  try {
    const { data } = await api(method, `/events/${id}${suffix}`, body);
    say($("d-msg"), done, "ok");
    if (method === "DELETE") { table.rows.delete(id); renderTable(); $("detail").close(); return; }
    renderDetail(data);
  } catch (err) {
    say($("d-msg"), `Refused: ${err.message}`, "bad");
  }
}

let deleteArmed = null;
function setupDetail() {
  $("d-cancel").addEventListener("click", () => detailAction("POST", "/cancel", undefined, "Cancelled."));
  $("d-retry").addEventListener("click", () => detailAction("POST", "/retry", undefined, "Scheduled again."));
  $("d-resched-btn").addEventListener("click", () => {
    const iso = localToIso($("d-resched").value);
    if (!iso) { say($("d-msg"), "Pick a date and time first.", "bad"); return; }
    detailAction("PATCH", "", { scheduled_for: iso }, "Rescheduled.");
  });
  $("d-delete").addEventListener("click", () => {
    const button = $("d-delete");
    if (deleteArmed) {
      clearTimeout(deleteArmed); deleteArmed = null; button.textContent = "Delete";
      detailAction("DELETE", "", undefined, "Deleted.");
      return;
    }
    button.textContent = "Really delete?";
    deleteArmed = setTimeout(() => { deleteArmed = null; button.textContent = "Delete"; }, 4000);
  });
  $("detail").addEventListener("close", () => { detailId = null; });
}

// Schedule form.
function checkPayload() {
  const result = parseObject($("s-payload").value);
  const msg = $("s-payload-msg");
  msg.textContent = result.error || "Valid JSON object.";
  msg.className = "field-msg " + (result.error ? "bad" : "ok");
  $("s-payload").setAttribute("aria-invalid", String(Boolean(result.error)));
  return result;
}

function checkWhen() {
  const result = parseWhen($("s-when").value);
  const msg = $("s-when-msg");
  msg.textContent = result.error || result.note || "";
  msg.className = "field-msg " + (result.error ? "bad" : "hint");
  $("s-when").setAttribute("aria-invalid", String(Boolean(result.error)));
  return result;
}

function setupSchedule() {
  $("s-payload").addEventListener("input", checkPayload);
  $("s-when").addEventListener("input", checkWhen);
  $("s-when").placeholder = `now, or 2030-01-01T09:00:00${offsetOf(new Date())}`;
  $("s-when-pick").addEventListener("change", () => {
    const iso = localToIso($("s-when-pick").value);
    if (iso) { $("s-when").value = iso; checkWhen(); }
  });
  checkWhen();
  $("schedule").addEventListener("submit", async (e) => {
    e.preventDefault();
    const result = $("s-result");
    const payload = checkPayload();
    const when = checkWhen();
    if (payload.error) { say(result, "Nothing was scheduled: fix the payload first.", "bad"); $("s-payload").focus(); return; }
    if (when.error) { say(result, "Nothing was scheduled: fix the time first.", "bad"); $("s-when").focus(); return; }
    const body = { callback: $("s-callback").value, payload: payload.value };
    if (!body.callback) { say(result, "Pick a callback (create one on the Callbacks page).", "bad"); return; }
    if (when.iso) body.scheduled_for = when.iso;
    const priority = $("s-priority").value.trim();
    if (priority) body.priority = Number(priority);
    const attempts = $("s-attempts").value.trim();
    if (attempts) body.max_attempts = Number(attempts);
    $("s-submit").disabled = true;
    try {
      const { data } = await api("POST", "/events", body);
      upsert(data);
      renderTable();
      say(result, "", "ok");
      result.append(`Scheduled event #${data.id} for `, timeEl(data.scheduled_for, true), ".");
      const row = table.nodes.get(data.id);
      if (row) { row.classList.remove("flash"); void row.offsetWidth; row.classList.add("flash"); }
    } catch (err) {
      say(result, `Not scheduled: ${err.message}`, "bad");
    } finally {
      $("s-submit").disabled = false;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Schedules page (DESIGN.md "Schedules"): the list, each rule in words with its next run; for admin tokens,
// create/edit with a live preview of the next 5 runs, pause/resume and delete.
//
// The preview is the server's (GET /schedules/preview, debounced while typing): cron fire times across
// daylight-saving changes come from the code that makes the occurrences, so the form shows what will run.
// The browser only formats the instants, in the person's zone and in UTC.

let schedules = [];
const sched = {
  nodes: new Map(),     // id -> <tr>
  selected: null,       // the schedule a link pointed at (#schedules?id=N): highlighted in the list
  reload: null,         // a throttled re-read after live changes
  previewTimer: null,   // the debounce of the preview
  previewSeq: 0,        // only the answer to the newest preview request is shown
  loading: null,        // the list read in flight
};
const PREVIEW_DELAY = 300;  // ms of quiet typing before the preview is asked for
const FIELD_INPUTS = { name: "sc-name", callback: "sc-callback", payload: "sc-payload", cron: "sc-cron", every: "sc-every",
  timezone: "sc-timezone", start_at: "sc-start", end_at: "sc-end", catch_up_limit: "sc-limit" };

function loadSchedules() {
  if (sched.loading) return sched.loading;  // one read at a time; its answer is the newest anyway
  sched.loading = (async () => {
    try {
      const { data } = await api("GET", "/schedules");
      schedules = data.schedules;
      renderSchedules();
    } finally { sched.loading = null; }
  })();
  return sched.loading;
}

function scheduleName(id) {
  const found = schedules.find((s) => s.id === id);
  return found ? found.name : `#${id}`;
}

function scheduleViewShown() { return Boolean(access.scope) && !$("view-schedules").hidden; }

/** Re-read the list soon (next runs move as occurrences are made), at most every 2 s. */
function scheduleReload() {
  if (sched.reload || !scheduleViewShown()) return;
  sched.reload = setTimeout(() => {
    sched.reload = null;
    if (scheduleViewShown()) loadSchedules().catch(() => {});
  }, 2000);
}

function ruleText(s) {
  const rule = s.cron ? `${s.cron} · ${s.timezone}` : `every ${s.every} s`;
  const bounds = [s.start_at ? `from ${utcText(new Date(s.start_at))}` : "", s.end_at ? `until ${utcText(new Date(s.end_at))}` : ""];
  return [rule, ...bounds].filter(Boolean).join(" · ");
}

function scheduleCells(s) {
  const next = s.paused ? el("span", { class: "muted", text: "— paused" })
    : s.next_runs.length ? timeEl(s.next_runs[0]) : el("span", { class: "muted", text: "none: it has ended" });
  const cells = [
    el("td", { class: "name", text: s.name }),
    el("td", { class: "cb", text: s.callback }),
    el("td", { class: "rule" }, el("span", { class: "desc", text: s.description }),
      el("div", { class: "hint", text: ruleText(s) })),
    el("td", { class: "next" }, next),
    el("td", { class: "state" }, el("span", { class: `badge ${s.paused ? "paused" : "active"}`, text: s.paused ? "paused" : "active" })),
  ];
  if (can("admin")) {  // only admin tokens change schedules; the others do not see the buttons at all
    cells.push(el("td", { class: "row-actions" },
      el("button", { type: "button", class: "ghost", "data-action": "edit", "aria-label": `Edit ${s.name}`, text: "Edit",
        onclick: () => editSchedule(s.id) }),
      el("button", { type: "button", class: "ghost", "data-action": "toggle", "aria-label": `${s.paused ? "Resume" : "Pause"} ${s.name}`,
        text: s.paused ? "Resume" : "Pause", onclick: () => setPaused(s.id, !s.paused) }),
      el("button", { type: "button", class: "ghost danger", "data-action": "delete", "aria-label": `Delete ${s.name}`, text: "Delete",
        onclick: () => askDelete(s.id) })));
  }
  return cells;
}

/** The list, row by row: a row whose schedule did not change keeps its node (and the focus in it). */
function renderSchedules() {
  const body = $("schedules-body");
  const focused = document.activeElement && body.contains(document.activeElement) ? document.activeElement : null;
  const refocus = focused && { id: focused.closest("tr").dataset.scheduleId, action: focused.dataset.action };
  const keep = new Set(schedules.map((s) => s.id));
  for (const [id, node] of sched.nodes) if (!keep.has(id)) { node.remove(); sched.nodes.delete(id); }
  let position = body.firstElementChild;
  for (const s of schedules) {
    let node = sched.nodes.get(s.id);
    if (!node) { node = el("tr", { "data-schedule-id": s.id, tabindex: "-1" }); sched.nodes.set(s.id, node); }
    const key = JSON.stringify([s.updated_at, s.name, s.callback, s.description, s.paused, s.next_runs[0], s.start_at, s.end_at, access.scope]);
    if (node.dataset.key !== key) {
      node.dataset.key = key;
      node.dataset.name = s.name;
      node.dataset.paused = String(s.paused);
      node.replaceChildren(...scheduleCells(s));
    }
    if (node !== position) body.insertBefore(node, position);
    else position = position.nextElementSibling;
  }
  $("schedules-empty").hidden = schedules.length > 0;
  if (refocus && !body.contains(document.activeElement)) {
    const again = body.querySelector(`tr[data-schedule-id='${refocus.id}'] [data-action='${refocus.action}']`);
    if (again) again.focus();
  }
  markSelected(false);
}

function markSelected(scroll = true) {
  for (const [id, node] of sched.nodes) {
    const on = id === sched.selected;
    node.classList.toggle("selected", on);
    if (on) node.setAttribute("aria-current", "true"); else node.removeAttribute("aria-current");
    if (on && scroll) { node.scrollIntoView({ block: "nearest" }); node.focus({ preventScroll: true }); }
  }
}

function putSchedule(s) {
  const i = schedules.findIndex((x) => x.id === s.id);
  if (i >= 0) schedules[i] = s; else schedules.push(s);
  schedules.sort((a, b) => a.id - b.id);
  renderSchedules();
}

async function setPaused(id, paused) {
  const name = scheduleName(id);
  const out = $("schedules-msg");
  try {
    const { data } = await api("POST", `/schedules/${id}/${paused ? "pause" : "resume"}`);
    putSchedule(data);
    say(out, paused ? `Paused ${name}: it makes nothing until it is resumed.`
      : `Resumed ${name} (what the pause missed follows its catch-up policy).`, "ok");
  } catch (err) {
    say(out, `Not ${paused ? "paused" : "resumed"}: ${err.message}`, "bad");
  }
}

let deleting = null;
function askDelete(id) {
  deleting = id;
  $("scc-name").textContent = scheduleName(id);
  $("sc-confirm").showModal();
  $("scc-keep").focus();  // the safe choice has the focus
}

async function confirmDelete() {
  const id = deleting;
  const name = scheduleName(id);
  $("sc-confirm").close();
  try {
    await api("DELETE", `/schedules/${id}`);
    schedules = schedules.filter((s) => s.id !== id);
    renderSchedules();
    if ($("sc-id").value === String(id)) editSchedule(null);
    say($("schedules-msg"), `Deleted ${name}. The events of its past occurrences stay.`, "ok");
  } catch (err) {
    say($("schedules-msg"), `Not deleted: ${err.message}`, "bad");
  }
}

// The form.

function checkSchedulePayload() {
  const result = parseObject($("sc-payload").value);
  const msg = $("sc-payload-msg");
  msg.textContent = result.error || "Valid JSON object.";
  msg.className = "field-msg " + (result.error ? "bad" : "ok");
  $("sc-payload").setAttribute("aria-invalid", String(Boolean(result.error)));
  return result;
}

function syncRuleKind() {
  const every = $("sc-rule-every").checked;
  $("sc-cron-wrap").hidden = every;
  $("sc-every-wrap").hidden = !every;
  $("sc-limit-wrap").hidden = $("sc-catchup").value !== "all";
}

/** The rule as typed: {rule} for the API, or {empty: true} while there is no cron or interval yet. */
function ruleOf() {
  const rule = { timezone: $("sc-timezone").value.trim() || "UTC", start_at: null, end_at: null };
  if ($("sc-rule-every").checked) {
    const text = $("sc-every").value.trim();
    if (!text) return { empty: true };
    rule.every = Number(text) * Number($("sc-every-unit").value);
  } else {
    const cron = $("sc-cron").value.trim();
    if (!cron) return { empty: true };
    rule.cron = cron;
  }
  if ($("sc-start").value) rule.start_at = localToIso($("sc-start").value);
  if ($("sc-end").value) rule.end_at = localToIso($("sc-end").value);
  return { rule };
}

function clearFieldMarks() {
  for (const id of Object.values(FIELD_INPUTS)) if (id !== "sc-payload") $(id).removeAttribute("aria-invalid");
}

/** Point at the field a 422 names (details.field, or pydantic's details.fields[].field). */
function markField(err) {
  const details = (err && err.details) || {};
  const names = [details.field, ...(details.fields || []).map((f) => String(f.field).split(".").pop())];
  for (const name of names) if (FIELD_INPUTS[name]) $(FIELD_INPUTS[name]).setAttribute("aria-invalid", "true");
}

function schedulePreview() {
  clearTimeout(sched.previewTimer);
  const { rule } = ruleOf();
  sched.previewSeq += 1;  // whatever is on its way is for a rule no longer typed
  if (!rule) {
    $("sc-desc").textContent = "";
    $("sc-runs").replaceChildren();
    $("sc-preview-msg").textContent = "Type a cron or an interval to see when it runs.";
    $("sc-preview-msg").className = "field-msg hint";
    return;
  }
  $("sc-preview").classList.add("stale");
  sched.previewTimer = setTimeout(() => previewNow(rule), PREVIEW_DELAY);
}

async function previewNow(rule) {
  const seq = ++sched.previewSeq;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(rule)) if (value !== null && value !== undefined) params.set(key, String(value));
  let answer = null;
  let failure = null;
  try { answer = (await api("GET", "/schedules/preview?" + params.toString())).data; } catch (err) { failure = err; }
  if (seq !== sched.previewSeq) return;  // overtaken by newer typing
  $("sc-preview").classList.remove("stale");
  clearFieldMarks();
  const msg = $("sc-preview-msg");
  if (failure) {
    $("sc-desc").textContent = "";
    $("sc-runs").replaceChildren();
    msg.textContent = failure.message;
    msg.className = "field-msg bad";
    markField(failure);
    return;
  }
  $("sc-desc").textContent = answer.description;
  $("sc-runs").replaceChildren(...answer.next_runs.map((iso) => runItem(iso, rule.timezone)));
  msg.textContent = answer.next_runs.length ? `In your time (${ZONE}); UTC below each.`
    : "It never runs again: the end comes before its next occurrence.";
  msg.className = "field-msg " + (answer.next_runs.length ? "hint" : "bad");
}

/** One previewed run: the person's time, UTC, and the schedule zone's time when that is another zone. */
function runItem(iso, zone) {
  const date = new Date(iso);
  const item = el("li", { "data-utc": date.toISOString() },
    el("time", { datetime: date.toISOString(), title: utcText(date), text: fmtFull.format(date) }),
    el("span", { class: "utc", text: utcText(date) }));
  if (zone && zone !== ZONE && zone !== "UTC") {
    try {
      const there = new Intl.DateTimeFormat(undefined, { timeZone: zone, weekday: "short", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
      item.append(el("span", { class: "there", text: `${there.format(date)} in ${zone}` }));
    } catch { /* a zone this browser does not know: the server knew it, the two lines above say it all */ }
  }
  return item;
}

function everyParts(seconds) {
  for (const unit of [86400, 3600, 60]) if (seconds >= unit && seconds % unit === 0) return [seconds / unit, unit];
  return [seconds, 1];
}

/** Fill the form with a schedule to edit (by id), or empty it for a new one (null). */
function editSchedule(id) {
  const s = id === null ? null : schedules.find((x) => x.id === id);
  $("sc-id").value = s ? String(s.id) : "";
  $("sc-name").value = s ? s.name : "";
  if (s) $("sc-callback").value = s.callback;
  $("sc-payload").value = s ? JSON.stringify(s.payload, null, 2) : "{}";
  $("sc-rule-every").checked = Boolean(s && s.every !== null && s.every !== undefined);
  $("sc-rule-cron").checked = !$("sc-rule-every").checked;
  $("sc-cron").value = s && s.cron ? s.cron : "";
  const [n, unit] = s && s.every ? everyParts(s.every) : ["", 60];
  $("sc-every").value = String(n);
  $("sc-every-unit").value = String(unit);
  $("sc-timezone").value = s ? s.timezone : defaultZone();
  $("sc-start").value = s && s.start_at ? isoToLocalInput(s.start_at) : "";
  $("sc-end").value = s && s.end_at ? isoToLocalInput(s.end_at) : "";
  $("sc-catchup").value = s ? s.catch_up : "skip";
  $("sc-limit").value = String(s ? s.catch_up_limit : 100);
  $("sc-overlap").value = s ? s.overlap : "allow";
  $("sc-form-title").textContent = s ? `Edit ${s.name}` : "New schedule";
  $("sc-submit").textContent = s ? "Save" : "Create";
  $("sc-cancel").hidden = !s;
  say($("sc-result"), "");
  clearFieldMarks();
  checkSchedulePayload();
  syncRuleKind();
  schedulePreview();
  if (s) $("sc-name").focus();
}

function defaultZone() {
  return ZONE === "local time" ? "UTC" : ZONE;
}

async function submitSchedule(e) {
  e.preventDefault();
  const out = $("sc-result");
  const id = $("sc-id").value;
  clearFieldMarks();
  const name = $("sc-name").value.trim();
  if (!name) { say(out, "A schedule needs a name.", "bad"); $("sc-name").setAttribute("aria-invalid", "true"); $("sc-name").focus(); return; }
  const payload = checkSchedulePayload();
  if (payload.error) { say(out, "Nothing was saved: fix the payload first.", "bad"); $("sc-payload").focus(); return; }
  const { rule } = ruleOf();
  if (!rule) {
    say(out, "Say when it runs: a cron, or an interval.", "bad");
    ($("sc-rule-every").checked ? $("sc-every") : $("sc-cron")).focus();
    return;
  }
  const body = { name, callback: $("sc-callback").value, payload: payload.value, timezone: rule.timezone,
    catch_up: $("sc-catchup").value, overlap: $("sc-overlap").value };
  if (!body.callback) { say(out, "Pick a callback (create one on the Callbacks page).", "bad"); return; }
  if (rule.cron) body.cron = rule.cron; else body.every = rule.every;
  if (id) {  // an edit sends the whole rule: the other kind and an emptied bound are cleared
    if (rule.cron) body.every = null; else body.cron = null;
    body.start_at = rule.start_at;
    body.end_at = rule.end_at;
  } else {
    if (rule.start_at) body.start_at = rule.start_at;
    if (rule.end_at) body.end_at = rule.end_at;
  }
  if (body.catch_up === "all") body.catch_up_limit = Number($("sc-limit").value) || 100;
  $("sc-submit").disabled = true;
  try {
    const { data } = id ? await api("PATCH", `/schedules/${id}`, body) : await api("POST", "/schedules", body);
    putSchedule(data);
    editSchedule(null);
    sched.selected = data.id;
    markSelected(false);
    say(out, "", "ok");
    out.append(`${id ? "Saved" : "Created"} ${data.name}; `,
      data.next_runs.length ? el("span", {}, "next run ", timeEl(data.next_runs[0], true), ".") : "it has no run ahead.");
  } catch (err) {
    say(out, `Not saved: ${err.message}`, "bad");
    markField(err);
  } finally {
    $("sc-submit").disabled = false;
  }
}

function setupSchedules() {
  $("sc-zone-name").textContent = ZONE;
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  $("sc-zones").replaceChildren(...["UTC", ...zones.filter((z) => z !== "UTC")].map((z) => el("option", { value: z })));
  $("sc-payload").addEventListener("input", checkSchedulePayload);
  for (const id of ["sc-cron", "sc-every", "sc-timezone"]) $(id).addEventListener("input", schedulePreview);
  for (const id of ["sc-every-unit", "sc-start", "sc-end", "sc-rule-cron", "sc-rule-every"]) {
    $(id).addEventListener("change", () => { syncRuleKind(); schedulePreview(); });
  }
  $("sc-catchup").addEventListener("change", syncRuleKind);
  $("sc-cancel").addEventListener("click", () => editSchedule(null));
  $("sc-form").addEventListener("submit", submitSchedule);
  $("scc-delete").addEventListener("click", confirmDelete);
  $("scc-keep").addEventListener("click", () => $("sc-confirm").close());
  $("sc-confirm").addEventListener("close", () => { deleting = null; });
  live.onChanges(scheduleReload);  // an occurrence made or run moves a next run
  live.onResync(scheduleReload);
  setInterval(() => { if (scheduleViewShown()) loadSchedules().catch(() => {}); }, 15000);
  editSchedule(null);
}

/** A link to the schedule that made an event (in its row and its detail). */
function scheduleLink(id, text, attrs = {}) {
  return el("a", { ...attrs, href: `#schedules?id=${id}`, "data-schedule": id, text,
    onclick: (e) => { e.stopPropagation(); if ($("detail").open) $("detail").close(); },
    onkeydown: (e) => e.stopPropagation() });  // Enter follows the link; the row's Enter would open the detail
}

// ---------------------------------------------------------------------------------------------
// Workflows page (DESIGN.md "Workflows"): the list, filtered by name and state (#workflows), and one
// workflow (#workflows?id=ID): what it waits on now, since when and until when, its steps as a timeline
// (each with its times, a timer's or a wait's end, its event, its result or error) and the signals it
// received. A write token sends it signals and cancels it; other scopes do not see those controls at all.
//
// The live stream carries events, not workflows; but a workflow's steps are events, so a change re-reads
// what is shown (one read at a time). Timers and waits change no event, so an open workflow that has not
// ended is also read every 2 s, and the list while it shows one that has not.

const WF_TERMINAL = ["completed", "failed", "cancelled"];
const WF_REFRESH = 2000;       // ms between reads of what is shown while it may change
const WF_LIVE_DELAY = 300;     // ms from a live change to the read it asks for (a burst asks once)
const ISO_INSTANT = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})/g;

const wf = {
  rows: [],              // the list shown
  nodes: new Map(),      // id -> <tr>
  before: null,          // next_before of the last page read
  size: PAGE,            // how many rows the person asked to see
  names: new Set(),      // workflow names seen, suggested by the name filter
  listing: null,         // the list read in flight
  listAgain: false,      // asked for while it was in flight
  id: null,              // the workflow open in the detail
  shown: null,           // its last answer
  key: null,             // the answer last drawn: an unchanged one is not drawn again (focus, selection stay)
  missing: false,        // the open id answered 404: not read again until opened again
  reading: null,
  readAgain: false,
  soon: null,            // a read asked for by a live change
  ticks: 0,
  nameTimer: null,       // the debounce of the name filter
  suggested: "",         // the signal name the form was filled with (what the workflow waits for)
  focusTitle: false,     // opened from the list by the person: the focus goes to the workflow's title
};

function wfViewShown() { return Boolean(access.scope) && !$("view-workflows").hidden; }
function wfListShown() { return wfViewShown() && !$("wf-list").hidden; }
function wfDetailShown() { return wfViewShown() && !$("wf-detail").hidden; }
function wfEnded(w) { return WF_TERMINAL.includes(w.state); }
function wfHref(id) { return "#workflows?id=" + encodeURIComponent(id); }

/** A text from the API with the instants in it (`sleep until 2026-...Z`) shown as times in the person's zone. */
function withTimes(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(ISO_INSTANT)) {
    if (match.index > last) nodes.push(text.slice(last, match.index));
    nodes.push(timeEl(match[0]));
    last = match.index + match[0].length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}

/** "12 s ago", "in 59 min", "just now": how far an instant is from now (the server's clock and this one
 *  may differ by a little: a second either way is now). */
function relative(iso, now = Date.now()) {
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs <= 1) return "just now";
  const size = abs < 60 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min`
    : abs < 129600 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} days`;
  return seconds >= 0 ? `in ${size}` : `${size} ago`;
}

/** 42 ms, 2.4 s, 3 min 5 s, 2 h 10 min */
function duration(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

// The list.

function wfFilters() {
  return { workflow: $("wf-f-name").value.trim() || null, state: $("wf-f-state").value || null };
}

function wfQuery(limit, before) {
  const f = wfFilters();
  const params = new URLSearchParams({ limit: String(limit) });
  if (f.workflow) params.set("workflow", f.workflow);
  if (f.state) params.set("state", f.state);
  if (before) params.set("before", before);
  return "/workflows?" + params.toString();
}

/** Read the list (one read at a time; asked for during one, it is read once more right after). */
function loadWorkflows() {
  if (wf.listing) { wf.listAgain = true; return wf.listing; }
  wf.listing = (async () => {
    try {
      do {
        wf.listAgain = false;
        const asked = wfQuery(0);
        const { data } = await api("GET", wfQuery(Math.min(wf.size, 1000)));
        if (asked !== wfQuery(0)) { wf.listAgain = true; continue; }  // the filters changed meanwhile
        wf.rows = data.workflows;
        wf.before = data.next_before;
        renderWorkflows();
        say($("wf-list-msg"), "");
      } while (wf.listAgain && access.scope);
    } catch (err) {
      if (access.scope) say($("wf-list-msg"), `Could not load workflows: ${err.message}`, "bad");
    } finally {
      wf.listing = null;
    }
  })();
  return wf.listing;
}

async function loadOlderWorkflows() {
  if (!wf.before) return;
  const { data } = await api("GET", wfQuery(PAGE, wf.before));
  const known = new Set(wf.rows.map((w) => w.id));
  wf.rows = wf.rows.concat(data.workflows.filter((w) => !known.has(w.id)));
  wf.before = data.next_before;
  wf.size = wf.rows.length;
  renderWorkflows();
}

/** What a workflow of the list waits on: the API's words, with their instants as times. */
function waitingCell(w) {
  if (wfEnded(w)) return [el("span", { class: "muted", text: "—" })];
  const nodes = w.waiting_on ? withTimes(w.waiting_on) : [el("span", { class: "muted", text: "its next step" })];
  if (w.cancel_requested_at) nodes.push(el("span", { class: "cancelling", text: " · cancelling" }));
  return nodes;
}

function workflowCells(w) {
  return [
    el("td", { class: "wf-id" }, w.id, el("span", { class: "wf-name-narrow", "aria-hidden": "true", text: w.workflow })),
    el("td", { class: "cb opt", text: w.workflow }),
    el("td", { class: "state" }, badge(w.state)),
    el("td", { class: "wf-on" }, ...waitingCell(w)),
    el("td", { class: "opt at" }, timeEl(w.created_at)),
    el("td", { class: "at" }, timeEl(w.updated_at)),
  ];
}

function openFromList(id) {
  wf.focusTitle = true;
  location.hash = wfHref(id);
}

/** The list, row by row: a row whose workflow did not change keeps its node (and the focus in it). */
function renderWorkflows() {
  const body = $("wf-body");
  const keep = new Set(wf.rows.map((w) => w.id));
  for (const [id, node] of wf.nodes) if (!keep.has(id)) { node.remove(); wf.nodes.delete(id); }
  let position = body.firstElementChild;
  for (const w of wf.rows) {
    let node = wf.nodes.get(w.id);
    if (!node) {
      node = el("tr", { tabindex: "0", "data-wf-id": w.id });
      node.addEventListener("click", () => openFromList(w.id));
      node.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openFromList(w.id); }
        else if (e.key === "ArrowDown" && node.nextElementSibling) { e.preventDefault(); node.nextElementSibling.focus(); }
        else if (e.key === "ArrowUp" && node.previousElementSibling) { e.preventDefault(); node.previousElementSibling.focus(); }
      });
      wf.nodes.set(w.id, node);
    }
    const key = JSON.stringify([w.updated_at, w.state, w.waiting_on, w.cancel_requested_at]);
    if (node.dataset.key !== key) {
      node.dataset.key = key;
      node.dataset.state = w.state;
      node.setAttribute("aria-label", `Workflow ${w.id}, ${w.workflow}, ${w.state}`);
      node.replaceChildren(...workflowCells(w));
    }
    if (node !== position) body.insertBefore(node, position);
    else position = position.nextElementSibling;
    wf.names.add(w.workflow);
  }
  const names = [...wf.names].sort();
  if ($("wf-names").options.length !== names.length) {
    $("wf-names").replaceChildren(...names.map((name) => el("option", { value: name })));
  }
  $("wf-empty").hidden = wf.rows.length > 0;
  $("wf-more").hidden = !wf.before;
  $("wf-info").textContent = wf.rows.length ? `${wf.rows.length} shown, newest first` : "";
}

function onWorkflowFilter() {
  wf.size = PAGE;
  wf.rows = [];
  renderWorkflows();
  loadWorkflows();
}

// One workflow.

function showWorkflowList() {
  wf.id = null;
  $("wf-detail").hidden = true;
  $("wf-list").hidden = false;
  document.title = "Workflows · Punctual";
  const back = wf.shown && wf.nodes.get(wf.shown.id);
  loadWorkflows().then(() => {
    const row = back && back.isConnected ? back : null;
    if (row && document.activeElement === document.body) row.focus();  // back where the person was
  });
}

function openWorkflow(id) {
  $("wf-list").hidden = true;
  $("wf-detail").hidden = false;
  if (id !== wf.id) {  // another workflow: nothing of the previous one stays on screen
    wf.id = id;
    wf.shown = null;
    wf.key = null;
    wf.missing = false;
    wf.suggested = "";
    const detail = $("wf-detail");
    detail.dataset.id = id;
    delete detail.dataset.state;
    $("wf-title").replaceChildren(`Workflow ${id}`);
    for (const part of ["wf-now", "wf-facts", "wf-input", "wf-outcome", "wf-steps", "wf-signals"]) $(part).replaceChildren();
    $("wf-steps-info").textContent = "";
    $("wf-steps-empty").hidden = $("wf-signals-empty").hidden = true;
    $("wf-sig-name").value = "";
    $("wf-sig-value").value = "";
    checkSignalValue();
    say($("wf-msg"), "");
    $("wf-actions").hidden = true;  // until the workflow says whether it can still be signalled
  }
  document.title = `Workflow ${id} · Punctual`;
  if (wf.focusTitle) { wf.focusTitle = false; $("wf-title").focus(); }
  loadWorkflow();
}

/** Read the open workflow (one read at a time; an answer for a workflow no longer open is dropped). */
function loadWorkflow() {
  if (wf.reading) { wf.readAgain = true; return wf.reading; }
  wf.reading = (async () => {
    try {
      do {
        wf.readAgain = false;
        const id = wf.id;
        if (id === null) return;
        try {
          const { data } = await api("GET", `/workflows/${encodeURIComponent(id)}`);
          if (id === wf.id) renderWorkflow(data);
        } catch (err) {
          if (id !== wf.id || !access.scope) continue;
          if (err.status === 404) {
            wf.missing = true;
            $("wf-detail").dataset.state = "missing";
            $("wf-now").replaceChildren(el("p", { class: "bad", text:
              `There is no workflow ${id}: it was never started, or it ended long enough ago for retention to remove it.` }));
            $("wf-actions").hidden = true;
          } else {
            say($("wf-msg"), `Could not read the workflow: ${err.message}`, "bad");
          }
        }
      } while (wf.readAgain && access.scope);
    } finally {
      wf.reading = null;
    }
  })();
  return wf.reading;
}

function openSteps(w) { return (w.steps || []).filter((s) => s.state === "pending" || s.state === "waiting"); }

function earliest(values) {
  const present = values.filter(Boolean);
  return present.length ? present.reduce((a, b) => (new Date(a) <= new Date(b) ? a : b)) : null;
}

/** What the workflow does now: how it ended, or what it waits on, since when and until when. Drawn again
 *  at every refresh (the "ago" and "in" move on). */
function renderWorkflowNow(w) {
  const box = $("wf-now");
  box.dataset.state = w.state;
  if (wfEnded(w)) {
    const took = w.finished_at ? duration(new Date(w.finished_at) - new Date(w.created_at)) : null;
    box.replaceChildren(el("p", { class: "now-main" },
      el("strong", { text: { completed: "Completed", failed: "Failed", cancelled: "Cancelled" }[w.state] }), " ",
      timeEl(w.finished_at || w.updated_at, true), took ? ` after ${took}` : "",
      ` (${relative(w.finished_at || w.updated_at)}).`));
    return;
  }
  const open = openSteps(w);
  const since = earliest(open.map((s) => s.created_at)) || w.updated_at;
  const until = earliest(open.map((s) => s.wake_at));
  const what = w.waiting_on ? withTimes(w.waiting_on)
    : [w.advances ? "its next step, being decided now" : "its first step, made by the workflow runner in a moment"];
  const lines = [
    el("p", { class: "now-main" }, el("strong", { text: w.state === "waiting" ? "Waiting on " : "Running: " }), ...what),
    el("p", { class: "now-when" }, "since ", timeEl(since, true), ` (${relative(since)})`,
      until ? el("span", {}, " · until ", timeEl(until, true), ` (${relative(until)})`) : null),
  ];
  if (w.cancel_requested_at) {
    lines.push(el("p", { class: "now-cancel" }, "Cancel asked for ", timeEl(w.cancel_requested_at, true),
      ": it stops where it waits, then runs its compensations."));
  }
  box.replaceChildren(...lines);
}

/** A step's name: the callback it calls or the signal it waits for; timers and recorded times have none. */
function stepTitle(s) {
  return { sleep: "durable timer", now: "recorded time" }[s.kind] || s.name;
}

/** One step of the timeline: number, kind, name, compensation, state; when; its event; what it gave. */
function stepItem(s, consumed) {
  const head = el("div", { class: "step-head" },
    el("span", { class: "step-n", "aria-label": `Step ${s.step}`, text: String(s.step) }),
    el("span", { class: `kind k-${s.kind}`, text: s.kind }),
    el("strong", { class: "step-name", text: stepTitle(s) }),
    s.compensation ? el("span", { class: "comp", title: "A compensation: it runs because the workflow failed or was cancelled",
      text: "↩ compensation" }) : null,
    badge(s.state));
  const when = el("div", { class: "step-when" }, timeEl(s.created_at));
  if (s.finished_at) when.append(" → ", timeEl(s.finished_at), ` (${duration(new Date(s.finished_at) - new Date(s.created_at))})`);
  else when.append(" → …");  // how long so far: in the box above, which is drawn again at every refresh
  if (s.wake_at) {
    const words = s.kind === "sleep" ? (s.finished_at ? " · slept until " : " · sleeps until ")
      : (s.finished_at ? " · its timeout was " : " · waits until ");
    when.append(el("span", { class: "until" }, words, timeEl(s.wake_at)));
  }
  const parts = [head, when];
  if (s.event_id) {
    const attempts = s.event_attempts === 1 ? "1 attempt" : `${s.event_attempts ?? 0} attempts`;
    parts.push(el("div", { class: "step-event" },
      el("a", { href: `#events?id=${s.event_id}`, "data-event": s.event_id, text: `Event #${s.event_id}`,
        onclick: (e) => { e.preventDefault(); openDetail(s.event_id); } }),
      s.event_state ? el("span", { class: "muted" }, " ", badge(s.event_state), ` ${attempts}`) : null));
  }
  if (s.error) parts.push(el("div", { class: "error", text: s.error }));
  if (s.kind === "signal" && s.state === "completed") {
    parts.push(consumed ? el("div", { class: "step-out" }, "received ", el("code", { text: preview(s.result, 200) }))
      : el("div", { class: "step-out muted", text: "no signal came before the wait's end: it gave null" }));
  } else if (s.kind === "now" && s.result) {
    parts.push(el("div", { class: "step-out" }, "recorded ", timeEl(s.result, true)));
  } else if (s.state === "completed" && s.kind === "call") {
    parts.push(el("div", { class: "step-out" }, "result ", el("code", { text: preview(s.result, 300) })));
  }
  return el("li", { class: `wf-step s-${s.state}${s.compensation ? " compensation" : ""}`, "data-step": s.step,
    "data-kind": s.kind, "data-state": s.state }, ...parts);
}

function signalItem(g) {
  return el("li", { "data-signal": g.id, "data-step": g.step ?? "" },
    el("strong", { class: "sig-name", text: g.name }), " ",
    el("code", { class: "sig-value", text: preview(g.value, 200) }),
    el("div", { class: "muted" }, "received ", timeEl(g.received_at), ` from ${g.source} · `,
      g.step !== null && g.step !== undefined
        ? el("span", { class: "used", text: `taken by step ${g.step}` })
        : el("span", { class: "kept", text: `kept: no wait for "${g.name}" has taken it yet` })));
}

function renderWorkflow(w) {
  wf.shown = w;
  wf.missing = false;
  const detail = $("wf-detail");
  detail.dataset.state = w.state;
  renderWorkflowNow(w);
  const key = JSON.stringify(w);
  if (key === wf.key) return;
  wf.key = key;
  const ended = wfEnded(w);
  $("wf-title").replaceChildren(`Workflow ${w.id} `, badge(w.state));
  const fact = (name, value) => [el("dt", { text: name }), el("dd", {}, value)];
  const facts = [...fact("Workflow", w.workflow), ...fact("Started", timeEl(w.created_at, true)),
    ...fact("Updated", timeEl(w.updated_at, true))];
  if (w.finished_at) facts.push(...fact("Ended", timeEl(w.finished_at, true)));
  if (w.due_at && !ended) facts.push(...fact("Next advance", timeEl(w.due_at, true)));
  facts.push(...fact("Advances", String(w.advances)), ...fact("Source", w.source));
  $("wf-facts").replaceChildren(...facts);
  $("wf-input").textContent = JSON.stringify(w.input, null, 2);
  const outcome = [];
  if (w.state === "completed") outcome.push(el("h3", { text: "Result" }), el("pre", { id: "wf-result", text: JSON.stringify(w.result, null, 2) }));
  if (w.error) outcome.push(el("h3", { text: "Error" }), el("pre", { id: "wf-error", class: "error", text: w.error }));
  $("wf-outcome").replaceChildren(...outcome);

  const steps = w.steps || [];
  const signals = w.signals || [];
  const takenBy = new Set(signals.filter((g) => g.step !== null && g.step !== undefined).map((g) => g.step));
  $("wf-steps").replaceChildren(...steps.map((s) => stepItem(s, takenBy.has(s.step))));
  $("wf-steps-empty").hidden = steps.length > 0;
  const compensations = steps.filter((s) => s.compensation).length;
  $("wf-steps-info").textContent = steps.length
    ? `${steps.length} step${steps.length === 1 ? "" : "s"}${compensations ? `, ${compensations} compensation${compensations === 1 ? "" : "s"}` : ""}` : "";
  $("wf-signals").replaceChildren(...signals.map(signalItem));
  $("wf-signals-empty").hidden = signals.length > 0;

  // Signal and cancel: only while it has not ended (the API refuses both after), cancel only once. Once it
  // ended, the box stays only to keep what the person just did in sight (the answer to their signal, cancel).
  const actions = !ended || Boolean($("wf-msg").textContent);
  $("wf-actions").hidden = !actions;
  $("wf-top").classList.toggle("ended", !actions);
  $("wf-signal").hidden = ended;
  $("wf-cancel-row").hidden = ended || Boolean(w.cancel_requested_at);
  $("wf-ended").hidden = !ended;
  const waitsFor = [...new Set(openSteps(w).filter((s) => s.kind === "signal").map((s) => s.name))];
  $("wf-sig-names").replaceChildren(...waitsFor.map((name) => el("option", { value: name })));
  const input = $("wf-sig-name");
  if (waitsFor.length && (input.value === "" || input.value === wf.suggested) && document.activeElement !== input) {
    input.value = wf.suggested = waitsFor[0];  // what it waits for, unless the person typed another name
  }
}

function checkSignalValue() {
  const result = parseJson($("wf-sig-value").value);
  const msg = $("wf-sig-value-msg");
  msg.textContent = result.error || (result.empty ? "Empty: the signal's value is null." : "Valid JSON.");
  msg.className = "field-msg " + (result.error ? "bad" : result.empty ? "hint" : "ok");
  $("wf-sig-value").setAttribute("aria-invalid", String(Boolean(result.error)));
  return result;
}

async function sendSignal(e) {
  e.preventDefault();
  const out = $("wf-msg");
  const name = $("wf-sig-name").value.trim();
  $("wf-sig-name").removeAttribute("aria-invalid");
  if (!name) {
    say(out, "Nothing was sent: name the signal (what the workflow's wait_for asks for).", "bad");
    $("wf-sig-name").setAttribute("aria-invalid", "true");
    $("wf-sig-name").focus();
    return;
  }
  const value = checkSignalValue();
  if (value.error) { say(out, "Nothing was sent: fix the value first.", "bad"); $("wf-sig-value").focus(); return; }
  const id = wf.id;
  $("wf-sig-send").disabled = true;
  say(out, "Sending…");
  try {
    await api("POST", `/workflows/${encodeURIComponent(id)}/signals/${encodeURIComponent(name)}`, { value: value.value });
    if (id !== wf.id) return;
    say(out, `Signal "${name}" sent.`, "ok");
    $("wf-sig-value").value = "";
    checkSignalValue();
    loadWorkflow();
  } catch (err) {
    if (id === wf.id) say(out, `Not sent: ${err.message}`, "bad");
  } finally {
    $("wf-sig-send").disabled = false;
  }
}

function askCancelWorkflow() {
  if (!wf.id) return;
  $("wfc-id").textContent = wf.id;
  $("wf-confirm").dataset.id = wf.id;
  $("wf-confirm").showModal();
  $("wfc-keep").focus();  // the safe choice has the focus
}

async function confirmCancelWorkflow() {
  const id = $("wf-confirm").dataset.id;
  $("wf-confirm").close();
  if (!id || id !== wf.id) return;
  const out = $("wf-msg");
  say(out, "Cancelling…");
  try {
    const { data } = await api("POST", `/workflows/${encodeURIComponent(id)}/cancel`);
    if (id !== wf.id) return;
    say(out, "Cancel asked for: it stops where it waits, and its compensations run.", "ok");
    renderWorkflow(data);
    loadWorkflow();
  } catch (err) {
    if (id === wf.id) say(out, `Not cancelled: ${err.message}`, "bad");
  }
}

/** What is shown may have changed: read it again, soon and once for a burst of changes. */
function workflowsChanged() {
  if (wf.soon || !wfViewShown()) return;
  wf.soon = setTimeout(() => {
    wf.soon = null;
    if (wfDetailShown()) { if (!wf.missing && !(wf.shown && wfEnded(wf.shown))) loadWorkflow(); }
    else if (wfListShown()) loadWorkflows();
  }, WF_LIVE_DELAY);
}

function workflowsTick() {
  if (!wfViewShown()) return;
  wf.ticks += 1;
  if (wfDetailShown()) {
    if (wf.shown) renderWorkflowNow(wf.shown);
    if (!wf.missing && !(wf.shown && wfEnded(wf.shown))) loadWorkflow();
  } else if (wf.rows.some((w) => !wfEnded(w)) || wf.ticks % 5 === 0) {
    loadWorkflows();  // every 2 s while one shown may change, every 10 s anyway (one started elsewhere)
  }
}

function clearWorkflows() {
  wf.rows = [];
  wf.before = null;
  wf.id = null;
  wf.shown = null;
  wf.key = null;
  renderWorkflows();
  $("wf-detail").hidden = true;
  if ($("wf-confirm").open) $("wf-confirm").close();
}

function setupWorkflows() {
  $("wf-f-state").addEventListener("change", onWorkflowFilter);
  $("wf-f-name").addEventListener("input", () => {
    clearTimeout(wf.nameTimer);
    wf.nameTimer = setTimeout(onWorkflowFilter, PREVIEW_DELAY);
  });
  $("wf-filters").addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(wf.nameTimer); onWorkflowFilter(); });
  $("wf-filters").addEventListener("reset", () => setTimeout(onWorkflowFilter, 0));
  $("wf-more").addEventListener("click", () => loadOlderWorkflows().catch((err) => say($("wf-list-msg"), err.message, "bad")));
  $("wf-sig-value").addEventListener("input", checkSignalValue);
  $("wf-signal").addEventListener("submit", sendSignal);
  $("wf-cancel").addEventListener("click", askCancelWorkflow);
  $("wfc-cancel").addEventListener("click", confirmCancelWorkflow);
  $("wfc-keep").addEventListener("click", () => $("wf-confirm").close());
  live.onChanges(workflowsChanged);
  live.onResync(workflowsChanged);
  setInterval(workflowsTick, WF_REFRESH);
  checkSignalValue();
}

/** A link to the workflow an event is a step of (in the event's detail). */
function workflowLink(id, text) {
  return el("a", { href: wfHref(id), "data-workflow": id, text,
    onclick: (e) => { e.stopPropagation(); if ($("detail").open) $("detail").close(); } });
}

// ---------------------------------------------------------------------------------------------
// Callbacks page.

const KIND_HELP = {
  python: { label: "Handler", hint: "A handler registered in code: add, subtract, multiply, divide, noop, or one of yours.", config: "Usually {}." },
  webhook: { label: "URL", hint: "An http(s) URL; its host must be in WEBHOOK_ALLOWED_HOSTS.", config: 'e.g. {"headers": {"X-Team": "ops"}}' },
  kafka: { label: "Topic", hint: "The Kafka topic to produce to; key and headers come from the payload.", config: 'e.g. {"key": "orders"}' },
  manual: { label: "", hint: "", config: "Usually {}. People or workers claim these events through the API or the alert desk." },
};

function syncKind() {
  const kind = $("cb-kind").value;
  const help = KIND_HELP[kind];
  $("cb-target-wrap").hidden = kind === "manual";
  $("cb-target-label").textContent = help.label;
  $("cb-target-hint").textContent = help.hint;
  $("cb-target").type = kind === "webhook" ? "url" : "text";
  $("cb-timeout-label").textContent = kind === "manual" ? "Lease (s)" : "Timeout (s)";
  $("cb-config-msg").textContent = help.config;
  $("cb-config-msg").className = "field-msg hint";
}

function renderCallbacks() {
  const body = $("callbacks-body");
  body.replaceChildren(...callbacks.map((c) => {
    let armed = null;
    const del = el("button", { type: "button", class: "ghost danger", "aria-label": `Delete ${c.name}`, text: "Delete" });
    del.addEventListener("click", async () => {
      if (!armed) { del.textContent = "Really?"; armed = setTimeout(() => { armed = null; del.textContent = "Delete"; }, 4000); return; }
      clearTimeout(armed);
      try {
        await api("DELETE", `/callbacks/${c.id}`);
        say($("cb-result"), `Deleted ${c.name}.`, "ok");
        await loadCallbacks();
      } catch (err) { say($("cb-result"), `Not deleted: ${err.message}`, "bad"); del.textContent = "Delete"; armed = null; }
    });
    const edit = el("button", { type: "button", class: "ghost", "aria-label": `Edit ${c.name}`, text: "Edit", onclick: () => editCallback(c) });
    return el("tr", { "data-name": c.name },
      el("td", { class: "cb", text: c.name }), el("td", {}, el("span", { class: "kind", text: c.kind })),
      el("td", { class: "target", text: c.target || "—" }),
      el("td", { class: "opt num", text: `${c.timeout_seconds} s` }), el("td", { class: "opt num", text: String(c.max_attempts) }),
      can("admin") ? el("td", { class: "row-actions" }, edit, del) : null);  // only admin tokens edit callbacks
  }));
}

/** Does this config hold a value the server answered as "***" (a write-only secret)? */
function hasSecret(value) {
  if (value === SECRET) return true;
  if (value && typeof value === "object") return Object.values(value).some(hasSecret);
  return false;
}
const SECRET = "***";

/** A new webhook's signing secret: answered once, by the creation only. Shown until the person hides it. */
function showSigningSecret(name, secret) {
  $("cb-secret-name").textContent = name;
  $("cb-secret-value").value = secret;
  $("cb-secret").hidden = false;
  $("cb-secret-value").focus();
  $("cb-secret-value").select();
}

function hideSigningSecret() {
  $("cb-secret-value").value = "";
  $("cb-secret").hidden = true;
}

function editCallback(c) {
  $("cb-id").value = c ? String(c.id) : "";
  $("cb-name").value = c ? c.name : "";
  $("cb-kind").value = c ? c.kind : "python";
  $("cb-target").value = c ? c.target : "";
  $("cb-timeout").value = c ? String(c.timeout_seconds) : "";
  $("cb-attempts").value = c ? String(c.max_attempts) : "";
  $("cb-config").value = c ? JSON.stringify(c.config, null, 2) : "{}";
  $("cb-form-title").textContent = c ? `Edit ${c.name}` : "New callback";
  $("cb-submit").textContent = c ? "Save" : "Create";
  $("cb-cancel").hidden = !c;
  $("cb-secrets-msg").hidden = !(c && hasSecret(c.config));
  $("cb-rotate").hidden = !(c && c.kind === "webhook");
  $("cb-rotate").textContent = "New signing secret";
  say($("cb-result"), "");
  syncKind();
  if (c) $("cb-name").focus();
}

function setupCallbacks() {
  $("cb-kind").addEventListener("change", syncKind);
  $("cb-secret-done").addEventListener("click", hideSigningSecret);
  let rotateArmed = null;
  $("cb-rotate").addEventListener("click", async () => {
    const button = $("cb-rotate");
    const id = $("cb-id").value;
    if (!id) return;
    if (!rotateArmed) {  // the old secret stops working at once: ask twice
      button.textContent = "Really? Receivers must get the new one";
      rotateArmed = setTimeout(() => { rotateArmed = null; button.textContent = "New signing secret"; }, 4000);
      return;
    }
    clearTimeout(rotateArmed);
    rotateArmed = null;
    button.textContent = "New signing secret";
    try {
      const { data } = await api("POST", `/callbacks/${id}/rotate-secret`);
      say($("cb-result"), `New signing secret for ${data.name}; the old one no longer signs.`, "ok");
      if (typeof data.signing_secret === "string" && data.signing_secret !== SECRET) showSigningSecret(data.name, data.signing_secret);
    } catch (err) { say($("cb-result"), `No new secret: ${err.message}`, "bad"); }
  });
  $("cb-secret-copy").addEventListener("click", async () => {
    const input = $("cb-secret-value");
    try { await navigator.clipboard.writeText(input.value); }
    catch { input.select(); document.execCommand("copy"); }  // no clipboard API (e.g. plain http on a LAN)
    $("cb-secret-copy").textContent = "Copied";
    setTimeout(() => { $("cb-secret-copy").textContent = "Copy"; }, 2000);
  });
  $("cb-cancel").addEventListener("click", () => editCallback(null));
  $("cb-config").addEventListener("input", () => {
    const r = parseObject($("cb-config").value);
    $("cb-config-msg").textContent = r.error ? r.error.replace("payload", "config") : KIND_HELP[$("cb-kind").value].config;
    $("cb-config-msg").className = "field-msg " + (r.error ? "bad" : "hint");
  });
  syncKind();
  $("cb-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = $("cb-id").value;
    const config = parseObject($("cb-config").value);
    if (config.error) { say($("cb-result"), "Fix the config first: " + config.error.replace("payload", "config"), "bad"); return; }
    const kind = $("cb-kind").value;
    const body = { name: $("cb-name").value.trim(), kind, target: kind === "manual" ? "" : $("cb-target").value.trim(), config: config.value };
    if (!body.name) { say($("cb-result"), "A callback needs a name.", "bad"); $("cb-name").focus(); return; }
    const timeout = $("cb-timeout").value.trim();
    if (timeout) body.timeout_seconds = Number(timeout);
    const attempts = $("cb-attempts").value.trim();
    if (attempts) body.max_attempts = Number(attempts);
    // Secrets come back as "***" and go back as "***" (the server keeps the stored value): the config is
    // sent exactly as shown, so a secret the person did not touch is never overwritten.
    try {
      hideSigningSecret();
      const { data } = id ? await api("PATCH", `/callbacks/${id}`, body) : await api("POST", "/callbacks", body);
      editCallback(null);
      say($("cb-result"), id ? `Saved ${body.name}.` : `Created ${body.name}.`, "ok");
      const secret = data && (data.signing_secret ?? data.secret);
      if (!id && typeof secret === "string" && secret && secret !== SECRET) showSigningSecret(body.name, secret);
      await loadCallbacks();
    } catch (err) { say($("cb-result"), `Not saved: ${err.message}`, "bad"); }
  });
}

// ---------------------------------------------------------------------------------------------
// Alert desk: claim the next alert under a lease, count it down, resolve / more time / log out.

// Who takes the alert: with tokens, the token's name (the server takes it from the token; the body names
// no worker); on a server without tokens, the name typed here. A claim answers a lease_token that extend,
// complete and release must send back; it is kept in sessionStorage per event, so this tab can still
// resolve its alert after a reload (reads never answer it).

const DESK_NAME = "punctual.desk.name";
const DESK_LEASE = "punctual.desk.lease";
const DESK_LEASES = "punctual.desk.leases";  // {event id: lease_token} of the alerts this tab holds
const ALERT_CALLBACK = "Alert";
const desk = { name: null, mode: "off", held: null, lease: null, deadline: 0, total: 0, claiming: false, poll: null, tick: null, pending: null };

function leases() {
  try { return JSON.parse(sessionStorage.getItem(DESK_LEASES)) || {}; } catch { return {}; }
}

function keepLease(id, leaseToken) {
  const all = leases();
  if (leaseToken) all[id] = leaseToken; else delete all[id];
  sessionStorage.setItem(DESK_LEASES, JSON.stringify(all));
}

/** A claim-side request body: the worker only where the server has no tokens to take it from. */
function asWorker(body = {}) {
  if (!access.required) body.worker = desk.name;
  return body;
}

/** The body of a request about the held alert: its lease_token, and the worker where needed. */
function asHolder(leaseToken, body = {}) {
  return asWorker({ lease_token: leaseToken, ...body });
}

function deskShow(mode) {
  desk.mode = mode;
  $("desk-login").hidden = mode !== "off";
  $("desk-on").hidden = mode === "off";
  $("desk-idle").hidden = mode !== "idle";
  $("desk-expired").hidden = mode !== "expired";
  $("desk-alert").hidden = mode !== "holding";
  $("desk-alert").dataset.eventId = desk.held ? String(desk.held.id) : "";
  if (mode === "idle") { if (!desk.poll) desk.poll = setInterval(deskClaim, 2000); }
  else if (desk.poll) { clearInterval(desk.poll); desk.poll = null; }
  if (mode !== "holding" && desk.tick) { clearInterval(desk.tick); desk.tick = null; }
}

function leaseSeconds() {
  const value = Number($("desk-lease").value);
  return value > 0 ? value : undefined;
}

function hold(event, leaseToken) {
  desk.held = event;
  desk.lease = leaseToken;
  keepLease(event.id, leaseToken);
  // The lease as the server counts it: lease_until - now() at the moment it answered (updated_at).
  const left = new Date(event.lease_until).getTime() - new Date(event.updated_at).getTime();
  desk.total = Math.max(1, left);
  desk.deadline = performance.now() + left;
  const p = event.payload || {};
  $("desk-alert-id").textContent = p.alert_id !== undefined ? `#${p.alert_id}` : `(event ${event.id})`;
  $("desk-alert-msg").textContent = typeof p.message === "string" ? p.message : preview(p, 300);
  $("desk-alert-sev").textContent = p.severity ? String(p.severity) : "";
  $("desk-alert-sev").hidden = !p.severity;
  $("desk-alert-sev").dataset.severity = p.severity ? String(p.severity).toLowerCase() : "";
  $("desk-alert-payload").textContent = JSON.stringify(p, null, 2);
  deskShow("holding");
  tickCountdown();
  if (!desk.tick) desk.tick = setInterval(tickCountdown, 250);
}

function tickCountdown() {
  const left = desk.deadline - performance.now();
  if (left <= 0) {
    if (desk.held) keepLease(desk.held.id, null);
    desk.held = null;
    say($("desk-msg"), "");
    const wasOnCard = document.activeElement === document.body || $("desk-alert").contains(document.activeElement);
    deskShow("expired");
    if (wasOnCard) $("desk-resume").focus();  // never steal focus from what the person is typing
    return;
  }
  const seconds = Math.ceil(left / 1000);
  $("desk-countdown").textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")} left`;
  $("desk-bar").style.width = `${Math.min(100, (left / desk.total) * 100)}%`;
  $("desk-alert").classList.toggle("low", left < 10000);
}

async function deskClaim() {
  if (desk.mode !== "idle" || desk.claiming) return;
  desk.claiming = true;
  try {
    const body = asWorker({ callback: ALERT_CALLBACK });
    const lease = leaseSeconds();
    if (lease) body.lease_seconds = lease;
    const { status, data } = await api("POST", "/events/claim", body);
    if (desk.mode !== "idle") {  // logged out meanwhile: give it straight back
      const back = { lease_token: data.lease_token };
      if (body.worker) back.worker = body.worker;
      if (status === 200) await api("POST", `/events/${data.id}/release`, back).catch(() => {});
      return;
    }
    if (status === 200) { say($("desk-msg"), ""); hold(data, data.lease_token); }
  } catch (err) {
    say($("desk-msg"), `Cannot take alerts: ${err.message}`, "bad");
  } finally {
    desk.claiming = false;
  }
}

async function deskStart(name) {
  desk.name = name;
  sessionStorage.setItem(DESK_NAME, name);
  $("desk-who").textContent = name;
  say($("desk-msg"), "");
  // Back after a reload while holding an alert? Pick it up again with its lease_token rather than leaving
  // it to expire. A lease that is gone (expired, taken, finished) answers 409: forget it.
  for (const [id, leaseToken] of Object.entries(leases())) {
    try {
      const { data } = await api("POST", `/events/${id}/extend`, asHolder(leaseToken, { seconds: leaseSeconds() }));
      if (desk.name !== name) return;
      hold(data, data.lease_token || leaseToken);
      return;
    } catch { keepLease(id, null); }
  }
  if (desk.name !== name) return;
  deskShow("idle");
  deskClaim();
}

/** Stop taking alerts; a held one goes back to the queue at once. */
async function deskLogout() {
  const held = desk.held;
  const leaseToken = desk.lease;
  const body = asHolder(leaseToken);
  deskStop();
  if (held) {
    keepLease(held.id, null);
    try {
      await api("POST", `/events/${held.id}/release`, body);
      say($("desk-msg"), "");
    } catch (err) { showNotice(`Could not give alert back: ${err.message}`); }
  }
}

/** The desk off, locally: nothing claimed any more (a held alert's lease runs out on the server). */
function deskStop() {
  desk.held = null;
  desk.lease = null;
  desk.name = null;
  sessionStorage.removeItem(DESK_NAME);
  deskShow("off");
}

/** The desk for this token: a desk (or admin) token takes alerts under its own name; without tokens, the
 * person types a name; other scopes see no desk. Back after a reload, it carries on as before. */
function deskAccess() {
  $("desk-denied").hidden = can("desk");
  $("desk-denied-scope").textContent = access.scope || "";
  $("desk-as").hidden = !access.required;
  $("desk-as-name").textContent = access.name || "";
  $("desk-name-label").hidden = access.required;
  $("desk-name").hidden = access.required;
  $("desk-logout").textContent = access.required ? "Stop taking alerts" : "Log out";
  const saved = sessionStorage.getItem(DESK_NAME);
  if (!can("desk")) { if (desk.mode !== "off") deskStop(); return; }
  if (desk.mode !== "off" && access.required && desk.name !== access.name) deskStop();  // another token now
  if (desk.mode !== "off") return;
  if (access.required ? saved === access.name : saved) { $("desk-name").value = saved; deskStart(saved); }
  else deskShow("off");
}

function setupDesk() {
  const lease = sessionStorage.getItem(DESK_LEASE);
  if (lease) $("desk-lease").value = lease;
  $("desk-lease").addEventListener("change", () => sessionStorage.setItem(DESK_LEASE, $("desk-lease").value));
  $("desk-login").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = access.required ? access.name : $("desk-name").value.trim();
    if (!name) { $("desk-name").focus(); return; }
    deskStart(name);
  });
  $("desk-logout").addEventListener("click", async () => {
    await deskLogout();
    (access.required ? $("desk-start") : $("desk-name")).focus();
  });
  $("desk-resume").addEventListener("click", () => { deskShow("idle"); deskClaim(); });
  // While a request about the held alert is on its way, its own change (pushed by the server, maybe
  // before the answer) is ours, not someone else's doing.
  $("desk-resolve").addEventListener("click", async () => {
    const held = desk.held;
    if (!held || desk.pending) return;
    desk.pending = held.id;
    try {
      await api("POST", `/events/${held.id}/complete`, asHolder(desk.lease, { result: { resolved_by: desk.name } }));
      keepLease(held.id, null);
      if (desk.held === held) {
        desk.held = null;
        say($("desk-msg"), `Resolved ${$("desk-alert-id").textContent}.`, "ok");
        deskShow("idle");
        deskClaim();
      }
    } catch (err) {
      say($("desk-msg"), `Not resolved: ${err.message}`, "bad");
    } finally {
      desk.pending = null;
    }
  });
  $("desk-more").addEventListener("click", async () => {
    const held = desk.held;
    if (!held || desk.pending) return;
    desk.pending = held.id;
    try {
      const leaseToken = desk.lease;
      const { data } = await api("POST", `/events/${held.id}/extend`, asHolder(leaseToken, { seconds: leaseSeconds() }));
      if (desk.held === held) { say($("desk-msg"), "More time given.", "ok"); hold(data, data.lease_token || leaseToken); }
    } catch (err) {
      say($("desk-msg"), `No more time: ${err.message}`, "bad");
      if (err.status === 409 && desk.held === held) { keepLease(held.id, null); desk.held = null; deskShow("expired"); }
    } finally {
      desk.pending = null;
    }
  });
  live.onChanges((changes) => {
    if (desk.mode === "idle" && changes.some((c) => c.state === "scheduled")) setTimeout(deskClaim, 50);
    if (desk.mode === "holding" && desk.held) {
      const mine = changes.find((c) => c.id === desk.held.id);
      if (mine && mine.state !== "running" && desk.pending !== mine.id) {  // cancelled, rescued or finished elsewhere
        keepLease(mine.id, null);
        desk.held = null;
        say($("desk-msg"), `That alert was taken out of your hands (now ${mine.state ?? "deleted"}).`, "warn");
        deskShow("idle");
        deskClaim();
      }
    }
  });
  live.onResync(() => { if (desk.mode === "idle") deskClaim(); });
  $("send-alert").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("a-result");
    const message = $("a-message").value.trim();
    if (!message) { say(out, "Write the alert's message first.", "bad"); $("a-message").focus(); return; }
    const body = { message };
    if ($("a-severity").value) body.severity = $("a-severity").value;
    try {
      const { data } = await api("POST", "/alerts", body);
      say(out, `Sent to Kafka (topic ${data.topic}, offset ${data.offset}); it reaches the desk in a moment.`, "ok");
      $("a-message").value = "";
    } catch (err) {
      if (err.status === 503 && err.details && err.details.kafka === "off") {
        say(out, "Kafka is off on this server (KAFKA_BOOTSTRAP_SERVERS is not set), so alerts cannot be sent from here. Nothing was sent.", "warn");
      } else {
        say(out, `Not sent: ${err.message}`, "bad");
      }
    }
  });
  deskShow("off");
}

// ---------------------------------------------------------------------------------------------
// Pages and start.

const VIEWS = ["events", "schedules", "workflows", "callbacks", "desk"];

function route() {
  if (!access.scope) { for (const name of VIEWS) $("view-" + name).hidden = true; return; }
  const [view, query] = (location.hash.replace("#", "") || "events").split("?");
  const allowed = (name) => name !== "desk" || can("desk") || can("write");
  const known = VIEWS.includes(view) && allowed(view) ? view : "events";
  for (const name of VIEWS) $("view-" + name).hidden = name !== known;
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.dataset.view === known) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  document.title = { events: "Events", schedules: "Schedules", workflows: "Workflows", callbacks: "Callbacks",
    desk: "Alert desk" }[known] + " · Punctual";
  const params = new URLSearchParams(query || "");
  if (known === "events" && Number(params.get("id"))) {  // #events?id=N (a workflow step's event): its detail
    openDetail(Number(params.get("id")));
    history.replaceState(null, "", "#events");
  }
  if (known === "workflows") {
    if (params.get("id")) openWorkflow(params.get("id"));
    else showWorkflowList();
  }
  if (known === "callbacks") loadCallbacks().catch((err) => showNotice("Could not load callbacks: " + err.message));
  if (known === "schedules") {
    const id = Number(new URLSearchParams(query || "").get("id"));
    sched.selected = id || null;
    loadSchedules().then(() => markSelected(Boolean(id)))
      .catch((err) => showNotice("Could not load schedules: " + err.message));
  }
}

/** Show the page for the identity in `access`: on load, and again after a new token (maybe another scope). */
async function signedIn(changed = true) {
  $("signed-out").hidden = true;
  giveLiveToken();
  if (!changed && document.body.dataset.ready === "true") return;  // same token holder: nothing to redo
  if ($("detail").open) $("detail").close();
  editCallback(null);
  editSchedule(null);
  route();
  deskAccess();
  connectLive();  // subscribe first, then read: nothing committed in between is missed
  try { await loadCallbacks(); } catch (err) { showNotice("Could not load callbacks: " + err.message); }
  loadSchedules().catch(() => { /* names for the events' links; the Schedules page says if it cannot read */ });
  await whenSubscribed(3000);
  // A new chain of reads: one of the old chain may be waiting for this very sign-in (a 401 asks for a
  // token, then sends the request again), and would never let this list read through.
  table.syncing = Promise.resolve();
  await refreshList();
  latenessLast = 0;  // read it for this token now, not when the last one read it
  loadStats();
  loadHealth();
  document.body.dataset.ready = "true";
}

/** GET /whoami with the token this tab kept (if any), until the server answers. */
async function whoami() {
  for (let wait = 1000; ; wait = Math.min(wait * 2, 10000)) {
    try {
      return await send("GET", "/whoami", undefined, storedToken());
    } catch (err) {
      showNotice(`Could not reach the server (${err.message}); trying again…`);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

async function start() {
  setupDetail();
  setupSchedule();
  setupCallbacks();
  setupSchedules();
  setupWorkflows();
  setupDesk();
  $("filters").addEventListener("change", onFilter);
  $("filters").addEventListener("reset", () => setTimeout(onFilter, 0));
  $("more").addEventListener("click", () => loadOlder().catch((err) => showNotice(err.message)));
  $("sign-out").addEventListener("click", signOut);
  $("sign-in").addEventListener("click", () => signIn().catch(() => {}));
  window.addEventListener("hashchange", route);
  document.addEventListener("keydown", (e) => {  // "/" jumps to the filters
    if (e.target.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "/") { e.preventDefault(); $("f-state").focus(); }
  });
  live.onChanges(onChanges);
  live.onResync(() => { refreshList(); loadStats(); });
  setInterval(() => { if (access.scope) loadStats(); }, 30000);
  setInterval(loadHealth, 30000);
  route();
  // Nothing is read before the server says who this tab is: with tokens, nothing is shown without one.
  const kept = storedToken();
  const { status, ok, data } = await whoami();
  showNotice("");
  if (ok) {
    setAccess(data);
    await signedIn();
  } else if (status === 404) {  // a server from before tokens had scopes: it is open
    setAccess({ name: "anonymous", scope: "admin", tokens_required: false });
    await signedIn();
  } else if (status === 401) {
    if (kept) sessionStorage.removeItem(TOKEN_KEY);
    signedOut();
    signIn(kept ? "The token this tab kept is no longer accepted. Enter one that works." : "")
      .catch(() => { /* cancelled: the signed-out panel offers to try again */ });
  } else {
    showNotice(`The server could not say who you are: ${refusal(status, data).message}`);
  }
}

start();
