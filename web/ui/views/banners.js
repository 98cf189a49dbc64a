// Banners about the connection and the server: reconnecting (with "retry
// now"), reloaded after a gap, maintenance mode, opened in another window,
// disconnected by an administrator.

import { html, useEffect, useModel, useState } from '../lib.js';

function Countdown({ until }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(t);
  }, [until]);
  const s = Math.max(0, Math.ceil((until - now) / 1000));
  return s > 0 ? html` in ${s} s` : null;
}

export function Banners({ app }) {
  useModel(app);
  const chorus = app.chorus;
  const c = app.connection;
  const banners = [];
  if (c && chorus) {
    if (c.state === 'reconnecting' || (c.state === 'connecting' && app.everConnected)) {
      const until = c.state === 'reconnecting' ? app.reconnectAt : 0;
      banners.push(html`<div class="banner warn" role="status" data-banner="reconnecting">
        <span>Connection lost. Reconnecting${until ? html`<${Countdown} key=${until} until=${until} />` : '…'}</span>
        ${c.state === 'reconnecting' ? html`<button type="button" onClick=${() => chorus.retryNow()}>Retry now</button>` : null}
      </div>`);
    } else if (c.state === 'stopped' && c.reason === 'replaced') {
      banners.push(html`<div class="banner info" role="alert" data-banner="replaced">
        <span>Chorus is open in another window or tab, so this one was disconnected.</span>
        <button type="button" onClick=${() => chorus.connect()}>Use here</button>
      </div>`);
    } else if (c.state === 'stopped' && c.reason === 'admin_disconnect') {
      banners.push(html`<div class="banner warn" role="alert" data-banner="admin">
        <span>An administrator disconnected you.</span>
        <button type="button" onClick=${() => chorus.connect()}>Reconnect</button>
      </div>`);
    } else if (c.state === 'stopped') {
      banners.push(html`<div class="banner warn" role="alert" data-banner="stopped">
        <span>Disconnected (${c.reason}).</span>
        <button type="button" onClick=${() => chorus.connect()}>Reconnect</button>
      </div>`);
    }
  }
  if (app.reloaded) {
    banners.push(html`<div class="banner info" role="status" data-banner="reloaded">
      <span>Some updates were missed while you were away, so the conversation was reloaded.</span>
      <button type="button" onClick=${() => app.dismissReloaded()}>Dismiss</button>
    </div>`);
  }
  if (app.maintenance.enabled) {
    banners.push(html`<div class="banner warn" role="status" data-banner="maintenance">
      <span>${app.maintenance.message ?? 'The server is in maintenance mode: sending messages and starting agents are paused.'}</span>
    </div>`);
  }
  return html`<div class="banners">${banners}</div>`;
}
