// The chat in a real browser against a real server: two people talking,
// a cut connection, a restart, offline sends, short tokens, a fourth tab,
// hostile messages, and agent runs.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { TestServer, runEvents, until } from '../harness.mjs';
import { axe, launch, openPage, openUi, ready, reconnect, shownTexts, signedInContext, socketSwitch } from '../browser.mjs';

let server;
let chrome;
before(async () => {
  server = await new TestServer().start();
  chrome = await launch();
});
after(async () => {
  await chrome?.close();
  await server?.dispose();
});

/** Two users, a channel they share, and a signed-in context for each. */
async function pair() {
  const alice = await server.user('alice');
  const bob = await server.user('bob');
  const channel = await server.channel(alice, 'team');
  await server.addMember(alice, channel.id, bob);
  const a = await signedInContext(chrome.browser, server, alice);
  const b = await signedInContext(chrome.browser, server, bob);
  return { alice, bob, channel, a, b, hash: `#/c/${channel.id}` };
}

async function send(page, text) {
  const box = page.getByRole('textbox', { name: /^Message #/ });
  await box.fill(text);
  await box.press('Enter');
}

describe('chat', () => {
  // The 1 s and 2 s are latency targets: they belong in benchmarks, not
  // in tests run on a loaded machine; these tests check what arrives, in what order.
  it('two people see each other’s messages, in the same order', async () => {
    const { a, b, hash } = await pair();
    const pa = await openUi(a, server, hash);
    const pb = await openUi(b, server, hash);
    const texts = ['one', 'two', 'three', 'four'];
    for (const [i, text] of texts.entries()) {
      const from = i % 2 ? pb : pa;
      const to = i % 2 ? pa : pb;
      await send(from, text);
      await to.locator('[role="log"] [data-message-id]', { hasText: text }).waitFor();
    }
    assert.deepEqual(await shownTexts(pa), texts);
    assert.deepEqual(await shownTexts(pb), texts);
    assert.deepEqual([...pa.problems, ...pb.problems], []);
    await a.close();
    await b.close();
  });

  it('a message written offline shows as pending, then is delivered once', async () => {
    const { alice, channel, a, hash } = await pair();
    const pa = await openPage(a);
    const sw = await socketSwitch(pa);
    await pa.goto(`${server.url}${hash}`);
    await ready(pa, hash);
    sw.cut();
    await pa.locator('[data-banner="reconnecting"]').waitFor();
    await send(pa, 'written offline');
    await pa.locator('[data-outbox="pending"]', { hasText: 'written offline' }).waitFor();
    sw.restore();
    await reconnect(pa);
    await pa.locator('[role="log"] [data-message-id]', { hasText: 'written offline' }).waitFor();
    assert.equal(await pa.locator('[data-outbox]').count(), 0);
    assert.deepEqual(await shownTexts(pa), ['written offline']);
    const stored = await server.messages(alice, channel.id);
    assert.deepEqual(stored.map((m) => m.text), ['written offline']);
    await a.close();
  });

  it('a hostile message renders inert', async () => {
    const { a, b, hash } = await pair();
    const pa = await openUi(a, server, hash);
    const pb = await openUi(b, server, hash);
    const hostile = [
      '<img src=x onerror="window.__pwned=1">',
      '[click me](javascript:window.__pwned=2)',
      '<script>window.__pwned=3</script>',
      '<a href="#" onclick="window.__pwned=4">x</a> <style>body{display:none}</style>',
      '![pixel](http://127.0.0.1:9/track.png)',
    ].join('\n\n');
    await send(pb, hostile);
    const row = pa.locator('[role="log"] [data-message-id]').last();
    await row.waitFor();
    for (const link of await row.locator('a').all()) {
      const href = (await link.getAttribute('href')) ?? '';
      assert.ok(!/^javascript:/i.test(href), href);
      await link.click({ modifiers: ['Control'] }).catch(() => {});
    }
    assert.equal(await row.locator('img, script, style, [onerror], [onclick]').count(), 0);
    assert.equal(await pa.evaluate(() => window.__pwned), undefined);
    assert.match(await row.innerText(), /<img src=x onerror=/);
    assert.deepEqual([...pa.problems, ...pb.problems], []);
    await a.close();
    await b.close();
  });
});

describe('agent runs', () => {
  it('a run shows its thinking, tool cards and streamed text in order, as one card inside the log', async () => {
    const { channel, a, hash } = await pair();
    const pa = await openUi(a, server, hash);
    const base = { run_id: 'run-ui', thread_id: channel.stream, agent_id: 'agent-ui' };
    let seq = 0;
    const ev = (type, data) => server.publish([[channel.stream, type, { ...base, seq: ++seq, ...data }]]);
    await ev('agent_started', { model: 'demo', provider: 'demo', hop: 0 });
    const card = pa.locator('[role="log"] [data-run-id="run-ui"]');
    await card.waitFor();
    assert.equal(await card.getAttribute('aria-busy'), 'true');
    await ev('agent_thinking', { thought: 'The user wants the time.' });
    await ev('tool_executing', { call_id: 'c1', tool: 'clock', arguments: { zone: 'UTC' } });
    await card.locator('[data-tool-status="running"]').waitFor();
    await ev('tool_completed', { call_id: 'c1', tool: 'clock', result: { now: '10:00' }, duration_ms: 5 });
    await card.locator('[data-tool-status="done"]').waitFor();
    await ev('agent_text_delta', { message_id: 'msg-ui', delta: 'It is **10:00**.\n\n```js\nconst t = "10' });
    // The unfinished fence is closed while streaming: already a code block.
    await card.locator('pre code', { hasText: 'const t' }).waitFor();
    const order = await card.evaluate((el) =>
      [...el.querySelectorAll('.thinking, .tool, .md')].map((n) => (n.classList.contains('thinking') ? 'thinking' : n.classList.contains('tool') ? 'tool' : 'text')),
    );
    assert.deepEqual(order, ['thinking', 'tool', 'text']);
    assert.equal(await card.locator('.thought').textContent(), 'The user wants the time.');
    assert.equal(await card.getByRole('button', { name: 'Stop' }).count(), 1);
    await ev('agent_text_delta', { message_id: 'msg-ui', delta: ':00";\n```' });
    await ev('agent_completed', { text: 'It is **10:00**.\n\n```js\nconst t = "10:00";\n```', message_id: 'msg-ui', finish_reason: 'stop', usage: { input_tokens: 20, output_tokens: 9, estimated: false }, cost_usd: 0.0004, model: 'demo' });
    await pa.locator('[data-run-id="run-ui"][data-run-status="completed"]').waitFor();
    assert.equal(await card.getAttribute('aria-busy'), 'false');
    assert.match(await card.locator('.usage').textContent(), /20 tokens in · 9 out · \$0\.00040/);
    assert.equal(await card.getByRole('button', { name: 'Stop' }).count(), 0);
    assert.equal(await pa.locator('[data-run-id="run-ui"]').count(), 1);
    assert.deepEqual(await axe(pa), []);
    assert.deepEqual(pa.problems, []);
    await a.close();
  });

  it('when the run’s answer is stored, its card becomes that message: same element, no duplicate', async () => {
    // The client half: the agent runtime stores the answer and publishes
    // its message_created; here that event is handed to the page's
    // subscription as the server will send it.
    const { channel, a, hash } = await pair();
    const pa = await openUi(a, server, hash);
    for (const event of runEvents(channel.stream, { runId: 'run-store', agentId: 'agent-st', text: ['Stored ', 'answer.'], messageId: 'msg-store' })) {
      await server.publish([event]);
    }
    const card = pa.locator('[data-run-id="run-store"][data-run-status="completed"]');
    await card.waitFor();
    await card.evaluate((el) => {
      el.__seen = true;
    });
    await pa.evaluate(
      ({ id, stream }) => {
        const model = window.chorusApp.channels.get(id);
        const message = { id: 'msg-store', channel_id: id, seq: 1, author: { kind: 'agent', id: 'agent-st' }, text: 'Stored answer.', created_at: new Date().toISOString(), run_id: 'run-store' };
        model.sub.deliver({ type: 'message_created', channel: stream, offset: 0, epoch: 'x', timestamp: message.created_at, data: { message } });
      },
      { id: channel.id, stream: channel.stream },
    );
    await pa.locator('[data-run-id="run-store"][data-message-id="msg-store"]').waitFor();
    assert.equal(await pa.locator('[data-run-id="run-store"]').count(), 1);
    assert.equal(await pa.locator('[role="log"] [data-message-id="msg-store"]').count(), 1);
    assert.equal(await pa.locator('[data-run-id="run-store"]').evaluate((el) => el.__seen === true), true);
    assert.deepEqual(await shownTexts(pa), ['Stored answer.']);
    await a.close();
  });

  it('Stop sends cancel_run for the run and shows the server’s answer', async () => {
    const { channel, a, hash } = await pair();
    const pa = await openPage(a);
    const frames = [];
    await pa.routeWebSocket(/\/ws$/, (ws) => {
      const upstream = ws.connectToServer();
      ws.onMessage((m) => {
        frames.push(String(m));
        upstream.send(m);
      });
      upstream.onMessage((m) => ws.send(m));
    });
    await pa.goto(`${server.url}${hash}`);
    await ready(pa, hash);
    await server.publish([[channel.stream, 'agent_started', { run_id: 'run-stop', thread_id: channel.stream, agent_id: 'agent-s', seq: 1 }]]);
    const card = pa.locator('[data-run-id="run-stop"]');
    await card.getByRole('button', { name: 'Stop' }).click();
    await until(() => frames.some((f) => f.includes('"cancel_run"')), undefined, 'cancel_run');
    const command = JSON.parse(frames.find((f) => f.includes('"cancel_run"')));
    assert.equal(command.run_id, 'run-stop');
    // No such run (published by hand), or no agent runtime to ask: the server refuses and the card says so.
    await card.getByRole('alert').waitFor();
    await a.close();
  });
});

describe('connection', () => {
  it('a server restart (new epoch) makes the page refetch, with no duplicate', async () => {
    const { alice, bob, channel, a, hash } = await pair();
    for (const text of ['r1', 'r2', 'r3']) await server.http('POST', `channels/${channel.id}/messages`, { token: bob.access_token, body: { text } });
    const pa = await openUi(a, server, hash);
    await until(async () => (await shownTexts(pa)).length === 3, undefined, 'history');
    await server.restart();
    await pa.locator('[data-banner="reloaded"]').waitFor({ timeout: 15000 });
    await pa.locator('[data-connection="connected"]').waitFor();
    await server.http('POST', `channels/${channel.id}/messages`, { token: bob.access_token, body: { text: 'after' } });
    await pa.locator('[data-message-id]', { hasText: 'after' }).waitFor();
    assert.deepEqual(await shownTexts(pa), ['r1', 'r2', 'r3', 'after']);
    assert.ok(alice);
    await a.close();
  });

  it('a fourth tab leaves three connected; the evicted one does not reconnect by itself', async () => {
    const { a, hash } = await pair();
    const pages = [];
    for (let i = 0; i < 4; i++) pages.push(await openUi(a, server, hash));
    await pages[0].locator('[data-banner="replaced"]').waitFor();
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await pages[0].locator('[data-connection="stopped"]').count(), 1);
    for (const p of pages.slice(1)) assert.equal(await p.locator('[data-connection="connected"]').count(), 1);
    assert.deepEqual(await axe(pages[0]), []);
    // "Use here" takes the connection back (and evicts the oldest of the others).
    await pages[0].getByRole('button', { name: 'Use here' }).click();
    await pages[0].locator('[data-connection="connected"]').waitFor();
    await pages[1].locator('[data-banner="replaced"]').waitFor();
    await a.close();
  });
});

describe('short tokens', () => {
  let short;
  before(async () => {
    short = await new TestServer({ chat: { access_token_ttl: '3s' }, auth: { leeway: '1s' } }).start();
  });
  after(async () => {
    await short?.dispose();
  });

  it('a token lifetime of a few seconds does not drop the connection', async () => {
    const alice = await short.user('alice');
    const channel = await short.channel(alice);
    const ctx = await signedInContext(chrome.browser, short, alice);
    const page = await openUi(ctx, short, `#/c/${channel.id}`);
    await page.evaluate(() => {
      window.__drops = 0;
      window.chorusApp.chorus.on('disconnected', () => window.__drops++);
    });
    await new Promise((r) => setTimeout(r, 8000));
    assert.equal(await page.evaluate(() => window.__drops), 0);
    await send(page, 'still here');
    await page.locator('[role="log"] [data-message-id]', { hasText: 'still here' }).waitFor();
    await ctx.close();
  });
});
