// One card per agent run: the agent and model, its status, thinking
// (collapsible), a card per tool call, the answer streaming as Markdown, a
// Stop button, usage and cost at the end. While it streams the card is
// `aria-busy`, so screen readers announce the answer once, when it ends.

import { html, pretty, useState } from '../lib.js';
import { renderMarkdown } from '../markdown.js';

const STATUS = {
  queued: 'Queued',
  running: 'Running',
  completed: 'Done',
  failed: 'Failed',
  cancelled: 'Stopped',
};

function ToolCard({ call }) {
  const label = { running: 'running…', done: 'done', client: 'sent to the client', failed: 'failed' }[call.status] ?? call.status;
  return html`<div class="tool" data-tool-status=${call.status} data-call-id=${call.callId}>
    <div class="tool-head">
      <span class="tool-name">${call.tool}</span>
      <span class=${`badge ${call.status}`}>${label}</span>
      ${call.durationMs !== null ? html`<span class="muted">${call.durationMs} ms</span>` : null}
    </div>
    <details>
      <summary>Arguments and result</summary>
      <p class="label">Arguments</p>
      <pre>${pretty(call.arguments) || '(none)'}</pre>
      ${call.status === 'done' || call.status === 'failed' ? html`<p class="label">Result</p><pre>${pretty(call.result) || '(empty)'}</pre>` : null}
    </details>
  </div>`;
}

/** The timeline of a run: thinking, tool calls and text in the order they came. */
export function RunTimeline({ run, streaming, showText = true }) {
  const items = run.items;
  const lastText = items.map((i) => i.kind).lastIndexOf('text');
  return items.map((item, i) => {
    if (item.kind === 'thinking') {
      return html`<details class="thinking" key=${`t${i}`}>
        <summary>${streaming && i === items.length - 1 ? 'Thinking…' : 'Thinking'}</summary>
        <div class="thought">${item.text}</div>
      </details>`;
    }
    if (item.kind === 'tool') return html`<${ToolCard} key=${`c${item.call.callId}`} call=${item.call} />`;
    if (!showText) return null;
    return html`<div class="md" key=${`x${i}`} dangerouslySetInnerHTML=${{ __html: renderMarkdown(item.text, { streaming: streaming && i === lastText }) }} />`;
  });
}

function usageText(run) {
  const u = run.usage;
  if (!u) return null;
  const parts = [];
  if (typeof u.input_tokens === 'number') parts.push(`${u.input_tokens} tokens in`);
  if (typeof u.output_tokens === 'number') parts.push(`${u.output_tokens} out${u.estimated ? ' (estimated)' : ''}`);
  if (typeof run.costUsd === 'number') parts.push(`$${run.costUsd.toFixed(run.costUsd > 0 && run.costUsd < 0.01 ? 5 : 2)}`);
  return parts.join(' · ');
}

/** What an `agent_error` code means to a reader (PROTOCOL.md "agent_error codes"). */
const ERROR_TEXT = {
  superseded: 'Interrupted by a newer message.',
  busy: 'The agent was busy here and took no new work.',
  queue_full: 'Too many runs waiting; try again shortly.',
  timeout: 'The model stopped answering.',
  shutdown: 'The server shut down before the run finished.',
  interrupted: 'The server stopped while the run was going.',
  tool_loop: 'Stopped: the model repeated the same tool call.',
  tool_rounds: 'Stopped: too many rounds of tool calls.',
  budget_exceeded: 'The daily budget for agent runs is spent.',
  maintenance: 'The server is in maintenance mode.',
  rate_limited: 'The model provider is rate-limiting; try again shortly.',
  context_length: 'The conversation no longer fits the model.',
  auth: 'The model provider refused the server’s credentials.',
  provider_error: 'The model provider failed.',
  agent_unavailable: 'The agent was deleted.',
  model_unavailable: 'The agent’s model is not configured on this server.',
};

function errorText(error) {
  const known = ERROR_TEXT[error.code];
  if (known && error.message && error.message !== error.code) return `${known} (${error.message})`;
  return known ?? error.message;
}

/**
 * A run's card; once its answer is stored, the same card shows the stored
 * message (same element, so nothing is announced twice).
 */
export function RunCard({ app, run, message = null }) {
  const [stopping, setStopping] = useState(false);
  const [stopError, setStopError] = useState(/** @type {string | null} */ (null));
  const ended = run.status === 'completed' || run.status === 'failed' || run.status === 'cancelled';
  const name = app.nameOf({ kind: 'agent', id: run.agentId });

  async function stop() {
    setStopping(true);
    setStopError(null);
    try {
      await app.chorus.cancelRun(run.id);
    } catch (err) {
      setStopError(err?.message ?? String(err));
      setStopping(false);
    }
  }

  const status = run.status === 'queued' && run.position ? `Queued (#${run.position})` : STATUS[run.status] ?? run.status;
  return html`<article class=${`run msg agent ${run.status}`} data-run-id=${run.id} data-run-status=${run.status} data-message-id=${message?.id}
      data-seq=${message?.seq} aria-busy=${ended ? 'false' : 'true'} aria-label=${`${name}'s answer`}>
    <header class="msg-head">
      <span class="author agent">${name}</span>
      ${run.model ? html`<span class="muted model">${run.model}</span>` : null}
      <span class=${`badge ${run.status}`} data-status>${status}</span>
      ${!ended ? html`<button type="button" class="stop" onClick=${stop} disabled=${stopping}>${stopping ? 'Stopping…' : 'Stop'}</button>` : null}
    </header>
    ${message?.deleted_at
      ? html`<p class="muted deleted">This message was deleted.</p>`
      : message && message.text !== run.text
        ? html`<${RunTimeline} run=${run} streaming=${false} showText=${false} /><div class="md" dangerouslySetInnerHTML=${{ __html: renderMarkdown(message.text) }} />`
        : html`<${RunTimeline} run=${run} streaming=${!ended} />`}
    ${run.error && run.error.code !== 'cancelled' ? html`<p class="error" data-error-code=${run.error.code}>${errorText(run.error)}</p>` : null}
    ${stopError ? html`<p class="error" role="alert">Could not stop: ${stopError}</p>` : null}
    ${ended && usageText(run) ? html`<p class="usage muted">${usageText(run)}</p>` : null}
  </article>`;
}
