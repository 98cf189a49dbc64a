// Every page of the UI in a real browser: sign-up from the keyboard, the
// channel's history, unread counts and editing, members and typing, agents
// with the server's validation, sessions, administration. Axe runs on each.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { TestServer, until } from '../harness.mjs';
import { axe, launch, openPage, openUi, shownTexts, signedInContext } from '../browser.mjs';

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

async function post(user, channelId, text) {
  return server.http('POST', `channels/${channelId}/messages`, { token: user.access_token, body: { text } });
}

describe('accounts', () => {
  it('signs up, makes a channel and sends a message with the keyboard alone; axe finds nothing serious', async () => {
    const ctx = await chrome.browser.newContext();
    const page = await openPage(ctx, server.url);
    await page.getByLabel('Username').waitFor();
    assert.deepEqual(await axe(page), [], 'sign-in page');
    // Tab to "Create an account" and follow it.
    await page.getByRole('link', { name: 'Create an account' }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Create an account' }).waitFor();
    assert.deepEqual(await axe(page), [], 'sign-up page');
    await page.getByLabel('Username').focus();
    await page.keyboard.type(`kb${Date.now().toString(36)}`);
    await page.keyboard.press('Tab');
    await page.keyboard.type('correct-horse-1');
    await page.keyboard.press('Enter');
    await page.locator('[data-connection="connected"]').waitFor();
    await page.getByRole('button', { name: '+ New channel' }).focus();
    await page.keyboard.press('Enter');
    // The form's field takes the focus.
    await until(() => page.evaluate(() => document.activeElement?.id === 'new-channel-name'), undefined, 'focus in the new form');
    await page.keyboard.type('keyboard');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: '# keyboard' }).waitFor();
    await page.locator('[role="log"][data-state="live"]').waitFor({ state: 'attached' });
    await page.getByRole('textbox', { name: 'Message #keyboard' }).focus();
    await page.keyboard.type('typed **here**');
    await page.keyboard.press('Enter');
    await page.locator('[role="log"] [data-message-id]', { hasText: 'typed here' }).waitFor();
    // Edit it from the keyboard: the Edit button, the field, Enter.
    await page.getByRole('button', { name: /^Edit message/ }).focus();
    await page.keyboard.press('Enter');
    // The edit field takes the focus once it is rendered.
    await until(() => page.evaluate(() => Boolean(document.activeElement?.closest('form.edit'))), undefined, 'focus in the edit field');
    await page.keyboard.press('ControlOrMeta+a');
    await page.keyboard.type('edited by keyboard');
    await page.keyboard.press('Enter');
    await page.locator('[role="log"] [data-message-id]', { hasText: 'edited by keyboard' }).waitFor();
    assert.deepEqual(await axe(page), [], 'channel page');
    // Sign out.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to Chorus' }).waitFor();
    assert.deepEqual(page.problems, []);
    await ctx.close();
  });

  it('lists the sessions and revokes one', async () => {
    const user = await server.user('sess');
    const other = await server.http('POST', 'auth/login', { body: { username: user.username, password: user.password } });
    const ctx = await signedInContext(chrome.browser, server, user);
    const page = await openUi(ctx, server, '#/sessions');
    const rows = page.locator('[data-session]');
    await until(async () => (await rows.count()) === 2, undefined, 'two sessions');
    assert.equal(await page.locator(`[data-session="${user.session_id}"]`, { hasText: 'this one' }).count(), 1);
    assert.deepEqual(await axe(page), []);
    await page.locator(`[data-session="${other.session_id}"]`).getByRole('button', { name: /^Revoke/ }).click();
    await until(async () => (await rows.count()) === 1, undefined, 'one session left');
    await assert.rejects(server.http('GET', 'me', { token: other.access_token }), (e) => e.status === 401);
    await ctx.close();
  });
});

