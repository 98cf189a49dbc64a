// Administration: every node's connections (disconnect a user), maintenance
// mode, and the live firehose of every event.

import { html, formatTime, useEffect, useRef, useState } from '../lib.js';

/** Events the firehose view keeps. */
const FIREHOSE_KEEP = 200;

function Connections({ app }) {
  const [list, setList] = useState(/** @type {any | null} */ (null));
  const [error, setError] = useState(/** @type {string | null} */ (null));
  const [note, setNote] = useState(/** @type {string | null} */ (null));
  async function load() {
    try {
      setList(await app.rest.get('admin/connections?limit=200'));
    } catch (err) {
      setError(err.message);
    }
  }
  useEffect(() => {
    load();
  }, []);
  async function disconnect(userId) {
    setError(null);
    try {
      const r = await app.rest.post(`admin/users/${encodeURIComponent(userId)}/disconnect`);
      setNote(`Disconnected ${r?.closed ?? r?.connections ?? ''} connection(s) of ${app.nameOf({ kind: 'user', id: userId })}.`);
      await load();
    } catch (err) {
      setError(err.message);
    }
  }
  const rows = list?.connections ?? [];
  return html`<section aria-labelledby="conn-title">
    <div class="row spread"><h2 id="conn-title">Connections${list ? ` (${list.total ?? rows.length})` : ''}</h2>
      <button type="button" onClick=${load}>Refresh</button></div>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
    ${note ? html`<p class="ok" role="status">${note}</p>` : null}
    <table class="table">
      <caption class="visually-hidden">Live connections on every node</caption>
      <thead><tr><th scope="col">User</th><th scope="col">Transport</th><th scope="col">Since</th><th scope="col">Subscriptions</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody>
        ${rows.map(
          (c) => html`<tr key=${c.id} data-connection-user=${c.user_id}>
            <td>${app.nameOf({ kind: 'user', id: c.user_id })}</td>
            <td>${c.transport}</td>
            <td>${formatTime(c.connected_at)}</td>
            <td>${c.subscriptions ? c.subscriptions.length : '—'}</td>
            <td><button type="button" onClick=${() => disconnect(c.user_id)} aria-label=${`Disconnect user ${app.nameOf({ kind: 'user', id: c.user_id })}`}>Disconnect user</button></td>
          </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

function Maintenance({ app }) {
  const [state, setState] = useState(/** @type {any | null} */ (null));
  const [message, setMessage] = useState('');
  const [error, setError] = useState(/** @type {string | null} */ (null));
  useEffect(() => {
    app.rest.get('admin/maintenance').then(
      (s) => {
        setState(s);
        setMessage(s.message ?? '');
      },
      (err) => setError(err.message),
    );
  }, []);
  async function set(enabled) {
    setError(null);
    try {
      const s = await app.rest.put('admin/maintenance', enabled ? { enabled, message: message.trim() || null } : { enabled });
      setState(s);
      app.setMaintenance(s.enabled, s.enabled ? (s.message ? `Maintenance: ${s.message}` : null) : null);
    } catch (err) {
      setError(err.message);
    }
  }
  return html`<section aria-labelledby="maint-title">
    <h2 id="maint-title">Maintenance mode</h2>
    <p data-maintenance=${state?.enabled ? 'on' : 'off'}>${state === null ? 'Loading…' : state.enabled ? `On since ${formatTime(state.since)}.` : 'Off.'}
      While it is on, sending messages, creating channels and agents, and publishing are refused.</p>
    <label for="maint-message">Message shown to users</label>
    <input id="maint-message" maxlength="500" value=${message} onInput=${(e) => setMessage(e.currentTarget.value)} />
    <div class="row">
      <button type="button" class="danger" onClick=${() => set(true)} disabled=${state?.enabled}>Turn on</button>
      <button type="button" onClick=${() => set(false)} disabled=${!state?.enabled}>Turn off</button>
    </div>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
  </section>`;
}

function Firehose({ app }) {
  const [running, setRunning] = useState(false);
  const [prefix, setPrefix] = useState('');
  const [events, setEvents] = useState(/** @type {any[]} */ ([]));
  const [status, setStatus] = useState('Stopped.');
  const socket = useRef(/** @type {WebSocket | null} */ (null));

  useEffect(() => () => socket.current?.close(), []);

  async function start() {
    const token = await app.session.getToken({ reason: 'connect' });
    const url = new URL('api/v1/admin/firehose', app.baseUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('token', token);
    if (prefix.trim()) url.searchParams.set('channel', prefix.trim());
    const ws = new WebSocket(url);
    socket.current = ws;
    setRunning(true);
    setStatus('Connecting…');
    ws.onmessage = (m) => {
      let frame;
      try {
        frame = JSON.parse(m.data);
      } catch {
        return;
      }
      if (frame.type === 'firehose_started') {
        setStatus(`Streaming from node ${frame.data?.node}.`);
        return;
      }
      setEvents((list) => [frame, ...list].slice(0, FIREHOSE_KEEP));
    };
    ws.onclose = (e) => {
      if (socket.current !== ws) return;
      socket.current = null;
      setRunning(false);
      setStatus(e.code === 1000 ? 'Stopped.' : `Closed (${e.code}).`);
    };
  }

  function stop() {
    const ws = socket.current;
    socket.current = null;
    ws?.close(1000);
    setRunning(false);
    setStatus('Stopped.');
  }

  return html`<section aria-labelledby="fire-title">
    <h2 id="fire-title">Firehose</h2>
    <p class="muted">Every event passing through this node, newest first (the last ${FIREHOSE_KEEP}).</p>
    <div class="row">
      <label for="fire-prefix">Channel prefix</label>
      <input id="fire-prefix" placeholder="room:" value=${prefix} disabled=${running} onInput=${(e) => setPrefix(e.currentTarget.value)} />
      ${running ? html`<button type="button" onClick=${stop}>Stop</button>` : html`<button type="button" class="primary" onClick=${start}>Start</button>`}
      <button type="button" onClick=${() => setEvents([])}>Clear</button>
    </div>
    <p class="muted" role="status">${status}</p>
    <ol class="firehose" aria-label="Firehose events">
      ${events.map(
        (e, i) => html`<li key=${`${e.channel}:${e.epoch}:${e.offset}:${i}`}>
          <code>${e.type}</code> <span class="muted">${e.channel ?? ''} ${e.offset ?? ''}</span>
          <pre>${JSON.stringify(e.data ?? {}, null, 0)}</pre>
        </li>`,
      )}
    </ol>
  </section>`;
}

export function AdminView({ app }) {
  return html`<section class="page admin" aria-labelledby="admin-title">
    <h1 id="admin-title">Administration</h1>
    <${Connections} app=${app} />
    <${Maintenance} app=${app} />
    <${Firehose} app=${app} />
  </section>`;
}
