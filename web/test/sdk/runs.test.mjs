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
    assert.equal(run.agentName, 'Helper');
    assert.equal(run.model, 'demo');
    assert.deepEqual(run.items.map((i) => i.kind), ['thinking', 'tool', 'text']);
    assert.equal(run.thinking, 'Let me think.');
    const call = run.tools.get('c1');
    assert.equal(call.status, 'done');
    assert.deepEqual(call.arguments, { zone: 'UTC' });
    assert.deepEqual(call.result, { now: '2026-12-05T10:00:00Z' });
    assert.equal(call.durationMs, 12);
    assert.equal(run.text, 'Hello **world**\n\n```js\nconst x = 1;\n```');
    assert.deepEqual(run.usage, { input_tokens: 12, output_tokens: 7 });
    assert.equal(run.messageId, 'm-1');

    // Nothing after the ending changes it, and a repeated seq is skipped.
    await server.publish([[channel.stream, 'agent_text_delta', { run_id: 'run-1', thread_id: channel.stream, agent_id: 'agent-1', seq: 99, delta: 'late' }]]);
    await server.publish(runEvents(channel.stream, { runId: 'run-2', agentId: 'agent-1', end: 'cancelled', text: ['partial'] }));
    await until(() => ends.length === 2);
    assert.equal(sub.runs.get('run-1').text.endsWith('late'), false);
    const cancelled = sub.runs.get('run-2');
    assert.equal(cancelled.status, 'cancelled');
    assert.equal(cancelled.error.code, 'cancelled');
    assert.equal(cancelled.text, 'partial');
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

  it('rebuilds from the active runs a server lists, dropping runs that ended meanwhile', () => {
    const tracker = new RunTracker();
    tracker.onEvent({ type: 'agent_started', channel: 'room:c', offset: 1, epoch: 'e', timestamp: '', data: { run_id: 'gone', thread_id: 'room:c', agent_id: 'a', seq: 1 } });
    tracker.onEvent({ type: 'agent_started', channel: 'room:c', offset: 2, epoch: 'e', timestamp: '', data: { run_id: 'kept', thread_id: 'room:c', agent_id: 'a', seq: 1 } });
    tracker.rebuild([
      { id: 'kept', agent_id: 'a', channel_id: 'c', status: 'running', last_seq: 4 },
      { id: 'new', agent_id: 'b', channel_id: 'c', status: 'queued', model: 'demo', text: 'so far' },
    ]);
    assert.deepEqual([...tracker.runs.keys()], ['kept', 'new']);
    assert.equal(tracker.get('kept').lastSeq, 4);
    assert.equal(tracker.get('new').status, 'queued');
    assert.equal(tracker.get('new').text, 'so far');
  });
});
