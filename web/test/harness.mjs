// Test harness: a real `chorus serve` on a free loopback port with its own
// data directory, accounts made over REST, events published through the
// server API, and a TCP proxy that can cut a client's connections.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const SERVER_KEY = 'test-server-key-0123456789abcdef';

/** The binary under test: CHORUS_BIN, else the workspace's debug build. */
export function chorusBinary() {
  return process.env.CHORUS_BIN ?? path.join(repoRoot, 'target', 'debug', 'chorus');
}

/**
 * TOML for a test server: generous rate limits (tests send quickly), a
 * server API key, and whatever `extra` adds (a TOML fragment).
 */
function configText(dataDir, port, extra, auth = {}) {
  const authKeys = Object.entries(auth)
    .map(([k, v]) => `${k} = ${JSON.stringify(v)}`)
    .join('\n');
  return `data_dir = ${JSON.stringify(dataDir)}
[log]
level = "warn,chorus::server=info"
format = "json"
[server]
bind = "127.0.0.1:${port}"
[rate_limits]
messages_per_minute = 60000.0
messages_burst = 10000
rest_per_minute = 60000.0
rest_burst = 10000
[auth]
api_keys = [${JSON.stringify(SERVER_KEY)}]
${authKeys}
${extra}
`;
}

/** Appends `[chat]` keys to the harness's own (sign-ups and logins from one address). */
function chatSection(chat) {
  const keys = { signups_per_address_per_minute: 100000, logins_per_address_per_minute: 100000, logins_per_account_address_per_minute: 100000, logins_per_account_per_hour: 100000, refreshes_per_address_per_minute: 100000, channels_per_user: 1000, ...chat };
  return `[chat]\n${Object.entries(keys)
    .map(([k, v]) => `${k} = ${typeof v === 'string' ? JSON.stringify(v) : v}`)
    .join('\n')}\n`;
}

export class TestServer {
  /**
   * @param {{chat?: Record<string, any>, auth?: Record<string, any>, extra?: string}} [options]
   */
  constructor(options = {}) {
    this.options = options;
    this.dir = mkdtempSync(path.join(tmpdir(), 'chorus-web-test-'));
    this.port = 0;
    this.child = null;
    this.logTail = [];
  }

  get url() {
    return `http://127.0.0.1:${this.port}/`;
  }

  /** Starts (or restarts on the same port and data) and waits until it listens. */
  async start() {
    const configPath = path.join(this.dir, 'chorus.toml');
    const extra = chatSection(this.options.chat ?? {}) + (this.options.extra ?? '');
    writeFileSync(configPath, configText(path.join(this.dir, 'data'), this.port, extra, this.options.auth));
    const child = spawn(chorusBinary(), ['serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    // A test process that ends without disposing (a crash, a forced exit) takes its server along.
    const reap = () => {
      child.kill('SIGKILL');
      rmSync(this.dir, { recursive: true, force: true });
    };
    process.once('exit', reap);
    child.once('exit', () => process.off('exit', reap));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    this.exited = exited;
    child.stderr.on('data', (d) => this.remember(String(d)));
    const lines = createInterface({ input: child.stdout });
    const listening = new Promise((resolve, reject) => {
      lines.on('line', (line) => {
        this.remember(line);
        try {
          const entry = JSON.parse(line);
          if (entry.message === 'listening' && entry.addr) resolve(entry.addr);
        } catch {
          // Not a log line of ours.
        }
      });
      exited.then((code) => reject(new Error(`chorus serve exited (${code}) before listening:\n${this.logTail.join('\n')}`)));
    });
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('chorus serve did not listen within 30 s')), 30000));
    const addr = await Promise.race([listening, timeout]);
    this.port = Number(String(addr).split(':').pop());
    return this;
  }

  remember(text) {
    for (const line of text.split('\n')) {
      if (!line) continue;
      this.logTail.push(line);
      if (this.logTail.length > 200) this.logTail.shift();
    }
  }

  /** SIGTERM (clients get 1012) and wait for the exit. */
  async stop() {
    if (!this.child) return;
    const child = this.child;
    this.child = null;
    if (child.exitCode === null) child.kill('SIGTERM');
    await this.exited;
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  // ---------------------------------------------------------------- REST helpers

  async http(method, apiPath, { token, body, headers = {} } = {}) {
    const res = await fetch(new URL(`api/v1/${apiPath}`, this.url), {
      method,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const err = new Error(`${method} ${apiPath}: ${res.status} ${text}`);
      err.status = res.status;
      err.body = json;
      throw err;
    }
    return json;
  }

  /** Signs up a fresh user; returns the login grant (`access_token`, `refresh_token`, `user`). */
  async user(prefix = 'u') {
    const username = `${prefix}${Math.random().toString(36).slice(2, 10)}`;
    const password = 'correct-horse-battery';
    await this.http('POST', 'auth/signup', { body: { username, password } });
    const grant = await this.http('POST', 'auth/login', { body: { username, password } });
    return { ...grant, username, password };
  }

  async channel(owner, name = 'general') {
    const c = await this.http('POST', 'channels', { token: owner.access_token, body: { name } });
    return c;
  }

  async addMember(owner, channelId, member) {
    return this.http('POST', `channels/${channelId}/members`, { token: owner.access_token, body: { kind: 'user', id: member.user.id } });
  }

  async messages(user, channelId, query = 'limit=200') {
    return (await this.http('GET', `channels/${channelId}/messages?${query}`, { token: user.access_token })).messages;
  }

  /** Publishes events through the server API (a server key from the config). */
  async publish(items) {
    const body = { items: items.map(([channel, event, data]) => ({ channel, event, data })) };
    const res = await this.http('POST', 'publish/batch', { body, headers: { 'x-api-key': SERVER_KEY } });
    for (const r of res.results) if (r.error) throw new Error(`publish: ${JSON.stringify(r.error)}`);
    return res.results;
  }

  /** Makes `user` an administrator (a fresh account made by the CLI). */
  async admin(prefix = 'admin') {
    const username = `${prefix}${Math.random().toString(36).slice(2, 8)}`;
    const password = 'correct-horse-battery';
    await new Promise((resolve, reject) => {
      const child = spawn(chorusBinary(), ['admin', 'create-user', '--username', username, '--password-stdin', '--config', path.join(this.dir, 'chorus.toml')], { stdio: ['pipe', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      child.stdin.end(`${password}\n`);
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`create-user: ${err}`))));
    });
    const grant = await this.http('POST', 'auth/login', { body: { username, password } });
    return { ...grant, username, password };
  }
}

