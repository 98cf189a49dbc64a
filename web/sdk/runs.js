// Agent runs as view models, built from the run events of a channel
// (`agent_queued`, `agent_started`, `agent_thinking`, `agent_text_delta`,
// `tool_executing`, `tool_completed`, then exactly one of `agent_completed`
// or `agent_error`), as PROTOCOL.md "Agent runs" specifies them. Each event
// carries the run header `run_id`, `thread_id`, `agent_id` and a per-run
// `seq` (1, 2, 3, … with no gap); an event whose `seq` was already applied is
// skipped (a terminal event may arrive twice after a crash), and nothing
// after the terminal event changes the run. Agent names are not in the
// events: the app looks them up by `agentId`.

import { Emitter } from './emitter.js';

/** @typedef {import('./types.js').ChannelEvent} ChannelEvent */

/**
 * @typedef {'queued' | 'running' | 'completed' | 'failed' | 'cancelled'} RunStatus
 */

/**
 * @typedef {object} ToolCall
 * @property {string} callId
 * @property {string} tool
 * @property {unknown} arguments
 * @property {'running' | 'done' | 'failed' | 'client'} status `client`: a
 *   frontend tool the run ended on, handed to the client to execute.
 * @property {unknown} [result]
 * @property {number | null} durationMs
 */

/**
 * One step of a run's timeline, in the order it happened.
 * @typedef {{kind: 'thinking', text: string} | {kind: 'text', text: string} | {kind: 'tool', call: ToolCall}} RunItem
 */

/**
 * An `agent_error` code (PROTOCOL.md "agent_error codes"); `cancelled` and
 * `superseded` end a run as `cancelled`, every other code as `failed`.
 * @typedef {'cancelled' | 'superseded' | 'busy' | 'queue_full' | 'timeout' | 'shutdown' | 'interrupted' | 'internal' | 'tool_loop' | 'tool_rounds' | 'budget_exceeded' | 'maintenance' | 'rate_limited' | 'context_length' | 'auth' | 'provider_error' | 'agent_unavailable' | 'model_unavailable' | string} RunErrorCode
 */

/** Codes whose run ends `cancelled` rather than `failed`. */
export const CANCELLED_CODES = new Set(['cancelled', 'superseded']);

/**
 * @typedef {object} Run
 * @property {string} id
 * @property {string} agentId
 * @property {string} threadId
 * @property {RunStatus} status
 * @property {string | null} model the configured model; at the end, the one that answered
 * @property {string | null} provider `openai`, `gemini`, `anthropic`, `ollama`, `demo`
 * @property {string | null} triggerMessageId
 * @property {string | null} triggeredBy the accountable person
 * @property {string | null} parentRunId
 * @property {number} hop
 * @property {number | null} position place in the queue while `queued`
 * @property {string} thinking all reasoning text so far
 * @property {string} text the answer so far
 * @property {RunItem[]} items
 * @property {Map<string, ToolCall>} tools
 * @property {{input_tokens: number, output_tokens: number, estimated: boolean} | null} usage
 * @property {number | null} costUsd US dollars
 * @property {string | null} finishReason
 * @property {{code: RunErrorCode, message: string, retryable: boolean} | null} error
 * @property {string | null} messageId the stored answer's id, once known
 * @property {boolean} stored whether the stored answer (`message_created`) arrived
 * @property {number} lastSeq
 * @property {number} textSeq the `seq` up to which `text` holds every delta (0: none known); a REST view sets it to its `seq`, and deltas at or below it are already in `text`
 * @property {string | null} startedAt
 * @property {string | null} endedAt
 */

export const RUN_EVENTS = new Set([
  'agent_queued',
  'agent_started',
  'agent_thinking',
  'agent_text_delta',
  'tool_executing',
  'tool_completed',
  'agent_completed',
  'agent_error',
]);

/** @param {Run} run */
export function isEnded(run) {
  return run.status === 'completed' || run.status === 'failed' || run.status === 'cancelled';
}

