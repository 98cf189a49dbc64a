// Real agent runs in the browser: the agent runtime's offline demo model
// answers a mention with its thinking, a tool call and a streamed answer;
// Stop cancels a run that streams slowly; a page whose connection is cut
// while messages and a run go by catches up on all of it, the run once; the
// loop guard's stop of an agent chain is shown. Needs a server with the
// agent runtime (the `[agents]` section; issue 12).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { TestServer, until } from '../harness.mjs';
import { axe, launch, openPage, openUi, ready, reconnect, shownTexts, signedInContext, socketSwitch } from '../browser.mjs';

/**
 * `[agents]` with the demo model at `tokensPerSecond` (0: unpaced). No
 * agent-to-agent hop: an agent's answer that mentions another agent is
 * stopped by the loop guard at once.
 */
function agentsSection(tokensPerSecond) {
  return `[agents]
enabled = true
channel_runs_per_minute = 0
max_hops = 0
[[agents.models]]
name = "demo"
provider = "demo"
model = "demo"
tokens_per_second = ${tokensPerSecond}
`;
}

let fast;
let slow;
let chrome;
before(async () => {
  [fast, slow] = await Promise.all([new TestServer({ extra: agentsSection(40) }).start(), new TestServer({ extra: agentsSection(4) }).start()]);
  chrome = await launch();
});
after(async () => {
  await chrome?.close();
  await Promise.all([fast?.dispose(), slow?.dispose()]);
});

/** An agent of `owner`'s (answers mentions) made a member of `channel`. */
async function agentIn(server, owner, channel, name, tools = ['calculator', 'clock']) {
  const agent = await server.http('POST', 'agents', {
    token: owner.access_token,
    body: { name, persona: 'A helper that answers briefly.', model: 'demo', tools, response_policy: 'mention' },
  });
  await server.http('POST', `channels/${channel.id}/members`, { token: owner.access_token, body: { kind: 'agent', id: agent.id } });
  return agent;
}

/** A user, a channel, an agent of theirs in it (answers mentions), and a signed-in page there. */
async function roomWithAgent(server, name) {
  const alice = await server.user('alice');
  const channel = await server.channel(alice, 'agents');
  const agent = await agentIn(server, alice, channel, name);
  const context = await signedInContext(chrome.browser, server, alice);
  const page = await openUi(context, server, `#/c/${channel.id}`);
  return { alice, channel, agent, context, page };
}

