// The SDK's connection against a real server: states, `request()` errors and
// timeouts, reconnect on a cut network, close codes that stop it for good,
// tokens refused and renewed, handlers that throw.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Chorus, ChorusError, LocalSession } from '../../sdk/index.js';
import { TestServer, next, tcpProxy, until } from '../harness.mjs';
import { tapped } from './tap.mjs';

let server;
before(async () => {
  server = await new TestServer().start();
});
after(async () => {
  await server?.dispose();
});

/** A client of `user` with fast reconnects; closed by the test. */
function clientOf(user, options = {}) {
  return new Chorus({ url: server.url, getToken: async () => user.access_token, minReconnectMs: 50, maxReconnectMs: 200, ...options });
}

describe('connection', () => {
  it('goes connecting → connected with one state event per change, and disconnects', async () => {
    const alice = await server.user('alice');
    const chorus = clientOf(alice);
    const states = [];
    chorus.on('state', (s) => states.push(s.state));
    const connected = next(chorus, 'connected');
    chorus.connect();
    const info = await connected;
    assert.equal(info.user_id, alice.user.id);
    assert.equal(info.reconnected, false);
    assert.deepEqual(states, ['connecting', 'connected']);
    chorus.disconnect();
    assert.equal(chorus.state, 'disconnected');
    assert.deepEqual(states, ['connecting', 'connected', 'disconnected']);
  });

  it('rejects a refused request with the code and request_id, and a lost reply with timeout', async () => {
    const alice = await server.user('alice');
    const tap = { dropIn: (frame) => frame.includes('"pong"') };
    const chorus = clientOf(alice, { WebSocket: tapped(tap), requestTimeoutMs: 300 });
    chorus.connect();
    await next(chorus, 'connected');
    await assert.rejects(chorus.request('subscribe', { channel: 'user:someone-else' }), (e) => {
      assert.ok(e instanceof ChorusError);
      assert.equal(e.code, 'forbidden');
      assert.match(e.requestId, /.+:\d+$/);
      return true;
    });
    await assert.rejects(chorus.request('ping'), (e) => e.code === 'timeout');
    // The connection is still fine.
    assert.deepEqual(await chorus.request('presence', { channel: 'user:x' }).catch((e) => e.code), 'forbidden');
    chorus.disconnect();
    await assert.rejects(chorus.request('ping'), (e) => e.code === 'disconnected');
  });

  it('reconnects after a cut with backoff, at once when the browser comes online', async () => {
    const alice = await server.user('alice');
    const proxy = await tcpProxy(server.port);
    const env = new EventTarget();
    // A backoff of ten minutes: reconnecting before the test's timeout proves the `online` event did it.
    const chorus = clientOf(alice, { url: proxy.url, environment: env, minReconnectMs: 600000, maxReconnectMs: 600000 });
    chorus.connect();
    await next(chorus, 'connected');
    const reconnecting = next(chorus, 'state', (s) => s.state === 'reconnecting');
    proxy.cut();
    const s = await reconnecting;
    assert.equal(s.reason, 'connection_lost');
    assert.ok(s.delayMs >= 600000, `delay ${s.delayMs}`);
    proxy.restore();
    // Without waiting out the delay: the `online` event retries now.
    const again = next(chorus, 'connected');
    env.dispatchEvent(new Event('online'));
    const info = await again;
    assert.equal(info.reconnected, true);
    chorus.disconnect();
    await proxy.close();
  });

  it('jitters the backoff between 0.5 s and a ceiling that doubles up to 20 s, reset after a stable connection', async () => {
    const { Backoff } = await import('../../sdk/backoff.js');
    const low = new Backoff({ random: () => 0 });
    const high = new Backoff({ random: () => 0.999999 });
    const lows = Array.from({ length: 8 }, () => low.next());
    const highs = Array.from({ length: 8 }, () => high.next());
    assert.deepEqual(lows, [500, 500, 500, 500, 500, 500, 500, 500]);
    assert.deepEqual(highs, [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000]);
    high.reset();
    assert.equal(high.next(), 500);
    assert.equal(new Backoff({ random: () => 0 }).next(5000), 5000);
  });

  it('a fourth connection evicts the oldest, which stops and never reconnects on its own', async () => {
    const alice = await server.user('alice');
    const clients = [];
    for (let i = 0; i < 4; i++) {
      const c = clientOf(alice);
      c.connect();
      await next(c, 'connected');
      clients.push(c);
    }
    await until(() => clients[0].state === 'stopped', undefined, 'eviction');
    assert.deepEqual(clients[0].stopped, { reason: 'replaced', code: 4004 });
    const reconnects = [];
    clients[0].on('state', (s) => reconnects.push(s));
    await new Promise((r) => setTimeout(r, 600)); // several backoff periods of this client
    assert.deepEqual(reconnects, []);
    assert.deepEqual(clients.slice(1).map((c) => c.state), ['connected', 'connected', 'connected']);
    for (const c of clients) c.disconnect();
  });

  it('a refused token is replaced by a fresh one; a source with none stops the client', async () => {
    const alice = await server.user('alice');
    const asked = [];
    const chorus = clientOf(alice, {
      getToken: async (request) => {
        asked.push(request.reason);
        return asked.length === 1 ? 'not-a-token' : alice.access_token;
      },
    });
    chorus.connect();
    await next(chorus, 'connected');
    assert.deepEqual(asked, ['connect', 'rejected']);
    chorus.disconnect();

    const gone = clientOf(alice, { getToken: async () => Promise.reject(new ChorusError('signed_out', 'no session')) });
    const stopped = next(gone, 'state', (s) => s.state === 'stopped');
    gone.connect();
    assert.equal((await stopped).reason, 'signed_out');
  });

  it('a handler that throws is reported and breaks nothing; handlers are removable', async () => {
    const alice = await server.user('alice');
    const errors = [];
    const chorus = clientOf(alice, { onHandlerError: (error, info) => errors.push([String(error), info.event]) });
    let calls = 0;
    chorus.on('connected', () => {
      throw new Error('boom');
    });
    const off = chorus.on('connected', () => calls++);
    chorus.connect();
    await until(() => chorus.state === 'connected');
    assert.deepEqual(errors, [['Error: boom', 'connected']]);
    assert.equal(calls, 1);
    off();
    assert.deepEqual(await chorus.request('ping'), { pong: true });
    chorus.disconnect();
  });
});