/**
 * A run as first seen.
 * @param {Record<string, any>} data an event's `data` or a REST run view
 * @returns {Run}
 */
export function newRun(data) {
  return {
    id: String(data.run_id ?? data.id),
    agentId: String(data.agent_id ?? ''),
    threadId: String(data.thread_id ?? data.channel ?? ''),
    status: 'queued',
    model: null,
    provider: null,
    triggerMessageId: null,
    triggeredBy: null,
    parentRunId: null,
    hop: 0,
    position: null,
    thinking: '',
    text: '',
    items: [],
    tools: new Map(),
    usage: null,
    costUsd: null,
    finishReason: null,
    error: null,
    messageId: null,
    stored: false,
    lastSeq: 0,
    textSeq: 0,
    startedAt: null,
    endedAt: null,
  };
}

/**
 * Applies one run event to `run` (in place). Returns false when the event
 * changed nothing (a repeat, or anything after the ending).
 * @param {Run} run
 * @param {ChannelEvent} event
 * @returns {boolean}
 */
export function applyRunEvent(run, event) {
  const d = event.data ?? {};
  if (typeof d.seq === 'number') {
    if (d.seq <= run.lastSeq) return false;
  }
  if (isEnded(run)) return false;
  if (typeof d.seq === 'number') run.lastSeq = d.seq;
  if (typeof d.model === 'string') run.model = d.model;
  if (typeof d.message_id === 'string') run.messageId = d.message_id;
  if (typeof d.trigger_message_id === 'string') run.triggerMessageId = d.trigger_message_id;
  switch (event.type) {
    case 'agent_queued':
      if (typeof d.position === 'number') run.position = d.position;
      break;
    case 'agent_started':
      run.status = 'running';
      run.position = null;
      run.startedAt = event.timestamp ?? null;
      if (typeof d.provider === 'string') run.provider = d.provider;
      if (typeof d.triggered_by === 'string') run.triggeredBy = d.triggered_by;
      if (typeof d.parent_run_id === 'string') run.parentRunId = d.parent_run_id;
      if (typeof d.hop === 'number') run.hop = d.hop;
      break;
    case 'agent_thinking':
      run.status = 'running';
      if (typeof d.thought === 'string' && d.thought) {
        run.thinking += d.thought;
        appendText(run, 'thinking', d.thought);
      }
      break;
    case 'agent_text_delta':
      run.status = 'running';
      // Already in the text a REST view gave (it arrived on the stream after the view was read).
      if (typeof d.seq === 'number' && d.seq <= run.textSeq) break;
      if (typeof d.seq === 'number') run.textSeq = d.seq;
      if (typeof d.delta === 'string' && d.delta) {
        run.text += d.delta;
        appendText(run, 'text', d.delta);
      }
      break;
    case 'tool_executing': {
      run.status = 'running';
      const callId = String(d.call_id ?? '');
      if (run.tools.has(callId)) break;
      /** @type {ToolCall} */
      const call = { callId, tool: String(d.tool ?? ''), arguments: d.arguments ?? null, status: 'running', durationMs: null };
      run.tools.set(callId, call);
      run.items.push({ kind: 'tool', call });
      break;
    }
    case 'tool_completed': {
      const callId = String(d.call_id ?? '');
      let call = run.tools.get(callId);
      if (!call) {
        // The start was lost (e.g. rebuilt from REST mid-call): show the ending.
        call = { callId, tool: String(d.tool ?? ''), arguments: null, status: 'running', durationMs: null };
        run.tools.set(callId, call);
        run.items.push({ kind: 'tool', call });
      }
      call.status = d.is_error === true ? 'failed' : 'done';
      call.result = d.result;
      call.durationMs = typeof d.duration_ms === 'number' ? d.duration_ms : null;
      break;
    }
    case 'agent_completed':
      run.status = 'completed';
      run.finishReason = typeof d.finish_reason === 'string' ? d.finish_reason : null;
      endWith(run, d, event);
      break;
    case 'agent_error': {
      const code = String(d.code ?? 'internal');
      run.status = CANCELLED_CODES.has(code) ? 'cancelled' : 'failed';
      run.error = { code, message: String(d.message ?? code), retryable: d.retryable === true };
      endWith(run, d, event);
      break;
    }
    default:
      return false;
  }
  return true;
}

