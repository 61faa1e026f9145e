// The API reference page (/docs): Swagger UI reading /openapi.json. Swagger UI's files come inside the
// flask-openapi3-swagger package and are served by Punctual itself, so the page loads nothing from elsewhere;
// this file is its whole start-up, kept out of the HTML because the page's policy forbids inline script.
//
// Access: /openapi.json needs a token with the read scope once any token exists (DESIGN.md "Access"). The
// token is the web client's own (sessionStorage "punctual.token": this tab only, gone when it closes) or is
// asked for here, checked with GET /whoami, and sent as "Authorization: Bearer" on every request Swagger UI
// makes to this server: the document itself and each "Try it out". Without tokens configured nothing is asked.
"use strict";

const TOKEN_KEY = "punctual.token";
const $ = (id) => document.getElementById(id);

function storedToken() { return sessionStorage.getItem(TOKEN_KEY); }

/** GET /whoami with `token` (or none): {status, who}; status 0 when the server cannot be reached. */
async function whoami(token) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  try {
    const response = await fetch("/whoami", { headers, cache: "no-store" });
    return { status: response.status, who: response.ok ? await response.json() : null };
  } catch {
    return { status: 0, who: null };
  }
}

/** Only this server gets the token, never a URL someone typed into an operation or a server field. */
function sameOrigin(url) {
  try { return new URL(url, location.href).origin === location.origin; } catch { return false; }
}

function withToken(request) {
  const token = storedToken();
  if (token && sameOrigin(request.url) && !request.headers.Authorization) {
    request.headers.Authorization = "Bearer " + token;  // a token typed in Swagger's own Authorize dialog wins
  }
  return request;
}

function showReference(who) {
  $("token-form").hidden = true;
  if (who && who.tokens_required) {
    $("who-name").textContent = who.name;
    $("who-scope").textContent = who.scope;
    $("who").hidden = false;
  }
  document.body.dataset.state = "reference";
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    validatorUrl: null,  // Swagger's default sends the document to validator.swagger.io: nothing leaves this server
    requestInterceptor: withToken,
    onComplete: () => { document.body.dataset.ready = "true"; },
  });
}

function askToken(message) {
  $("who").hidden = true;
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  $("token-error").hidden = !message;
  document.body.dataset.state = "token";
  document.body.dataset.ready = "true";
  $("token").focus();
}

function unreachable(status) {
  return status === 0 ? "The server cannot be reached; reload the page to try again."
    : `The server answered ${status} to GET /whoami; reload the page to try again.`;
}

async function start() {
  const token = storedToken();
  const { status, who } = await whoami(token);
  if (status === 200) return showReference(who);
  if (status === 401) {
    if (token) sessionStorage.removeItem(TOKEN_KEY);
    return askToken(token ? "The token this tab held was refused (unknown or revoked). Enter another one." : "");
  }
  return askToken(unreachable(status));
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  const { status, who } = await whoami(token);
  if (status !== 200) {
    $("token").value = "";
    return askToken(status === 401 ? "That token was refused (unknown or revoked). Check it and try again."
      : unreachable(status));
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  showReference(who);
});

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);  // the tab's token: the web page in this tab asks again too
  location.reload();
});

start();