describe('channel', () => {
  it('pages back through history, marks new messages, jumps to the latest, counts unread elsewhere', async () => {
    const alice = await server.user('hist');
    const bob = await server.user('hbob');
    const channel = await server.channel(alice, 'history');
    const other = await server.channel(alice, 'other');
    await server.addMember(alice, channel.id, bob);
    await server.addMember(alice, other.id, bob);
    for (let i = 1; i <= 70; i++) await post(bob, channel.id, `h${i}`);
    const ctx = await signedInContext(chrome.browser, server, alice);
    const page = await openUi(ctx, server, `#/c/${channel.id}`);
    await until(async () => (await shownTexts(page)).length === 50, undefined, 'the newest page');
    assert.equal((await shownTexts(page))[0], 'h21');
    // Scrolling to the top fetches the older page.
    await page.locator('.scroller').evaluate((el) => {
      el.scrollTop = 0;
    });
    await until(async () => (await shownTexts(page)).length === 70, undefined, 'the older page');
    assert.equal((await shownTexts(page))[0], 'h1');
    await page.getByText('This is the beginning of #history.').waitFor();

    // Scrolled up, a new message offers a jump to it.
    await page.locator('.scroller').evaluate((el) => {
      el.scrollTop = 0;
    });
    await post(bob, channel.id, 'while scrolled up');
    const jump = page.getByRole('button', { name: /Jump to latest \(1 new\)/ });
    await jump.waitFor();
    await jump.click();
    await until(() => page.locator('.scroller').evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 48), undefined, 'at the bottom');

    // Messages in another channel count as unread there.
    await post(bob, other.id, 'o1');
    await post(bob, other.id, 'o2');
    // (The browser puts a space before the hidden ", 2 unread".)
    const otherLink = page.getByRole('link', { name: /^other ?, 2 unread$/ });
    await otherLink.waitFor();
    assert.deepEqual(await axe(page), []);
    await otherLink.click();
    // Opening it shows the divider before the first one and clears the count.
    await page.getByRole('separator', { name: 'New messages' }).waitFor();
    const order = await page.locator('[role="log"] > *').evaluateAll((els) => els.map((e) => (e.getAttribute('role') === 'separator' ? '|' : e.textContent.includes('o1') ? 'o1' : e.textContent.includes('o2') ? 'o2' : '?')));
    assert.deepEqual(order, ['|', 'o1', 'o2']);
    await page.getByRole('link', { name: 'other', exact: true }).waitFor();
    assert.deepEqual(page.problems, []);
    await ctx.close();
  });

  it('edits and deletes one’s own messages; shows who is typing and who is online', async () => {
    const alice = await server.user('ed');
    const bob = await server.user('edb');
    const channel = await server.channel(alice, 'edits');
    await server.addMember(alice, channel.id, bob);
    await post(bob, channel.id, 'from bob');
    await post(alice, channel.id, 'first draft');
    await post(alice, channel.id, 'to be deleted');
    const a = await signedInContext(chrome.browser, server, alice);
    const b = await signedInContext(chrome.browser, server, bob);
    const pa = await openUi(a, server, `#/c/${channel.id}`);
    const pb = await openUi(b, server, `#/c/${channel.id}`);
    await until(async () => (await shownTexts(pa)).length === 3, undefined, 'history');
    // Only one's own messages can be edited.
    assert.equal(await pa.getByRole('button', { name: /^Edit message/ }).count(), 2);
    await pa.getByRole('button', { name: /^Edit message/ }).first().click();
    const field = pa.getByRole('textbox', { name: 'Edit message' });
    await field.fill('second draft');
    await pa.getByRole('button', { name: 'Save' }).click();
    await pb.locator('[data-message-id]', { hasText: 'second draft' }).waitFor();
    await pb.locator('[data-message-id]', { hasText: '(edited)' }).waitFor();
    await pa.getByRole('button', { name: /^Delete message/ }).last().click();
    await pa.getByRole('group', { name: 'Confirm delete' }).getByRole('button', { name: 'Delete' }).click();
    await pb.getByText('This message was deleted.').waitFor();

    // Typing shows on the other side, then goes.
    await pb.getByRole('textbox', { name: 'Message #edits' }).pressSequentially('hel');
    await pa.locator('[data-typing]', { hasText: `${bob.username} is typing…` }).waitFor();
    await pb.getByRole('textbox', { name: 'Message #edits' }).fill('');
    await pb.getByRole('textbox', { name: 'Message #edits' }).press('Backspace');
    await pa.locator('[data-typing]:empty').waitFor({ state: 'attached' });

    // Members: both online; bob leaves and shows offline.
    await pa.getByRole('button', { name: /^Members/ }).click();
    const panel = pa.getByRole('complementary', { name: 'Members' });
    await panel.locator(`[data-member="${bob.user.id}"]`, { hasText: 'online' }).waitFor();
    assert.equal(await panel.locator(`[data-member="${bob.user.id}"] .name`).textContent(), bob.username);
    // A person is added by username; an unknown one is refused at the field.
    const carol = await server.user('carol');
    await panel.getByLabel('Add a person by username').fill('nobody-here');
    await panel.getByRole('button', { name: 'Add' }).first().click();
    await panel.getByRole('alert').filter({ hasText: 'No user is called nobody-here.' }).waitFor();
    await panel.getByLabel('Add a person by username').fill(carol.username);
    await panel.getByRole('button', { name: 'Add' }).first().click();
    await panel.locator(`[data-member="${carol.user.id}"] .name`, { hasText: carol.username }).waitFor();
    assert.deepEqual(await axe(pa), []);
    await b.close();
    await panel.locator(`[data-member="${bob.user.id}"]`, { hasText: 'offline' }).waitFor();
    assert.deepEqual(pa.problems, []);
    await a.close();
  });
});

