// The autoj page: calls the HTTP door of the server that served it (same origin), streams
// a judgment over Server-Sent Events with fetch + ReadableStream (so an API key can go in a
// header, which EventSource cannot send), and shows the critique, verdict and usage.
// The API key is kept in this page's memory only: it is never written to storage.
"use strict";

const $ = (id) => document.getElementById(id);

// Filled from the examples button, one per protocol.
const EXAMPLES = [
  {
    scenario: "code_generation",
    query: "Write a Python function that returns the n-th Fibonacci number.",
    responses: [
      "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
      "def fib(n):\n    return fib(n - 1) + fib(n - 2)",
    ],
  },
  {
    scenario: "",
    query: "What is the capital of Australia?",
    responses: ["Canberra.", "Sydney, the largest city, is the capital."],
  },
  {
    scenario: "",
    query: "Write a haiku about rain.",
    responses: ["Soft rain on the roof / the garden drinks in silence / puddles hold the sky", ""],
  },
];

const WINNERS = {
  WINNER_RESPONSE_1: "Response 1 is better",
  WINNER_RESPONSE_2: "Response 2 is better",
  WINNER_TIE: "Tie",
  WINNER_UNSPECIFIED: "No verdict",
};

let controller = null; // aborts the running judgment (the server then stops generating)
let exampleIndex = 0;
let scenarios = [];

function headers(extra) {
  const h = Object.assign({ "Content-Type": "application/json" }, extra || {});
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

// An error answer's message: the JSON error body, else the HTTP status.
async function errorOf(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error.code}: ${body.error.message}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadScenarios() {
  const response = await fetch("/v1/scenarios", { headers: headers() });
  if (!response.ok) {
    setStatus("scenarios: " + (await errorOf(response)), true);
    return;
  }
  scenarios = (await response.json()).scenarios || [];
  const select = $("scenario");
  select.length = 1;
  for (const s of scenarios) {
    const option = document.createElement("option");
    option.value = s.name;
    option.textContent = s.group ? `${s.name} (${s.group})` : s.name;
    select.appendChild(option);
  }
  setStatus("");
}

async function showScenario() {
  const info = $("scenario-info");
  const name = $("scenario").value;
  const scenario = scenarios.find((s) => s.name === name);
  if (!scenario) {
    info.hidden = true;
    return;
  }
  info.hidden = false;
  info.textContent = scenario.description;
  const response = await fetch(`/v1/scenarios/${encodeURIComponent(name)}/criteria`, {
    headers: headers(),
  });
  if (response.ok) {
    const criteria = (await response.json()).criteria || [];
    info.textContent = `${scenario.description} Criteria: ${criteria.map((c) => c.name).join(", ")}.`;
  }
}

function fillExample() {
  const example = EXAMPLES[exampleIndex++ % EXAMPLES.length];
  $("query").value = example.query;
  $("response-1").value = example.responses[0];
  $("response-2").value = example.responses[1];
  if (!example.scenario || scenarios.some((s) => s.name === example.scenario)) {
    $("scenario").value = example.scenario;
  }
  showScenario();
}

function request() {
  const second = $("response-2").value;
  const max = parseInt($("max-new-tokens").value, 10);
  const options = {
    language: $("language").value,
    scenario: $("scenario").value,
    generation: Number.isFinite(max) ? { max_new_tokens: max } : {},
  };
  const query = $("query").value;
  const first = $("response-1").value;
  if (second.trim() === "") {
    return { path: "/v1/judge/critique", body: { query, response: first, options } };
  }
  options.swap_check = $("swap-check").checked;
  return {
    path: "/v1/judge/compare",
    body: { query, response_1: first, response_2: second, options },
  };
}

// The panel of one order (0: as sent, 1: swapped), created on first use.
function panel(order) {
  let element = document.querySelector(`.order[data-order="${order}"]`);
  if (!element) {
    element = $("order-template").content.firstElementChild.cloneNode(true);
    element.dataset.order = order;
    element.querySelector(".order-title").textContent =
      order === 0 ? "Judgment" : "Swapped order (mapped back)";
    $("orders").appendChild(element);
  }
  return element;
}

function bar(label, p) {
  const row = document.createElement("div");
  row.className = "bar";
  const name = document.createElement("span");
  name.textContent = label;
  const track = document.createElement("div");
  track.className = "track";
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
  track.appendChild(fill);
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = `${(p * 100).toFixed(1)}%`;
  row.append(name, track, value);
  return row;
}

function showVerdict(v) {
  const card = panel(v.order || 0).querySelector(".verdict");
  card.hidden = false;
  const bars = card.querySelector(".bars");
  bars.replaceChildren();
  if (v.pairwise) {
    const p = v.pairwise;
    card.querySelector(".verdict-line").textContent = WINNERS[p.winner] || p.winner;
    if (p.p_response_1 != null) bars.appendChild(bar("Response 1", p.p_response_1));
    if (p.p_response_2 != null) bars.appendChild(bar("Response 2", p.p_response_2));
    if (p.p_tie != null) bars.appendChild(bar("Tie", p.p_tie));
  } else if (v.single) {
    const s = v.single;
    const expected = s.expected_rating != null ? ` (expected ${s.expected_rating.toFixed(2)})` : "";
    card.querySelector(".verdict-line").textContent =
      s.rating != null ? `Rating ${s.rating}/10${expected}` : "No rating";
    (s.distribution || []).forEach((p, i) => bars.appendChild(bar(`${i + 1}`, p)));
  }
  card.querySelector(".verdict-source").textContent =
    `${(v.source || "").replace("VERDICT_SOURCE_", "").toLowerCase()}: ${v.raw_text || ""}`;
}

function showUsage(u) {
  const table = panel(u.order || 0).querySelector(".usage");
  table.hidden = false;
  const rows = [
    ["prompt tokens", `${u.prompt_tokens} (${u.cached_prompt_tokens} from the prefix cache)`],
    ["generated tokens", u.completion_tokens],
    ["queue / prefill / decode", `${u.queue_ms.toFixed(0)} / ${u.prefill_ms.toFixed(0)} / ${u.decode_ms.toFixed(0)} ms`],
    ["finish", (u.finish_reason || "").replace("FINISH_REASON_", "").toLowerCase()],
  ];
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const [name, value] of rows) {
    const tr = document.createElement("tr");
    const a = document.createElement("td");
    a.textContent = name;
    const b = document.createElement("td");
    b.textContent = value;
    tr.append(a, b);
    body.appendChild(tr);
  }
}

