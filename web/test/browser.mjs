// Browser helpers for the UI tests: the system Chromium driven by
// playwright-core (never a downloaded browser), pages that fail the test on
// any console error or CSP violation, and axe checks.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { chromium } from 'playwright-core';

import { until } from './harness.mjs';

const require = createRequire(import.meta.url);

/** Chromium from the system packages (CHORUS_CHROMIUM overrides). */
export function chromiumPath() {
  return process.env.CHORUS_CHROMIUM ?? '/usr/bin/chromium';
}

/** Launches Chromium; playwright gives it a fresh, temporary profile of its own. */
export async function launch() {
  const browser = await chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return {
    browser,
    close: () => browser.close(),
  };
}

/**
 * A page whose console errors and CSP violations are collected in
 * `page.problems` (a test asserts it stays empty).
 */
export async function openPage(context, url) {
  const page = await context.newPage();
  page.problems = [];
  page.on('console', (msg) => {
    // Refusals the UI shows (400, 401, 404, 409, 503 in maintenance) are
    // logged by the browser too; they are not problems of the page.
    if (msg.type() === 'error' && !/^Failed to load resource: the server responded with a status of (4\d\d|503)/.test(msg.text())) {
      page.problems.push(`console: ${msg.text()}`);
    }
  });
  page.on('pageerror', (err) => page.problems.push(`page error: ${err.message}`));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  if (url) await page.goto(url);
  return page;
}

const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/**
 * Runs axe on the page (injected through the debugging protocol, which the
 * page's CSP does not govern) and returns the serious and critical violations.
 */
export async function axe(page) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // @ts-ignore injected above
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
  });
  return result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/**
 * A browser context signed in as `user` (a login grant from the harness),
 * its session seeded into local storage once, as the UI stores it.
 */
export async function signedInContext(browser, server, user) {
  const stored = {
    access_token: user.access_token,
    expires_at: user.expires_at,
    issued_at: Date.now(),
    refresh_token: user.refresh_token,
    session_id: user.session_id,
    user: user.user,
  };
  return browser.newContext({
    storageState: { cookies: [], origins: [{ origin: server.url.replace(/\/$/, ''), localStorage: [{ name: 'chorus.session', value: JSON.stringify(stored) }] }] },
  });
}

/** Opens the UI at `hash` and waits until it is connected. */
export async function openUi(context, server, hash = '') {
  const page = await openPage(context, `${server.url}${hash}`);
  await ready(page, hash);
  return page;
}

/** Waits until the page is connected and, on a channel, its stream is live. */
export async function ready(page, hash = '') {
  await page.locator('[data-connection="connected"]').waitFor();
  if (hash.startsWith('#/c/')) await page.locator('[role="log"][data-state="live"]').waitFor({ state: 'attached' });
}

/**
 * Lets a test cut the page's WebSocket: while cut, the page's socket is
 * closed and new ones are closed at once (the page sees the connection
 * drop); `restore()` lets the next attempt through to the server.
 */
export async function socketSwitch(page) {
  const live = new Set();
  let cut = false;
  await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    if (cut) {
      ws.close({ code: 1001, reason: 'cut by the test' });
      return;
    }
    const server = ws.connectToServer();
    const pair = { ws, server };
    live.add(pair);
    // With these handlers set, playwright no longer forwards a close: do it.
    ws.onClose((code, reason) => {
      live.delete(pair);
      server.close({ code, reason });
    });
    server.onClose((code, reason) => {
      live.delete(pair);
      ws.close({ code, reason });
    });
  });
  return {
    cut() {
      cut = true;
      for (const { ws, server } of live) {
        ws.close({ code: 1001, reason: 'cut by the test' });
        server.close();
      }
      live.clear();
    },
    restore() {
      cut = false;
    },
  };
}

/**
 * After `restore()`: presses "Retry now" while the page still waits for its
 * next attempt, until it is connected. The page may get there by itself
 * first (its backoff timer fired), and the button is gone while an attempt
 * is under way, so a single click could wait for a button that never returns.
 */
export async function reconnect(page) {
  const retry = page.getByRole('button', { name: 'Retry now' });
  await until(async () => {
    if (await page.locator('[data-connection="connected"]').count()) return true;
    if (await retry.count()) await retry.click({ timeout: 1000 }).catch(() => {});
    return false;
  }, 30000, 'the page to reconnect');
}

/** The texts of the stored messages the page shows, in order. */
export async function shownTexts(page) {
  return (await page.locator('[role="log"] [data-message-id] .md').allTextContents()).map((t) => t.trim());
}
