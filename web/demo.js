// The demo page: start this tab's runtime, list its plug-ins, send requests through fetch().
import { Valor } from "./valor.js";

const $ = (id) => document.getElementById(id);
const base = new URL(".", import.meta.url).pathname;

Valor.addEventListener("status", ({ detail }) => {
  $("status").dataset.status = detail.status;
  $("status-text").textContent =
    detail.status === "booting" ? "Booting the Python runtime…"
    : detail.status === "ready" ? `Ready in ${(detail.bootMs / 1000).toFixed(1)} s`
    : detail.status === "error" ? `Error: ${detail.error}` : detail.status;
  if (detail.status === "ready") showBoot(detail);
});
Valor.addEventListener("prefixes", () => refreshPlugins());

function showBoot(detail) {
  const rows = [["Runtime boot", `${detail.bootMs} ms`], ...Object.entries(detail.steps ?? {}).map(([k, v]) => [`  ${k}`, `${v} ms`])];
  $("boot").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  showPlugins(detail.plugins ?? []);
  const failures = detail.failures ?? [];
  $("failures").hidden = failures.length === 0;
  $("failures").textContent = failures.join("\n");
  $("send").disabled = false;
}

function showPlugins(plugins) {
  $("plugins").replaceChildren(
    ...plugins.map((plugin) => {
      const button = el("button", "", { type: "button", className: "plugin" });
      button.append(el("code", plugin.prefix), el("span", ` ${plugin.name}`), el("small", plugin.type));
      button.addEventListener("click", () => {
        $("path").value = plugin.prefix.replace(/^\//, "");
        $("path").focus();
      });
      return el("li", button);
    }),
  );
}

async function refreshPlugins() {
  const response = await fetch(`${base}_plugins`);
  if (response.ok) showPlugins((await response.json()).plugins);
}

$("request").addEventListener("submit", async (event) => {
  event.preventDefault();
  const method = $("method").value;
  const headers = new Headers();
  for (const line of $("headers").value.split("\n")) {
    const at = line.indexOf(":");
    if (at > 0) headers.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
  }
  const body = ["GET", "HEAD"].includes(method) ? undefined : $("body").value;
  const url = new URL($("path").value.replace(/^\//, ""), target());
  $("send").disabled = true;
  const started = performance.now();
  try {
    const response = await fetch(url, { method, headers, body });
    const text = await response.text();
    showResponse(response, text, performance.now() - started);
  } catch (error) {
    showResponse(null, String(error), performance.now() - started);
  } finally {
    $("send").disabled = false;
  }
});

function showResponse(response, text, ms) {
  $("response").hidden = false;
  $("response-status").textContent = response ? `${response.status} ${response.statusText}` : "Network error";
  $("response-status").dataset.ok = String(Boolean(response?.ok));
  $("response-time").textContent = `${ms.toFixed(1)} ms`;
  // x-valor-host: "browser" (this tab's runtime) or "server" (the --fallback while booting).
  const host = response?.headers.get("x-valor-host");
  $("response-host").textContent = host ? `answered by the ${host}` : "";
  $("response-host").dataset.host = host ?? "";
  $("response-headers").replaceChildren(
    ...[...(response?.headers ?? [])].map(([k, v]) => {
      const row = el("tr", "");
      row.append(el("th", k), el("td", v));
      return row;
    }),
  );
  let shown = text;
  if (response?.headers.get("content-type")?.includes("json")) {
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch { /* shown as sent */ }
  }
  $("response-body").textContent = shown;
}

function el(tag, content, props = {}) {
  const node = Object.assign(document.createElement(tag), props);
  if (typeof content === "string") node.textContent = content;
  else if (content) node.append(content);
  return node;
}

// `?server=URL` (set by `valor dev`) adds a choice of host: this tab's runtime, or a server host
// at URL (same origin, or one that allows this origin).
const server = new URLSearchParams(location.search).get("server");
if (server) {
  const choice = el("select", "", { id: "host", name: "host" });
  choice.append(el("option", "this browser", { value: "browser" }), el("option", "server", { value: "server" }));
  const label = el("label", "Host ", { className: "host" });
  label.append(choice);
  $("send").before(label);
}

function target() {
  return $("host")?.value === "server" ? new URL(server, location.href) : location.origin + base;
}

Valor.start().then((detail) => {
  // With a fallback server, requests can be sent before this tab's runtime is ready.
  if (detail.fallback && Valor.status === "booting") {
    $("status-text").textContent = "Booting the Python runtime; the server answers meanwhile…";
    $("send").disabled = false;
  }
}).catch(() => { /* shown by the status event */ });