function showEvent(name, data) {
  switch (name) {
    case "accepted": {
      const scenario = data.scenario ? `scenario ${data.scenario}` : "no scenario";
      const cut = data.truncated ? `, ${data.truncated_tokens} input tokens cut` : "";
      panel(data.order || 0).querySelector(".accepted").textContent =
        `${data.model} on ${data.replica}, ${scenario}, ${data.prompt_tokens} prompt tokens${cut}`;
      setStatus("generating…");
      break;
    }
    case "critique_delta":
      panel(data.order || 0).querySelector(".critique").textContent += data.text;
      break;
    case "verdict":
      showVerdict(data);
      break;
    case "usage":
      showUsage(data);
      break;
    case "consistency": {
      const card = $("consistency");
      card.hidden = false;
      card.textContent = `${data.consistent ? "Both orders agree" : "The orders disagree"}: ` +
        `combined verdict ${WINNERS[data.combined] || data.combined}.`;
      break;
    }
    case "error":
      setStatus(`${data.error.code}: ${data.error.message}`, true);
      break;
  }
}

// Reads a text/event-stream body, calling showEvent for each complete event.
async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) showEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

async function judge(event) {
  event.preventDefault();
  const { path, body } = request();
  $("orders").replaceChildren();
  $("consistency").hidden = true;
  $("result").hidden = false;
  setStatus("waiting for the judge…");
  controller = new AbortController();
  $("judge").disabled = true;
  $("stop").disabled = false;
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: headers({ Accept: "text/event-stream" }),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      setStatus(await errorOf(response), true);
      return;
    }
    await readEvents(response.body);
    if (!$("status").classList.contains("error")) setStatus("done");
  } catch (e) {
    setStatus(e.name === "AbortError" ? "stopped" : `failed: ${e.message}`, e.name !== "AbortError");
  } finally {
    controller = null;
    $("judge").disabled = false;
    $("stop").disabled = true;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("judge-form").addEventListener("submit", judge);
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("example").addEventListener("click", fillExample);
  $("scenario").addEventListener("change", showScenario);
  // A key typed after a refused listing: list again once it is entered.
  $("api-key").addEventListener("change", loadScenarios);
  loadScenarios();
});