describe('tokens', () => {
  let short;
  before(async () => {
    // Tokens of 3 s and 1 s of leeway: without refresh, a connection closes after 4 s.
    short = await new TestServer({ chat: { access_token_ttl: '3s' }, auth: { leeway: '1s' } }).start();
  });
  after(async () => {
    await short?.dispose();
  });

  it('a token of a few seconds is refreshed over REST then on the connection, which stays up', async () => {
    const u = await short.user('tok');
    const session = new LocalSession({ url: short.url });
    await session.logIn({ username: u.username, password: u.password });
    const chorus = new Chorus({ url: short.url, getToken: session.getToken });
    const closes = [];
    chorus.on('disconnected', (d) => closes.push(d.code));
    chorus.connect();
    await next(chorus, 'connected');
    let refreshed = 0;
    chorus.on('token_refreshed', () => refreshed++);
    await until(() => refreshed >= 3, 30000, 'three refreshes');
    assert.deepEqual(closes, []);
    assert.equal(chorus.state, 'connected');
    assert.deepEqual(await chorus.request('ping'), { pong: true });
    chorus.disconnect();
  });

  it('tabs sharing one session refresh once: the others read the new token', async () => {
    const u = await short.user('tabs');
    const storage = new Map();
    const shared = { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, v), removeItem: (k) => storage.delete(k) };
    let refreshes = 0;
    const counting = (url, init) => {
      if (String(url).endsWith('/auth/refresh')) refreshes++;
      return fetch(url, init);
    };
    // One lock for the "browser" (as navigator.locks is shared by its tabs).
    const tails = new Map();
    const locks = {
      request(name, cb) {
        const run = (tails.get(name) ?? Promise.resolve()).then(cb, cb);
        tails.set(name, run.catch(() => {}));
        return run;
      },
    };
    const tabs = Array.from({ length: 3 }, () => new LocalSession({ url: short.url, storage: shared, locks, fetch: counting }));
    await tabs[0].logIn({ username: u.username, password: u.password });
    // Past half of the token's 3 s, all three want a fresh one at once, as at a scheduled refresh.
    await new Promise((r) => setTimeout(r, 1700));
    const tokens = await Promise.all(tabs.map((t) => t.getToken({ reason: 'refresh' })));
    assert.equal(refreshes, 1);
    assert.equal(new Set(tokens).size, 1);
    // The session survived (a reused refresh token would have ended it).
    const me = await short.http('GET', 'me', { token: tokens[0] });
    assert.equal(me.id, u.user.id);
    // A token the server refused is never handed out again without a refresh.
    await tabs[1].getToken({ reason: 'rejected', rejectedToken: tokens[0] });
    assert.equal(refreshes, 2);
  });

  it('logging out ends the session: the next token request says signed_out', async () => {
    const u = await short.user('out');
    const session = new LocalSession({ url: short.url });
    await session.logIn({ username: u.username, password: u.password });
    const changes = [];
    session.on('change', (c) => changes.push(c.user));
    await session.logOut();
    assert.deepEqual(changes, [null]);
    await assert.rejects(session.getToken({ reason: 'connect' }), (e) => e.code === 'signed_out');
  });
});