/**
 * Adds a piece of thinking or text to the current step (everything since
 * the last tool call): one thinking and one text item per step, thinking
 * first. The runtime coalesces the two streams separately, so their pieces
 * interleave; kept apart they would split the answer into fragments.
 * @param {Run} run
 * @param {'thinking' | 'text'} kind
 * @param {string} text
 */
function appendText(run, kind, text) {
  const lastTool = run.items.map((i) => i.kind).lastIndexOf('tool');
  for (let i = run.items.length - 1; i > lastTool; i--) {
    const item = run.items[i];
    if (item.kind === kind) {
      item.text += text;
      return;
    }
  }
  const answer = run.items.findIndex((item, i) => i > lastTool && item.kind === 'text');
  if (kind === 'thinking' && answer !== -1) run.items.splice(answer, 0, { kind, text });
  else run.items.push({ kind, text });
}

/**
 * What both terminal events carry: the whole answer (kept even when a run
 * fails or is cancelled mid-stream), usage and cost.
 * @param {Run} run
 * @param {Record<string, any>} d
 * @param {ChannelEvent} event
 */
function endWith(run, d, event) {
  if (typeof d.text === 'string') setText(run, d.text);
  if (d.usage && typeof d.usage === 'object') run.usage = d.usage;
  if (typeof d.cost_usd === 'number') run.costUsd = d.cost_usd;
  run.endedAt = event.timestamp ?? null;
  endTools(run);
}

/**
 * Replaces the answer with the authoritative whole (the terminal event's
 * `text`, or a REST view's): the text items become one, after the thinking
 * and tool calls, unless the pieces already add up to it.
 * @param {Run} run
 * @param {string} text
 */
function setText(run, text) {
  if (run.text === text) return;
  run.text = text;
  run.items = run.items.filter((i) => i.kind !== 'text');
  if (text) run.items.push({ kind: 'text', text });
}

/**
 * Tool calls still running when a run ends did not finish, unless the run
 * completed on them (`finish_reason` `tool_calls`): those are frontend tools
 * the client executes. @param {Run} run
 */
function endTools(run) {
  const left = run.status === 'completed' && run.finishReason === 'tool_calls' ? 'client' : 'failed';
  for (const call of run.tools.values()) if (call.status === 'running') call.status = left;
}

/**
 * @typedef {object} RunEvents
 * @property {{run: Run, event: ChannelEvent | null}} change a run changed (or appeared)
 * @property {{run: Run}} end a run reached its terminal event
 * @property {{run: Run, messageId: string}} stored the run's answer arrived as a stored message
 * @property {{runs: Run[]}} rebuilt the runs were rebuilt from REST
 */

/** Runs kept per channel; the oldest ended ones go first. */
const MAX_RUNS = 200;

/** The runs of one channel. */
export class RunTracker {
  /** @param {(error: unknown, info: {event: string}) => void} [onHandlerError] */
  constructor(onHandlerError) {
    /** @type {Map<string, Run>} */
    this.runs = new Map();
    /** Answers that arrived before their run's events (or without them). @type {Set<string>} */
    this.storedRuns = new Set();
    /** @type {Emitter<RunEvents>} */
    this.events = new Emitter(onHandlerError);
  }

  /**
   * @template {keyof RunEvents & string} K
   * @param {K} event
   * @param {(payload: RunEvents[K]) => void} handler
   */
  on(event, handler) {
    return this.events.on(event, handler);
  }

  /** @param {string} id */
  get(id) {
    return this.runs.get(id);
  }