/** The events of one agent run, as the runtime will publish them (PROTOCOL.md run events). */
export function runEvents(channel, { runId, agentId, model = 'demo', thought = 'Let me think.', text = ['Hello', ' **world**', '\n\n```js\nconst x = 1;\n```'], tool = true, end = 'completed', messageId = `${runId}-answer` } = {}) {
  const base = { run_id: runId, thread_id: channel, agent_id: agentId };
  let seq = 0;
  const ev = (type, data) => [channel, type, { ...base, seq: ++seq, ...data }];
  const events = [ev('agent_started', { model, provider: 'demo', trigger_message_id: 'trigger', triggered_by: 'someone', hop: 0 }), ev('agent_thinking', { thought })];
  if (tool) {
    events.push(ev('tool_executing', { call_id: 'c1', tool: 'clock', arguments: { zone: 'UTC' } }));
    events.push(ev('tool_completed', { call_id: 'c1', tool: 'clock', result: { now: '2026-12-05T10:00:00Z' }, is_error: false, duration_ms: 12 }));
  }
  for (const delta of text) events.push(ev('agent_text_delta', { delta, message_id: messageId }));
  if (end === 'completed') {
    events.push(ev('agent_completed', { text: text.join(''), message_id: messageId, finish_reason: 'stop', usage: { input_tokens: 12, output_tokens: 7, estimated: false }, cost_usd: 0.0021, model }));
  } else if (end) {
    // `error` too: the publish schema before the agent runtime requires it; the runtime's ignores it.
    events.push(ev('agent_error', { code: end, error: end, message: `run ended: ${end}`, retryable: false, message_id: messageId, text: text.join('') }));
  }
  return events;
}

/**
 * A TCP proxy in front of the server: `cut()` drops every connection and
 * refuses new ones (a network outage: clients see 1006), `restore()` ends it.
 */
export async function tcpProxy(targetPort) {
  const sockets = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    port,
    url: `http://127.0.0.1:${port}/`,
    cut() {
      refusing = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      refusing = false;
    },
    close() {
      refusing = true;
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Waits until `check()` is truthy (polling every 20 ms), or fails after `ms`:
 * a bound on a hang, not a speed target (generous for a loaded machine).
 */
export async function until(check, ms = 20000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the next `event` of `emitter` (an SDK object with `on`). */
export function next(emitter, event, predicate = () => true, ms = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    const off = emitter.on(event, (payload) => {
      if (!predicate(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}
