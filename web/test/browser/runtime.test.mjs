// Real agent runs in the browser: the agent runtime's offline demo model
// answers a mention with its thinking, a tool call and a streamed answer,
// and Stop cancels a run that streams slowly. Needs a server with the agent
// runtime (the `[agents]` section; issue 12).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { TestServer, until } from '../harness.mjs';
import { axe, launch, openUi, shownTexts, signedInContext } from '../browser.mjs';

/** `[agents]` with the demo model at `tokensPerSecond` (0: unpaced). */
function agentsSection(tokensPerSecond) {
  return `[agents]
enabled = true
channel_runs_per_minute = 0
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

/** A user, a channel, an agent of theirs in it (answers mentions), and a signed-in page there. */
async function roomWithAgent(server, name) {
  const alice = await server.user('alice');
  const channel = await server.channel(alice, 'agents');
  const agent = await server.http('POST', 'agents', {
    token: alice.access_token,
    body: { name, persona: 'A helper that answers briefly.', model: 'demo', tools: ['calculator', 'clock'], response_policy: 'mention' },
  });
  await server.http('POST', `channels/${channel.id}/members`, { token: alice.access_token, body: { kind: 'agent', id: agent.id } });
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
});