  /** Runs that have not ended, oldest first. */
  active() {
    return [...this.runs.values()].filter((r) => !isEnded(r));
  }

  /** @param {ChannelEvent} event */
  onEvent(event) {
    if (event.type === 'message_created') {
      const message = event.data?.message;
      const runId = message?.run_id;
      if (typeof runId === 'string') this.markStored(runId, String(message.id));
      return;
    }
    if (!RUN_EVENTS.has(event.type)) return;
    const id = event.data?.run_id;
    if (typeof id !== 'string') return;
    let run = this.runs.get(id);
    if (!run) {
      run = newRun(event.data);
      this.runs.set(id, run);
      this.trim();
    }
    if (!applyRunEvent(run, event)) return;
    if (this.storedRuns.has(id)) run.stored = true;
    this.events.emit('change', { run, event });
    if (isEnded(run)) this.events.emit('end', { run });
  }

  /**
   * @param {string} runId
   * @param {string} messageId
   */
  markStored(runId, messageId) {
    const run = this.runs.get(runId);
    if (!run) {
      if (this.storedRuns.size >= MAX_RUNS) this.storedRuns.clear();
      this.storedRuns.add(runId);
      return;
    }
    if (run.stored) return;
    run.stored = true;
    run.messageId = messageId;
    this.events.emit('stored', { run, messageId });
  }

  /**
   * Replaces the runs with what the server says is active (after a
   * `recovery_failed`, events of runs may have been lost). Runs we had that
   * are no longer active ended meanwhile: their answers are in the
   * refetched messages, so they are dropped.
   * @param {Record<string, any>[]} views runs as `GET /api/v1/channels/{id}/runs?status=active` lists them
   *   (`id`, `agent_id`, `thread_id`, `status`, `model`, `provider`, `message_id`, `text` with its `seq`, …)
   */
  rebuild(views) {
    /** @type {Map<string, Run>} */
    const runs = new Map();
    for (const view of views.slice(0, MAX_RUNS)) {
      if (typeof view?.id !== 'string') continue;
      const known = this.runs.get(view.id);
      const run = known && !isEnded(known) ? known : newRun({ ...view, run_id: view.id });
      run.status = view.status === 'queued' ? 'queued' : 'running';
      if (typeof view.model === 'string') run.model = view.model;
      if (typeof view.provider === 'string') run.provider = view.provider;
      if (typeof view.trigger_message_id === 'string') run.triggerMessageId = view.trigger_message_id;
      if (typeof view.triggered_by === 'string') run.triggeredBy = view.triggered_by;
      if (typeof view.parent_run_id === 'string') run.parentRunId = view.parent_run_id;
      if (typeof view.hop === 'number') run.hop = view.hop;
      if (typeof view.message_id === 'string') run.messageId = view.message_id;
      // The server's text is the answer streamed so far, every delta up to
      // its `seq`: more than ours when deltas were lost. Deltas after it
      // follow as events; those at or below it are dropped as they come.
      if (typeof view.text === 'string') {
        if (typeof view.seq === 'number') {
          if (view.seq >= run.textSeq) {
            setText(run, view.text);
            run.textSeq = view.seq;
          }
        } else if (view.text.length >= run.text.length) {
          // A server that does not number its text (older, or the run is produced elsewhere).
          setText(run, view.text);
        }
      }
      run.startedAt = view.started_at ?? run.startedAt;
      runs.set(run.id, run);
    }
    this.runs = runs;
    this.events.emit('rebuilt', { runs: [...runs.values()] });
  }

  trim() {
    if (this.runs.size <= MAX_RUNS) return;
    for (const [id, run] of this.runs) {
      if (this.runs.size <= MAX_RUNS) break;
      if (isEnded(run)) this.runs.delete(id);
    }
    // Still too many: all active; drop the oldest anyway (bounded memory wins).
    while (this.runs.size > MAX_RUNS) {
      const first = this.runs.keys().next().value;
      if (first === undefined) break;
      this.runs.delete(first);
    }
  }
}
