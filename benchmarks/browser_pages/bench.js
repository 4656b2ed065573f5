// Runs in a page controlled by Valor's service worker, MSW's or a floor's; posts figures to the
// benchmark's results server (another origin: the site's host is stopped for offline visits).
const params = new URLSearchParams(location.search);
const target = location.pathname.split("/")[1];
const phase = params.get("phase");
const config = JSON.parse(params.get("config"));
const VALOR_SITES = new Set(["valor", "fallback", "nosnap"]);
let detail = null; // Valor's start-up details
let step = "start"; // what this page waits for: reported if it never comes
const STUCK_MS = 90000;

async function startTarget() {
  if (VALOR_SITES.has(target)) {
    const { Valor } = await import("./valor.js");
    detail = await Valor.start();
  } else if (target === "msw") {
    await new Promise((resolve, reject) => {
      const script = Object.assign(document.createElement("script"), { src: "msw.js", onload: resolve, onerror: reject });
      document.head.append(script);
    });
    const { setupWorker, http, HttpResponse } = self.MockServiceWorker;
    const worker = setupWorker(
      http.get("/msw/hello", () => new HttpResponse("Hello Plugin!", { headers: { "content-type": "text/plain; charset=utf-8" } })),
      http.post("/msw/echo/*", async ({ request }) => new HttpResponse(await request.arrayBuffer(), {
        headers: { "content-type": request.headers.get("content-type") ?? "text/plain;charset=UTF-8" },
      })),
    );
    await worker.start({
      serviceWorker: { url: "/msw/mockServiceWorker.js", options: { scope: "/msw/" } },
      quiet: true,
      onUnhandledRequest: "bypass",
    });
  } else {
    const sw = navigator.serviceWorker;
    step = "register";
    await sw.register(`${target}-sw.js`, { scope: `/${target}/` });
    step = "control";
    if (!sw.controller) await new Promise((r) => sw.addEventListener("controllerchange", r, { once: true }));
    if (target === "port") {
      step = "connect";
      const worker = new Worker("port-worker.js", { type: "module" });
      const channel = new MessageChannel();
      worker.postMessage(null, [channel.port1]);
      const connected = new Promise((r) => sw.addEventListener("message", r, { once: true }));
      sw.controller.postMessage(null, [channel.port2]);
      await connected;
    }
  }
}

async function hello() {
  const r = await fetch("hello");
  const text = await r.text();
  if (text !== "Hello Plugin!") throw new Error("wrong answer: " + text);
  return r.headers.get("x-valor-host");
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function suite() {
  step = "sequential requests";
  for (let i = 0; i < 50; i++) await hello();
  const times = [];
  for (let i = 0; i < config.requests; i++) {
    const t = performance.now();
    await hello();
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  step = "concurrent requests";
  let t = performance.now();
  const all = await Promise.all(Array.from({ length: config.concurrent }, async (_, i) => {
    const r = await fetch("echo/" + i, { method: "POST", body: "n" + i });
    return (await r.text()) === "n" + i;
  }));
  const concurrentMs = performance.now() - t;
  if (!all.every(Boolean)) throw new Error("a concurrent request got a wrong answer");
  const data = new Uint8Array(5 * 1024 * 1024);
  for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
  step = "5 MB echoes";
  const echoes = [];
  for (let i = 0; i < 7; i++) {
    t = performance.now();
    const r = await fetch("echo/big", { method: "POST", body: data, headers: { "content-type": "application/octet-stream" } });
    const back = new Uint8Array(await r.arrayBuffer());
    echoes.push(performance.now() - t);
    if (back.length !== data.length || back[12345] !== data[12345]) throw new Error("5 MB echo differs");
  }
  echoes.sort((a, b) => a - b);
  return {
    p50: percentile(times, 50), p90: percentile(times, 90), p99: percentile(times, 99),
    rps: config.concurrent / (concurrentMs / 1000), echo5mb: echoes[3],
    ...(target === "valor" ? await valorOnly() : {}),
  };
}

async function valorOnly() {
  // A 50 MB stream read as it arrives.
  step = "50 MB streams";
  const speeds = [];
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    const reader = (await fetch("download?mb=50")).body.getReader();
    let size = 0;
    for (let part = await reader.read(); !part.done; part = await reader.read()) size += part.value.length;
    if (size !== 50 * 1024 * 1024) throw new Error(`the 50 MB stream gave ${size} bytes`);
    speeds.push(50 / ((performance.now() - t) / 1000));
  }
  speeds.sort((a, b) => a - b);
  return { streamMBps: speeds[1] };
}

async function main() {
  const result = { target, phase, isolated: self.crossOriginIsolated };
  const stuck = setTimeout(() => report({ ...result, error: `stuck at step ${step}` }), STUCK_MS);
  try {
    await startTarget();
    result.startMs = performance.now(); // since navigation start
    step = "first answer";
    result.host = await hello();
    result.firstResponseMs = performance.now();
    if (detail) {
      // With a fallback, the runtime keeps booting after the first answer: wait for its figures.
      const { Valor } = await import("./valor.js");
      // Its plug-ins finish loading after the runtime is ready: the steps are complete then.
      step = "plug-ins loaded";
      await Valor.loaded();
      result.bootMs = Valor.detail.bootMs;
      result.steps = Valor.detail.steps;
      result.snapshot = Valor.detail.snapshot;
    }
    if (phase === "suite") Object.assign(result, await suite());
  } catch (error) {
    result.error = String(error?.stack ?? error);
  }
  clearTimeout(stuck);
  await report(result);
}

let reported = false;
async function report(result) {
  if (reported) return; // a page that got unstuck after its report moves on no further
  reported = true;
  const r = await fetch(params.get("results"), { method: "POST", body: JSON.stringify(result) });
  const { next } = await r.json();
  if (next) location.href = next;
}
main();
