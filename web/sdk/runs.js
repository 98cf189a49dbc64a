// Agent runs as view models, built from the run events of a channel
// (`agent_queued`, `agent_started`, `agent_thinking`, `agent_text_delta`,
// `tool_executing`, `tool_completed`, then exactly one of `agent_completed`
// or `agent_error`). Each event carries `run_id`, `thread_id`, `agent_id` and
// a per-run `seq`; an event whose `seq` was already applied is skipped, and
// nothing after the terminal event changes the run.

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
 * @property {'running' | 'done' | 'failed'} status
 * @property {unknown} [result]
 * @property {number | null} durationMs
 */

/**
 * One step of a run's timeline, in the order it happened.
 * @typedef {{kind: 'thinking', text: string} | {kind: 'text', text: string} | {kind: 'tool', call: ToolCall}} RunItem
 */

/**
 * @typedef {object} Run
 * @property {string} id
 * @property {string} agentId
 * @property {string} threadId
 * @property {RunStatus} status
 * @property {string | null} agentName
 * @property {string | null} model
 * @property {number | null} position place in the queue while `queued`
 * @property {string} thinking all reasoning text so far
 * @property {string} text the answer so far
 * @property {RunItem[]} items
 * @property {Map<string, ToolCall>} tools
 * @property {Record<string, any> | null} usage
 * @property {number | null} cost
 * @property {string | null} finishReason
 * @property {{code: string, message: string, retryable: boolean} | null} error
 * @property {string | null} messageId the stored answer's id, once known
 * @property {boolean} stored whether the stored answer (`message_created`) arrived
 * @property {number} lastSeq
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
    agentName: null,
    model: null,
    position: null,
    thinking: '',
    text: '',
    items: [],
    tools: new Map(),
    usage: null,
    cost: null,
    finishReason: null,
    error: null,
    messageId: null,
    stored: false,
    lastSeq: 0,
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
  const name = d.agent_name ?? (typeof d.agent === 'string' ? d.agent : d.agent?.name);
  if (typeof name === 'string') run.agentName = name;
  if (typeof d.model === 'string') run.model = d.model;
  if (typeof d.message_id === 'string') run.messageId = d.message_id;
  switch (event.type) {
    case 'agent_queued':
      if (typeof d.position === 'number') run.position = d.position;
      break;
    case 'agent_started':
      run.status = 'running';
      run.position = null;
      run.startedAt = event.timestamp ?? null;
      break;
    case 'agent_thinking': {
      run.status = 'running';
      const text = typeof d.delta === 'string' ? d.delta : typeof d.thought === 'string' ? d.thought : '';
      if (text) {
        run.thinking += text;
        appendText(run, 'thinking', text);
      }
      break;
    }
    case 'agent_text_delta':
      run.status = 'running';
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
      const ms = d.duration_ms ?? d.duration;
      call.durationMs = typeof ms === 'number' ? ms : null;
      break;
    }
    case 'agent_completed':
      run.status = 'completed';
      if (typeof d.text === 'string') run.text = d.text;
      run.usage = d.usage ?? null;
      run.cost = typeof d.cost === 'number' ? d.cost : typeof d.cost?.total === 'number' ? d.cost.total : null;
      run.finishReason = d.finish_reason ?? null;
      run.endedAt = event.timestamp ?? null;
      endTools(run);
      break;
    case 'agent_error': {
      const code = String(d.code ?? d.error ?? 'error');
      run.status = code === 'cancelled' ? 'cancelled' : 'failed';
      run.error = { code, message: String(d.message ?? code), retryable: d.retryable === true };
      run.usage = d.usage ?? run.usage;
      run.endedAt = event.timestamp ?? null;
      endTools(run);
      break;
    }
    default:
      return false;
  }
  return true;
}

/**
 * @param {Run} run
 * @param {'thinking' | 'text'} kind
 * @param {string} text
 */
function appendText(run, kind, text) {
  const last = run.items[run.items.length - 1];
  if (last && last.kind === kind) last.text += text;
  else run.items.push({ kind, text });
}

/** Tool calls still running when a run ends did not finish. @param {Run} run */
function endTools(run) {
  for (const call of run.tools.values()) if (call.status === 'running') call.status = 'failed';
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
   */
  rebuild(views) {
    /** @type {Map<string, Run>} */
    const runs = new Map();
    for (const view of views.slice(0, MAX_RUNS)) {
      const known = this.runs.get(String(view.id ?? view.run_id));
      const run = known && !isEnded(known) ? known : newRun(view);
      run.status = view.status === 'queued' ? 'queued' : 'running';
      if (typeof view.model === 'string') run.model = view.model;
      const name = view.agent_name ?? (typeof view.agent === 'string' ? view.agent : view.agent?.name);
      if (typeof name === 'string') run.agentName = name;
      if (!known && typeof view.text === 'string') {
        run.text = view.text;
        if (view.text) run.items.push({ kind: 'text', text: view.text });
      }
      if (typeof view.last_seq === 'number' && view.last_seq > run.lastSeq) run.lastSeq = view.last_seq;
      if (typeof view.seq === 'number' && view.seq > run.lastSeq) run.lastSeq = view.seq;
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
