// Run view models from run events published through the server API (as an
// external agent, or the agent runtime, publishes them).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Chorus, RunTracker } from '../../sdk/index.js';
import { TestServer, next, runEvents, until } from '../harness.mjs';

let server;
before(async () => {
  server = await new TestServer().start();
});
after(async () => {
  await server?.dispose();
});

describe('runs', () => {
  it('builds a run from agent_started to its ending: thinking, tools and text in order', async () => {
    const user = await server.user('r');
    const channel = await server.channel(user);
    const chorus = new Chorus({ url: server.url, getToken: async () => user.access_token });
    const sub = chorus.subscribe(channel.stream, { runs: true });
    const ends = [];
    sub.runs.on('end', ({ run }) => ends.push(run.id));
    chorus.connect();
    await next(sub, 'loaded');
    await server.publish(runEvents(channel.stream, { runId: 'run-1', agentId: 'agent-1', messageId: 'm-1' }));
    await until(() => ends.length === 1);
    const run = sub.runs.get('run-1');
    assert.equal(run.status, 'completed');
    assert.equal(run.model, 'demo');
    assert.equal(run.provider, 'demo');
    assert.equal(run.triggeredBy, 'someone');
    assert.equal(run.triggerMessageId, 'trigger');
    assert.equal(run.hop, 0);
    assert.deepEqual(run.items.map((i) => i.kind), ['thinking', 'tool', 'text']);
    assert.equal(run.thinking, 'Let me think.');
    const call = run.tools.get('c1');
    assert.equal(call.status, 'done');
    assert.deepEqual(call.arguments, { zone: 'UTC' });
    assert.deepEqual(call.result, { now: '2026-12-05T10:00:00Z' });
    assert.equal(call.durationMs, 12);
    assert.equal(run.text, 'Hello **world**\n\n```js\nconst x = 1;\n```');
    assert.deepEqual(run.usage, { input_tokens: 12, output_tokens: 7, estimated: false });
    assert.equal(run.costUsd, 0.0021);
    assert.equal(run.finishReason, 'stop');
    assert.equal(run.messageId, 'm-1');

    // Nothing after the ending changes it, and a repeated seq is skipped.
    await server.publish([[channel.stream, 'agent_text_delta', { run_id: 'run-1', thread_id: channel.stream, agent_id: 'agent-1', seq: 99, message_id: 'm-1', delta: 'late' }]]);
    await server.publish(runEvents(channel.stream, { runId: 'run-2', agentId: 'agent-1', end: 'cancelled', text: ['partial'] }));
    await until(() => ends.length === 2);
    assert.equal(sub.runs.get('run-1').text.endsWith('late'), false);
    const cancelled = sub.runs.get('run-2');
    assert.equal(cancelled.status, 'cancelled');
    assert.equal(cancelled.error.code, 'cancelled');
    assert.equal(cancelled.text, 'partial');
    // Interrupted by a newer message: cancelled too, with the answer so far kept.
    await server.publish(runEvents(channel.stream, { runId: 'run-3', agentId: 'agent-1', end: 'superseded', text: ['half'], messageId: 'm-3' }));
    await until(() => ends.length === 3);
    const superseded = sub.runs.get('run-3');
    assert.equal(superseded.status, 'cancelled');
    assert.equal(superseded.error.code, 'superseded');
    assert.equal(superseded.messageId, 'm-3');
    assert.equal(superseded.text, 'half');
    assert.deepEqual(sub.runs.active(), []);
    chorus.disconnect();
  });

  it('applies each per-run seq once, marks failed tool calls, ends open calls with the run', () => {
    const tracker = new RunTracker();
    const ev = (type, data) => ({ type, channel: 'room:c', offset: 0, epoch: 'e', timestamp: '2026-12-05T10:00:00.000Z', data: { run_id: 'r', thread_id: 'room:c', agent_id: 'a', ...data } });
    tracker.onEvent(ev('agent_started', { seq: 1, model: 'm' }));
    tracker.onEvent(ev('agent_text_delta', { seq: 2, delta: 'a' }));
    tracker.onEvent(ev('agent_text_delta', { seq: 2, delta: 'a' }));
    tracker.onEvent(ev('tool_executing', { seq: 3, call_id: 'x', tool: 'calculator', arguments: { expr: '1/0' } }));
    tracker.onEvent(ev('tool_completed', { seq: 4, call_id: 'x', tool: 'calculator', result: 'division by zero', is_error: true }));
    tracker.onEvent(ev('tool_executing', { seq: 5, call_id: 'y', tool: 'clock' }));
    tracker.onEvent(ev('agent_error', { seq: 6, code: 'timeout', message: 'no answer', retryable: true }));
    const run = tracker.get('r');
    assert.equal(run.text, 'a');
    assert.equal(run.tools.get('x').status, 'failed');
    assert.equal(run.tools.get('y').status, 'failed');
    assert.equal(run.status, 'failed');
    assert.deepEqual(run.error, { code: 'timeout', message: 'no answer', retryable: true });

    // The stored answer, before or after the run's own events.
    const stored = [];
    tracker.on('stored', ({ run: r, messageId }) => stored.push([r.id, messageId]));
    tracker.onEvent({ type: 'message_created', channel: 'room:c', offset: 0, epoch: 'e', timestamp: '', data: { message: { id: 'm9', run_id: 'r' } } });
    assert.deepEqual(stored, [['r', 'm9']]);
    tracker.onEvent({ type: 'message_created', channel: 'room:c', offset: 0, epoch: 'e', timestamp: '', data: { message: { id: 'm8', run_id: 'early' } } });
    tracker.onEvent(ev('agent_started', { run_id: 'early', seq: 1 }));
    assert.equal(tracker.get('early').stored, true);
  });

  it('hands the calls a run completed on to the client instead of failing them', () => {
    const tracker = new RunTracker();
    const ev = (type, data) => ({ type, channel: 'room:c', offset: 0, epoch: 'e', timestamp: '2026-12-05T10:00:00.000Z', data: { run_id: 'f', thread_id: 'room:c', agent_id: 'a', ...data } });
    tracker.onEvent(ev('agent_started', { seq: 1, model: 'm' }));
    tracker.onEvent(ev('tool_executing', { seq: 2, call_id: 'z', tool: 'confirm', arguments: { ask: 'ok?' } }));
    tracker.onEvent(ev('agent_completed', { seq: 3, text: '', finish_reason: 'tool_calls' }));
    const run = tracker.get('f');
    assert.equal(run.status, 'completed');
    assert.equal(run.tools.get('z').status, 'client');
  });

  it('keeps one thinking and one text item per step however their pieces interleave', () => {
    const tracker = new RunTracker();
    let seq = 0;
    const ev = (type, data) => tracker.onEvent({ type, channel: 'room:c', offset: 0, epoch: 'e', timestamp: '', data: { run_id: 'r', thread_id: 'room:c', agent_id: 'a', seq: ++seq, ...data } });
    ev('agent_started', {});
    ev('agent_thinking', { thought: 'Arithmetic. ' });
    ev('tool_executing', { call_id: 'x', tool: 'calculator', arguments: { expression: '1+1' } });
    ev('tool_completed', { call_id: 'x', tool: 'calculator', result: '2', is_error: false, duration_ms: 1 });
    ev('agent_text_delta', { message_id: 'm', delta: 'It is ' });
    ev('agent_thinking', { thought: 'The tool said 2.' });
    ev('agent_text_delta', { message_id: 'm', delta: '2.' });
    ev('agent_thinking', { thought: ' Done.' });
    const run = tracker.get('r');
    assert.deepEqual(
      run.items.map((i) => (i.kind === 'tool' ? `tool:${i.call.tool}` : `${i.kind}:${i.text}`)),
      ['thinking:Arithmetic. ', 'tool:calculator', 'thinking:The tool said 2. Done.', 'text:It is 2.'],
    );
  });

  it('rebuilds from the active runs a server lists, dropping runs that ended meanwhile', () => {
    const tracker = new RunTracker();
    const started = (id) => ({ type: 'agent_started', channel: 'room:c', offset: 1, epoch: 'e', timestamp: '', data: { run_id: id, thread_id: 'room:c', agent_id: 'a', seq: 1 } });
    tracker.onEvent(started('gone'));
    tracker.onEvent(started('kept'));
    tracker.onEvent({ type: 'agent_text_delta', channel: 'room:c', offset: 3, epoch: 'e', timestamp: '', data: { run_id: 'kept', thread_id: 'room:c', agent_id: 'a', seq: 2, message_id: 'mk', delta: 'He' } });
    // RunView as GET /api/v1/channels/{id}/runs?status=active lists them.
    const view = (id, fields) => ({ id, agent_id: 'a', channel_id: 'c', thread_id: 'room:c', hop: 0, usage: { input_tokens: 0, output_tokens: 0, estimated: false }, cost_usd: 0, created_at: '2026-12-05T10:00:00.000Z', ...fields });
    tracker.rebuild([
      view('kept', { status: 'running', model: 'demo', provider: 'demo', message_id: 'mk', text: 'Hello', seq: 4, started_at: '2026-12-05T10:00:01.000Z' }),
      view('new', { agent_id: 'b', status: 'queued', model: 'demo', triggered_by: 'u1', trigger_message_id: 'm0' }),
    ]);
    assert.deepEqual([...tracker.runs.keys()], ['kept', 'new']);
    const kept = tracker.get('kept');
    assert.equal(kept.status, 'running');
    // The server's text covers deltas this client lost; later ones append.
    assert.equal(kept.text, 'Hello');
    assert.equal(kept.lastSeq, 2);
    tracker.onEvent({ type: 'agent_text_delta', channel: 'room:c', offset: 9, epoch: 'f', timestamp: '', data: { run_id: 'kept', thread_id: 'room:c', agent_id: 'a', seq: 5, message_id: 'mk', delta: ' there' } });
    assert.equal(kept.text, 'Hello there');
    assert.deepEqual(kept.items, [{ kind: 'text', text: 'Hello there' }]);
    const fresh = tracker.get('new');
    assert.equal(fresh.status, 'queued');
    assert.equal(fresh.agentId, 'b');
    assert.equal(fresh.triggeredBy, 'u1');
    assert.equal(fresh.text, '');
  });

  it('drops the deltas a rebuilt run’s text already holds (at or below the view’s seq), once', () => {
    const tracker = new RunTracker();
    const ev = (seq, type, data) => tracker.onEvent({ type, channel: 'room:c', offset: seq, epoch: 'e', timestamp: '', data: { run_id: 'r', thread_id: 'room:c', agent_id: 'a', seq, ...data } });
    const delta = (seq, text) => ev(seq, 'agent_text_delta', { message_id: 'm', delta: text });
    // The view was read after delta 4; the stream (held while it loaded) still brings 3 and 4.
    tracker.rebuild([{ id: 'r', agent_id: 'a', thread_id: 'room:c', status: 'running', message_id: 'm', text: 'The whole ', seq: 4 }]);
    const run = tracker.get('r');
    assert.equal(run.text, 'The whole ');
    delta(3, 'whole ');
    ev(4, 'agent_thinking', { thought: 'Go on.' });
    delta(5, 'answer');
    delta(6, '.');
    assert.equal(run.text, 'The whole answer.');
    assert.deepEqual(run.items.map((i) => `${i.kind}:${i.text}`), ['thinking:Go on.', 'text:The whole answer.']);

    // A view older than the deltas already applied changes nothing.
    tracker.rebuild([{ id: 'r', agent_id: 'a', thread_id: 'room:c', status: 'running', message_id: 'm', text: 'The whole ', seq: 4 }]);
    assert.equal(tracker.get('r').text, 'The whole answer.');
    // A newer one replaces the text; its deltas, when they come, are skipped.
    tracker.rebuild([{ id: 'r', agent_id: 'a', thread_id: 'room:c', status: 'running', message_id: 'm', text: 'The whole answer. More', seq: 9 }]);
    delta(8, ' More');
    delta(10, ' still.');
    assert.equal(tracker.get('r').text, 'The whole answer. More still.');
    ev(11, 'agent_completed', { message_id: 'm', text: 'The whole answer. More still.' });
    assert.equal(tracker.get('r').status, 'completed');
    assert.equal(tracker.get('r').text, 'The whole answer. More still.');
  });
});
