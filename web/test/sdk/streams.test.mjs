// Subscriptions, recovery, the outbox, presence and typing against a real
// server.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Chorus } from '../../sdk/index.js';
import { TestServer, next, tcpProxy, until } from '../harness.mjs';
import { tapped } from './tap.mjs';

let server;
before(async () => {
  server = await new TestServer().start();
});
after(async () => {
  await server?.dispose();
});

function clientOf(user, options = {}) {
  return new Chorus({ url: server.url, getToken: async () => user.access_token, minReconnectMs: 50, maxReconnectMs: 200, ...options });
}

/** A user with a channel of their own and a connected client subscribed to it. */
async function setup(options = {}) {
  const user = await server.user('s');
  const channel = await server.channel(user);
  const chorus = clientOf(user, options.client);
  const loads = [];
  const events = [];
  const sub = chorus.subscribe(channel.stream, {
    presence: options.presence,
    runs: options.runs,
    loadState: async ({ reason }) => {
      loads.push(reason);
    },
  });
  sub.on('event', (e) => events.push(e));
  chorus.connect();
  await next(sub, 'loaded');
  return { user, channel, chorus, sub, loads, events };
}

const texts = (events) => events.filter((e) => e.type === 'publication').map((e) => e.data.n);

describe('subscriptions', () => {
  it('one subscription per channel, loaded once, events in order', async () => {
    const { channel, chorus, sub, loads, events } = await setup({ client: {} });
    assert.equal(chorus.subscribe(channel.stream), sub);
    assert.deepEqual(loads, ['initial']);
    await server.publish([1, 2, 3].map((n) => [channel.stream, 'publication', { n }]));
    await until(() => texts(events).length === 3);
    assert.deepEqual(texts(events), [1, 2, 3]);
    const offsets = events.map((e) => e.offset);
    assert.deepEqual(offsets, offsets.map((_, i) => offsets[0] + i));
    chorus.disconnect();
  });

  it('resumes after a cut with `since` and gets every missed event exactly once', async () => {
    const user = await server.user('cut');
    const channel = await server.channel(user);
    const proxy = await tcpProxy(server.port);
    const tap = {};
    const chorus = clientOf(user, { url: proxy.url, WebSocket: tapped(tap) });
    const events = [];
    const loads = [];
    const sub = chorus.subscribe(channel.stream, { loadState: ({ reason }) => void loads.push(reason) });
    sub.on('event', (e) => events.push(e));
    chorus.connect();
    await next(sub, 'loaded');
    await server.publish([[channel.stream, 'publication', { n: 1 }]]);
    await until(() => texts(events).length === 1);
    proxy.cut();
    await until(() => chorus.state === 'reconnecting');
    await server.publish([2, 3, 4, 5, 6].map((n) => [channel.stream, 'publication', { n }]));
    proxy.restore();
    await until(() => texts(events).length === 6, undefined, 'the missed events');
    await server.publish([[channel.stream, 'publication', { n: 7 }]]);
    await until(() => texts(events).length === 7);
    assert.deepEqual(texts(events), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(loads, ['initial']);
    const subscribes = tap.sent.map((f) => JSON.parse(f)).filter((f) => f.type === 'subscribe');
    assert.equal(subscribes.length, 2, JSON.stringify(tap.sent));
    assert.equal(subscribes[1].since.offset, events.find((e) => e.data.n === 1).offset);
    chorus.disconnect();
    await proxy.close();
  });

  it('a gap makes it resubscribe from its position; the missed event arrives once, in order', async () => {
    let dropped = 0;
    const tap = {
      dropIn: (frame) => {
        if (dropped === 0 && frame.includes('"n":2')) {
          dropped++;
          return true;
        }
        return false;
      },
    };
    const { channel, chorus, events } = await setup({ client: { WebSocket: tapped(tap) } });
    await server.publish([1, 2, 3].map((n) => [channel.stream, 'publication', { n }]));
    await until(() => texts(events).length === 3, undefined, 'the replayed event');
    await server.publish([[channel.stream, 'publication', { n: 4 }]]);
    await until(() => texts(events).length === 4);
    assert.equal(dropped, 1);
    assert.deepEqual(texts(events), [1, 2, 3, 4]);
    const kinds = tap.sent.map((f) => JSON.parse(f).type);
    assert.deepEqual(kinds.filter((k) => k === 'subscribe' || k === 'unsubscribe'), ['subscribe', 'unsubscribe', 'subscribe']);
    chorus.disconnect();
  });

  it('after a restart (new epoch) it refetches with loadState, then the stream continues', async () => {
    const { user, channel, chorus, sub, loads, events } = await setup({ client: { minReconnectMs: 50, maxReconnectMs: 100 } });
    await server.publish([[channel.stream, 'publication', { n: 1 }]]);
    await until(() => texts(events).length === 1);
    const failed = next(sub, 'recovery_failed', () => true, 15000);
    const reloaded = next(sub, 'loaded', (l) => l.reason === 'recovery_failed', 15000);
    await server.restart();
    await failed;
    await reloaded;
    assert.deepEqual(loads, ['initial', 'recovery_failed']);
    await server.publish([[channel.stream, 'publication', { n: 2 }]]);
    await until(() => texts(events).length === 2);
    assert.deepEqual(texts(events), [1, 2]);
    const [first, second] = events.filter((e) => e.type === 'publication');
    assert.notEqual(second.epoch, first.epoch);
    assert.ok(user);
    chorus.disconnect();
  });

  it('drops a message_created it has already delivered (same message id)', async () => {
    const { Subscription } = await import('../../sdk/subscription.js');
    const { Emitter } = await import('../../sdk/emitter.js');
    const fake = { events: new Emitter(), state: 'disconnected' };
    const sub = new Subscription(/** @type {any} */ (fake), 'room:x', {});
    const got = [];
    sub.on('message_created', (e) => got.push(e.offset));
    const ev = (offset, id) => ({ type: 'message_created', channel: 'room:x', offset, epoch: 'e', timestamp: '', data: { message: { id } } });
    sub.deliver(ev(1, 'm1'));
    sub.deliver(ev(2, 'm2'));
    sub.deliver(ev(3, 'm1')); // the outbox relay's second delivery after a crash
    assert.deepEqual(got, [1, 2]);
  });
});

describe('outbox', () => {
  it('a message written while offline is pending, then delivered once', async () => {
    const user = await server.user('out');
    const channel = await server.channel(user);
    const proxy = await tcpProxy(server.port);
    const chorus = clientOf(user, { url: proxy.url });
    chorus.connect();
    await next(chorus, 'connected');
    proxy.cut();
    await until(() => chorus.state === 'reconnecting');
    const item = chorus.sendMessage(channel.stream, 'written offline');
    assert.equal(item.status, 'pending');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(item.status, 'pending');
    proxy.restore();
    const result = await item.done;
    assert.equal(item.status, 'sent');
    assert.equal(result.duplicate, false);
    const stored = await server.messages(user, channel.id);
    assert.deepEqual(stored.map((m) => m.text), ['written offline']);
    chorus.disconnect();
    await proxy.close();
  });

  it('a send whose reply was lost is re-sent with the same key after a reconnect and stored once', async () => {
    const user = await server.user('lost');
    const channel = await server.channel(user);
    const proxy = await tcpProxy(server.port);
    let dropReplies = true;
    const tap = { dropIn: (frame) => dropReplies && frame.includes('"message_id"') };
    const chorus = clientOf(user, { url: proxy.url, WebSocket: tapped(tap), requestTimeoutMs: 60000 });
    chorus.connect();
    await next(chorus, 'connected');
    const item = chorus.sendMessage(channel.stream, 'once only');
    await until(async () => (await server.messages(user, channel.id)).length === 1, undefined, 'the first store');
    assert.equal(item.status, 'pending');
    dropReplies = false;
    proxy.cut();
    proxy.restore();
    const result = await item.done;
    assert.equal(result.duplicate, true);
    const sends = tap.sent.map((f) => JSON.parse(f)).filter((f) => f.type === 'send_message');
    assert.equal(sends.length, 2);
    assert.equal(sends[0].idempotency_key, sends[1].idempotency_key);
    assert.equal((await server.messages(user, channel.id)).length, 1);
    chorus.disconnect();
    await proxy.close();
  });

  it('a definite refusal fails the message; it is not re-sent', async () => {
    const user = await server.user('ref');
    const chorus = clientOf(user);
    chorus.connect();
    await next(chorus, 'connected');
    const item = chorus.sendMessage('room:00000000-0000-0000-0000-000000000000', 'nowhere');
    await assert.rejects(item.done, (e) => e.code === 'not_found' && Boolean(e.requestId));
    assert.equal(item.status, 'failed');
    const tooLong = chorus.sendMessage('room:00000000-0000-0000-0000-000000000000', 'x'.repeat(2001));
    await assert.rejects(tooLong.done, (e) => e.code === 'invalid_field');
    chorus.disconnect();
  });
});

describe('presence and typing', () => {
  it('a snapshot kept by join/leave, taken again after a reconnect', async () => {
    const { user, channel, chorus, sub } = await setup({ presence: true, client: {} });
    await until(() => sub.presence.has(user.user.id), undefined, 'own presence');
    const bob = await server.user('bob');
    await server.addMember(user, channel.id, bob);
    const bobClient = clientOf(bob);
    bobClient.subscribe(channel.stream);
    bobClient.connect();
    await until(() => sub.presence.has(bob.user.id), undefined, 'bob joined');
    bobClient.disconnect();
    await until(() => !sub.presence.has(bob.user.id), undefined, 'bob left');
    // Bob comes back while we are away: the snapshot after our reconnect has him.
    const proxyless = chorus;
    proxyless.disconnect();
    bobClient.connect();
    await next(bobClient, 'connected');
    proxyless.connect();
    await until(() => sub.presence.has(bob.user.id) && sub.presence.has(user.user.id), undefined, 'snapshot after reconnect');
    bobClient.disconnect();
    chorus.disconnect();
  });

  it('typing shows for others, expires, and is never queued while offline', async () => {
    const { user, channel, chorus, sub } = await setup({ client: {} });
    const bob = await server.user('typer');
    await server.addMember(user, channel.id, bob);
    const tap = {};
    const bobClient = clientOf(bob, { WebSocket: tapped(tap) });
    bobClient.subscribe(channel.stream);
    bobClient.connect();
    await next(bobClient, 'connected');
    await until(() => bobClient.subscriptions.get(channel.stream).state === 'live');
    assert.equal(await bobClient.typing(channel.stream, true), true);
    await until(() => sub.typing.users.includes(bob.user.id), undefined, 'typing shown');
    assert.equal(await bobClient.typing(channel.stream, false), true);
    await until(() => sub.typing.users.length === 0, undefined, 'typing gone');
    bobClient.disconnect();
    assert.equal(await bobClient.typing(channel.stream, true), false);
    bobClient.connect();
    await next(bobClient, 'connected');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(tap.sent.filter((f) => JSON.parse(f).type === 'typing').length, 2);
    bobClient.disconnect();
    chorus.disconnect();
  });
});