describe('agents', () => {
  it('creates, edits (the server’s validation at the field), adds to a channel and deletes an agent', async () => {
    const alice = await server.user('ag');
    const channel = await server.channel(alice, 'agents');
    const ctx = await signedInContext(chrome.browser, server, alice);
    const page = await openUi(ctx, server, '#/agents');
    await page.getByRole('button', { name: 'New agent' }).click();
    const form = page.getByRole('form', { name: 'New agent' });
    await form.getByLabel('Name').fill('Bad/Name');
    await form.getByLabel('Persona').fill('A patient helper who answers briefly.');
    await form.getByRole('button', { name: 'Create agent' }).click();
    const name = form.getByLabel('Name');
    await until(async () => (await name.getAttribute('aria-invalid')) === 'true', undefined, 'the name marked invalid');
    const described = await name.getAttribute('aria-describedby');
    const errorId = described.split(' ').find((id) => id.endsWith('-error'));
    assert.match(await page.locator(`#${errorId}`).textContent(), /letters, digits/);
    assert.deepEqual(await axe(page), [], 'form with an error');
    await name.fill('Helper');
    await form.getByLabel('Persona').fill('short');
    await form.getByRole('button', { name: 'Create agent' }).click();
    await until(async () => (await form.getByLabel('Persona').getAttribute('aria-invalid')) === 'true', undefined, 'the persona marked invalid');
    await form.getByLabel('Persona').fill('A patient helper who answers briefly.');
    await form.getByLabel('Tools').fill('clock');
    await form.getByRole('button', { name: 'Create agent' }).click();
    const card = page.locator('[data-agent="Helper"]');
    await card.waitFor();
    assert.match(await card.textContent(), /clock/);

    await card.getByRole('button', { name: 'Edit' }).click();
    const edit = page.getByRole('form', { name: 'Edit Helper' });
    // The server's verdict on "while busy" lands at that field (here a value the form does not offer).
    const busy = edit.getByLabel('While busy, a new message');
    assert.equal(await busy.inputValue(), 'enqueue');
    await busy.evaluate((el) => {
      el.options[2].value = 'sometimes';
    });
    await busy.selectOption('sometimes');
    await edit.getByRole('button', { name: 'Save' }).click();
    await until(async () => (await busy.getAttribute('aria-invalid')) === 'true', undefined, 'on_busy marked invalid');
    const busyError = (await busy.getAttribute('aria-describedby')).split(' ').find((id) => id.endsWith('-error'));
    assert.match(await page.locator(`#${busyError}`).textContent(), /must be `enqueue`, `reject` or `interrupt` \(got "sometimes"\)/);
    assert.deepEqual(await axe(page), [], 'on_busy with an error');
    await busy.evaluate((el) => {
      el.options[2].value = 'interrupt';
    });
    await busy.selectOption('interrupt');
    await edit.getByLabel('Answers').selectOption('always');
    await edit.getByRole('button', { name: 'Save' }).click();
    await card.getByText('always').waitFor();
    await card.locator('[data-on-busy="interrupt"]', { hasText: 'stops the current answer' }).waitFor();
    const saved = await server.http('GET', 'agents', { token: alice.access_token });
    assert.equal(saved.agents[0].on_busy, 'interrupt');

    await card.getByLabel('Add Helper to a channel').selectOption(channel.id);
    await card.getByRole('button', { name: 'Add' }).click();
    await card.getByText('Added to #agents.').waitFor();
    const members = await server.http('GET', `channels/${channel.id}/members`, { token: alice.access_token });
    assert.equal(members.members.filter((m) => m.kind === 'agent').length, 1);
    assert.deepEqual(await axe(page), [], 'agents page');

    await card.getByRole('button', { name: 'Delete' }).click();
    await card.getByRole('group', { name: 'Confirm delete' }).getByRole('button', { name: 'Delete' }).click();
    await page.getByText('No agents yet.').waitFor();
    assert.deepEqual(page.problems, []);
    await ctx.close();
  });
});