async function send(page, text) {
  const box = page.getByRole('textbox', { name: /^Message #/ });
  await box.fill(text);
  await box.press('Enter');
}

/** The kinds of a card's timeline entries, in document order. */
function timeline(card) {
  return card.evaluate((el) =>
    [...el.querySelectorAll('.thinking, .tool, .md')].map((n) => (n.classList.contains('thinking') ? 'thinking' : n.classList.contains('tool') ? 'tool' : 'text')),
  );
}

describe('agent runs with the runtime', () => {
  it('a mention runs the demo agent: thinking, a tool card and the streamed answer in order, then the stored message once', async () => {
    const { context, page } = await roomWithAgent(fast, 'Helper');
    await send(page, '@Helper what is 12*(3+4)?');
    const card = page.locator('[role="log"] article.run');
    await card.first().waitFor();
    const runId = await card.first().getAttribute('data-run-id');
    const done = page.locator(`[data-run-id="${runId}"][data-run-status="completed"]`);
    await done.waitFor();
    // The stored answer replaced the live card in place: one element, with the message's id.
    await page.locator(`[data-run-id="${runId}"][data-message-id]`).waitFor();
    assert.equal(await page.locator(`[data-run-id="${runId}"]`).count(), 1);
    // Two model turns: reasoning and the calculator call, then reasoning over its result and the answer.
    assert.deepEqual(await timeline(done), ['thinking', 'tool', 'thinking', 'text']);
    assert.match(await done.locator('.author').textContent(), /Helper/);
    assert.equal(await done.locator('.model').textContent(), 'demo');
    const tool = done.locator('.tool');
    assert.equal(await tool.getAttribute('data-tool-status'), 'done');
    assert.equal(await tool.locator('.tool-name').textContent(), 'calculator');
    await tool.locator('summary').click();
    assert.match(await tool.locator('pre').first().textContent(), /12\*\(3\+4\)/);
    assert.match(await tool.locator('pre').nth(1).textContent(), /84/);
    assert.match(await done.locator('.md').last().textContent(), /84/);
    assert.match(await done.locator('.usage').textContent(), /tokens in · \d+ out/);
    assert.equal(await done.getAttribute('aria-busy'), 'false');
    assert.equal(await done.getByRole('button', { name: 'Stop' }).count(), 0);
    // The question and the answer, each once.
    const texts = await shownTexts(page);
    assert.equal(texts.length, 2, JSON.stringify(texts));
    assert.equal(texts[0], '@Helper what is 12*(3+4)?');
    assert.deepEqual(await axe(page), []);
    assert.deepEqual(page.problems, []);
    await context.close();
  });

  it('Stop cancels a streaming run: the card ends "Stopped", keeping what was streamed, once', async () => {
    const { alice, channel, context, page } = await roomWithAgent(slow, 'Slowpoke');
    await send(page, '@Slowpoke please repeat this rather long sentence back to me slowly, word after word, so that there is time to stop you');
    const card = page.locator('[role="log"] article.run');
    await card.first().waitFor();
    const runId = await card.first().getAttribute('data-run-id');
    const live = page.locator(`[data-run-id="${runId}"]`);
    // Some of the answer has streamed: the run is going.
    await until(async () => ((await live.locator('.md').allTextContents()).join('').trim().length > 0), undefined, 'the first text');
    assert.equal(await live.getAttribute('aria-busy'), 'true');
    await live.getByRole('button', { name: 'Stop' }).click();
    const stopped = page.locator(`[data-run-id="${runId}"][data-run-status="cancelled"]`);
    await stopped.waitFor();
    assert.equal(await stopped.locator('[data-status]').textContent(), 'Stopped');
    assert.equal(await stopped.getByRole('button', { name: 'Stop' }).count(), 0);
    assert.equal(await stopped.getByRole('alert').count(), 0);
    assert.equal(await stopped.getAttribute('aria-busy'), 'false');
    // The partial answer is kept as the agent's message, shown once.
    const run = await slow.http('GET', `runs/${runId}`, { token: alice.access_token });
    assert.equal(run.status, 'cancelled');
    assert.equal(run.error.code, 'cancelled');
    const stored = (await slow.messages(alice, channel.id)).find((m) => m.run_id === runId);
    assert.ok(stored, 'the partial answer is stored');
    await page.locator(`[data-run-id="${runId}"][data-message-id="${stored.id}"]`).waitFor();
    assert.equal(await page.locator(`[data-run-id="${runId}"]`).count(), 1);
    const words = (t) => t.replace(/\s+/g, ' ').trim();
    assert.equal(words((await stopped.locator('.md').allTextContents()).join(' ')), words(stored.text));
    assert.ok(!stored.text.includes('Configure a real model'), 'the answer was cut short');
    assert.deepEqual(page.problems, []);
    await context.close();
  });

  it('a cut connection shows "reconnecting" while messages and a run go by, then has every message and the whole run once', async () => {
    // Bob talks to alice's agent in a channel they share; alice's page is cut meanwhile.
    const alice = await fast.user('alice');
    const bob = await fast.user('bob');
    const channel = await fast.channel(alice, 'cut');
    await fast.addMember(alice, channel.id, bob);
    await agentIn(fast, alice, channel, 'Narrator', []);
    const hash = `#/c/${channel.id}`;
    const a = await signedInContext(chrome.browser, fast, alice);
    const b = await signedInContext(chrome.browser, fast, bob);
    const pa = await openPage(a);
    const sw = await socketSwitch(pa);
    await pa.goto(`${fast.url}${hash}`);
    await ready(pa, hash);
    const pb = await openUi(b, fast, hash);
    await send(pb, 'before the cut');
    await pa.locator('[data-message-id]', { hasText: 'before the cut' }).waitFor();

    sw.cut();
    await pa.locator('[data-banner="reconnecting"]').waitFor();
    const sent = ['@Narrator tell me about cables that get cut', 'm2', 'm3', 'm4', 'm5'];
    for (const text of sent) await send(pb, text);
    // The run streams on bob's page (which names alice's agent) while alice's is cut.
    const card = pb.locator('[role="log"] article.run').first();
    await card.waitFor();
    const runId = await card.getAttribute('data-run-id');
    assert.match(await card.locator('.author').textContent(), /Narrator/);
    const run = await until(async () => {
      const r = await fast.http('GET', `runs/${runId}`, { token: bob.access_token });
      return r.status === 'completed' && r;
    }, undefined, 'the run to complete');
    const stored = (await fast.messages(bob, channel.id)).find((m) => m.run_id === runId);
    assert.ok(stored, 'the answer is stored');
    await pb.locator(`[data-run-id="${runId}"][data-message-id="${stored.id}"]`).waitFor();
    assert.equal(await pa.locator('[data-banner="reconnecting"]').count(), 1, 'still cut');
    assert.equal(await pa.locator(`[data-run-id="${runId}"]`).count(), 0, 'nothing of the run reached the cut page');

    sw.restore();
    await reconnect(pa);
    await pa.locator('[data-banner="reconnecting"]').waitFor({ state: 'detached' });
    const done = pa.locator(`[data-run-id="${runId}"][data-run-status="completed"][data-message-id="${stored.id}"]`);
    await done.waitFor();
    await until(async () => (await shownTexts(pa)).length === sent.length + 2, undefined, 'every message');
    // The same conversation as on the page that was never cut: every message once, the run once.
    assert.deepEqual(await shownTexts(pa), await shownTexts(pb));
    assert.deepEqual((await shownTexts(pa)).slice(0, sent.length + 1), ['before the cut', ...sent]);
    assert.equal(await pa.locator(`[data-run-id="${runId}"]`).count(), 1);
    assert.equal(await pa.locator('[role="log"] article.run').count(), 1);
    const words = (t) => t.replace(/\s+/g, ' ').trim();
    assert.equal(words((await done.locator('.md').allTextContents()).join(' ')), words((await pb.locator(`[data-run-id="${runId}"] .md`).allTextContents()).join(' ')));
    assert.deepEqual(await timeline(done), await timeline(pb.locator(`[data-run-id="${runId}"]`)));
    assert.equal(await done.getAttribute('aria-busy'), 'false');
    assert.equal(run.message_id, stored.id);
    assert.equal(await pa.locator('[data-banner="reconnecting"]').count(), 0);
    assert.deepEqual([...pa.problems, ...pb.problems], []);
    await a.close();
    await b.close();
  });

  it('an agent chain the loop guard stops is announced in the conversation', async () => {
    const alice = await fast.user('alice');
    const channel = await fast.channel(alice, 'chain');
    await agentIn(fast, alice, channel, 'Ann', []);
    await agentIn(fast, alice, channel, 'Bob', []);
    const context = await signedInContext(chrome.browser, fast, alice);
    const page = await openUi(context, fast, `#/c/${channel.id}`);
    // The demo model quotes what it answers, so each answer mentions the other agent: hop 1, past the limit.
    await send(page, '@Ann @Bob ping');
    const notice = page.locator('[role="log"] [data-notice="agent_chain_limited"]');
    await notice.first().waitFor();
    assert.equal(await notice.first().getAttribute('data-reason'), 'hops');
    assert.match(await notice.first().textContent(), /(Ann|Bob) did not answer: agents answering one another reached the longest chain/);
    // Both runs end; nothing more starts.
    await until(async () => (await fast.http('GET', `channels/${channel.id}/runs?status=active`, { token: alice.access_token })).runs.length === 0, undefined, 'the runs to end');
    await until(async () => (await page.locator('[role="log"] article.run[data-message-id]').count()) === 2, undefined, 'both answers stored');
    const all = await fast.http('GET', `channels/${channel.id}/runs?status=all`, { token: alice.access_token });
    assert.equal(all.runs.length, 2);
    // A notice stands after the answer that would have started the next run.
    const after = await notice.first().evaluate((el) => el.previousElementSibling?.getAttribute('data-run-id') ?? null);
    assert.ok(all.runs.some((r) => r.id === after), 'after the answer that mentioned the other agent');
    assert.deepEqual(await axe(page), []);
    assert.deepEqual(page.problems, []);
    await context.close();
  });
});
