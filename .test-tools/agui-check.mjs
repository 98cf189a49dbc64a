// Runs the official AG-UI client (@ag-ui/client's HttpAgent) and reports, as
// one JSON object on stdout, what it saw and whether it raised anything.
//
// Input (one JSON object on stdin):
//   {"mode":"http", "url", "token", "threadId", "runId", "messages", "tools", "state", "forwardedProps"}
//     runs the agent at `url` once;
//   {"mode":"replay", "streams": [[<AG-UI event>, ...], ...]}
//     feeds each stream to an HttpAgent as if a server had sent it.
// A run fails on any error the client throws (its event verification and
// schema checks) and on anything it logs through console.warn/console.error
// (unrecognised fields, stripped material, failed runs).
import { HttpAgent } from "@ag-ui/client";

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

// Runs `fn` with console.warn/error captured; returns what they received.
async function capturingConsole(fn) {
  const logged = [];
  const { warn, error } = console;
  console.warn = (...args) => logged.push(args.map(String).join(" "));
  console.error = (...args) => logged.push(args.map(String).join(" "));
  try {
    await fn();
  } finally {
    console.warn = warn;
    console.error = error;
  }
  return logged;
}

async function runOnce(agent, params) {
  const events = [];
  let outcome = {};
  const logged = await capturingConsole(async () => {
    try {
      const { result, newMessages } = await agent.runAgent(params, {
        onEvent: ({ event }) => {
          events.push(event);
        },
      });
      outcome = { result, newMessages };
    } catch (e) {
      outcome = { error: `${e?.name ?? "Error"}: ${e?.message ?? String(e)}` };
    }
  });
  const error = outcome.error ?? (logged.length > 0 ? `the client logged: ${logged.join(" | ")}` : undefined);
  return { ok: error === undefined, error, logged, events, newMessages: outcome.newMessages ?? [], messages: agent.messages };
}

function sseResponse(events) {
  const body = events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join("");
  return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
}

const input = await readStdin();
let output;
if (input.mode === "http") {
  const agent = new HttpAgent({
    url: input.url,
    headers: input.token ? { Authorization: `Bearer ${input.token}` } : {},
    threadId: input.threadId,
    initialMessages: input.messages ?? [],
    initialState: input.state ?? {},
  });
  output = await runOnce(agent, { runId: input.runId, tools: input.tools ?? [], forwardedProps: input.forwardedProps ?? {} });
} else if (input.mode === "replay") {
  const results = [];
  for (const events of input.streams) {
    const agent = new HttpAgent({ url: "http://replay.invalid/agui", fetch: async () => sseResponse(events), threadId: "replay" });
    const r = await runOnce(agent, { runId: "replay-run" });
    results.push({ ok: r.ok, error: r.error, events: r.events.length });
  }
  output = { ok: results.every((r) => r.ok), results };
} else {
  output = { ok: false, error: `unknown mode ${input.mode}` };
}
process.stdout.write(JSON.stringify(output));
