// The user's login sessions (devices): revoke one; revoking this one signs out.

import { html, formatTime, useEffect, useState } from '../lib.js';

export function SessionsView({ app }) {
  const [sessions, setSessions] = useState(/** @type {any[] | null} */ (null));
  const [error, setError] = useState(/** @type {string | null} */ (null));

  async function load() {
    try {
      const body = await app.rest.get('auth/sessions');
      setSessions(body.sessions ?? []);
    } catch (err) {
      setError(err.message);
    }
  }
  useEffect(() => {
    load();
  }, []);

  async function revoke(s) {
    setError(null);
    try {
      await app.rest.delete(`auth/sessions/${encodeURIComponent(s.id)}`);
      if (s.current) {
        app.stop('You revoked this session.');
        return;
      }
      await load();
    } catch (err) {
      setError(err.message);
    }
  }

  return html`<section class="page" aria-labelledby="sessions-title">
    <h1 id="sessions-title">Sessions</h1>
    <p class="muted">Where you are signed in. Revoking a session signs it out and closes its connections at once.</p>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
    ${sessions === null
      ? html`<p class="muted" role="status">Loading…</p>`
      : html`<table class="table">
          <caption class="visually-hidden">Your sessions</caption>
          <thead><tr><th scope="col">Device</th><th scope="col">Address</th><th scope="col">Signed in</th><th scope="col">Last seen</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody>
            ${sessions.map(
              (s) => html`<tr key=${s.id} data-session=${s.id}>
                <td>${s.user_agent ?? 'unknown'}${s.current ? html` <strong>(this one)</strong>` : null}</td>
                <td>${s.ip ?? ''}</td>
                <td>${formatTime(s.created_at)}</td>
                <td>${formatTime(s.last_seen_at)}</td>
                <td><button type="button" onClick=${() => revoke(s)} aria-label=${`Revoke session from ${formatTime(s.created_at)}${s.current ? ' (this one)' : ''}`}>Revoke</button></td>
              </tr>`,
            )}
          </tbody>
        </table>`}
  </section>`;
}