describe('admin', () => {
  it('shows connections, disconnects a user, switches maintenance mode, streams the firehose', async () => {
    const admin = await server.admin();
    const bob = await server.user('victim');
    const channel = await server.channel(bob, 'watched');
    const b = await signedInContext(chrome.browser, server, bob);
    const pb = await openUi(b, server, `#/c/${channel.id}`);
    const ctx = await signedInContext(chrome.browser, server, admin);
    const page = await openUi(ctx, server, '#/admin');
    await page.locator(`[data-connection-user="${bob.user.id}"]`).waitFor();
    assert.deepEqual(await axe(page), [], 'admin page');

    // The firehose shows events as they pass.
    await page.getByRole('button', { name: 'Start' }).click();
    await page.getByText(/Streaming from node/).waitFor();
    await post(bob, channel.id, 'seen by the firehose');
    await page.getByRole('list', { name: 'Firehose events' }).getByText('message_created').first().waitFor();

    // Maintenance: on, bob's send is refused with the message, off again.
    await page.getByLabel('Message shown to users').fill('back at 10:30');
    await page.getByRole('button', { name: 'Turn on' }).click();
    await page.locator('[data-maintenance="on"]').waitFor();
    await pb.getByRole('textbox', { name: 'Message #watched' }).fill('during maintenance');
    await pb.getByRole('textbox', { name: 'Message #watched' }).press('Enter');
    await pb.locator('[data-outbox="failed"]').waitFor();
    await pb.locator('[data-banner="maintenance"]', { hasText: 'back at 10:30' }).waitFor();
    assert.deepEqual(await axe(pb), [], 'banner and failed message');
    await page.getByRole('button', { name: 'Turn off' }).click();
    await page.locator('[data-maintenance="off"]').waitFor();
    await pb.locator('[data-outbox="failed"]').getByRole('button', { name: 'Retry' }).click();
    await pb.locator('[role="log"] [data-message-id]', { hasText: 'during maintenance' }).waitFor();

    // Disconnect bob: his page says so and stays disconnected.
    await page.locator(`[data-connection-user="${bob.user.id}"]`).first().getByRole('button', { name: /^Disconnect/ }).click();
    await pb.locator('[data-banner="admin"]').waitFor();
    assert.equal(await pb.locator('[data-connection="stopped"]').count(), 1);
    assert.deepEqual(page.problems, []);
    await ctx.close();
    await b.close();
  });
});
