// A channel's members with who is online; owners add and remove users and
// add the agents they own.

import { html, useEffect, useModel, useState } from '../lib.js';

function AddUser({ app, channel }) {
  const [username, setUsername] = useState('');
  const [error, setError] = useState(/** @type {string | null} */ (null));
  async function submit(e) {
    e.preventDefault();
    setError(null);
    const wanted = username.trim().replace(/^@/, '');
    let user;
    try {
      user = await app.rest.get(`users/by-username/${encodeURIComponent(wanted)}`);
    } catch (err) {
      setError(err.code === 'not_found' ? `No user is called ${wanted}.` : err.message);
      return;
    }
    try {
      await app.rest.post(`channels/${encodeURIComponent(channel.id)}/members`, { kind: 'user', id: user.id });
      setUsername('');
      await channel.loadMembers();
    } catch (err) {
      setError(err.code === 'conflict' ? `${user.username} is already a member.` : err.message);
    }
  }
  return html`<form class="inline-form" onSubmit=${submit}>
    <label for="add-user-name">Add a person by username</label>
    <div class="row">
      <input id="add-user-name" value=${username} required maxlength="64" autocomplete="off" onInput=${(e) => setUsername(e.currentTarget.value)}
        aria-invalid=${error ? 'true' : undefined} aria-describedby=${error ? 'add-user-error' : undefined} />
      <button type="submit">Add</button>
    </div>
    ${error ? html`<p class="error" id="add-user-error" role="alert">${error}</p>` : null}
  </form>`;
}

function AddAgent({ app, channel }) {
  useModel(app);
  const present = new Set((channel.members ?? []).filter((m) => m.kind === 'agent').map((m) => m.id));
  const candidates = app.agents.filter((a) => !present.has(a.id));
  const [agentId, setAgentId] = useState('');
  const [error, setError] = useState(/** @type {string | null} */ (null));
  if (candidates.length === 0) return html`<p class="muted">${app.agents.length ? 'All your agents are here.' : html`No agents yet: <a href="#/agents">make one</a>.`}</p>`;
  async function submit(e) {
    e.preventDefault();
    setError(null);
    try {
      await app.rest.post(`channels/${encodeURIComponent(channel.id)}/members`, { kind: 'agent', id: agentId || candidates[0].id });
      setAgentId('');
      await channel.loadMembers();
    } catch (err) {
      setError(err.message);
    }
  }
  return html`<form class="inline-form" onSubmit=${submit}>
    <label for="add-agent-id">Add one of your agents</label>
    <div class="row">
      <select id="add-agent-id" value=${agentId || candidates[0].id} onChange=${(e) => setAgentId(e.currentTarget.value)}>
        ${candidates.map((a) => html`<option value=${a.id}>${a.name}</option>`)}
      </select>
      <button type="submit">Add</button>
    </div>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
  </form>`;
}

export function MembersPanel({ app, channel }) {
  useModel(channel);
  useEffect(() => {
    channel.loadMembers().catch((e) => console.warn('chorus ui: members', e));
  }, [channel]);
  const owner = channel.role === 'owner';
  const presence = channel.sub.presence;
  const [error, setError] = useState(/** @type {string | null} */ (null));

  async function remove(m) {
    setError(null);
    try {
      await app.rest.delete(`channels/${encodeURIComponent(channel.id)}/members/${m.kind}/${encodeURIComponent(m.id)}`);
      await channel.loadMembers();
    } catch (err) {
      setError(err.message);
    }
  }

  return html`<aside class="members" id="members-panel" aria-label="Members">
    <h2>Members</h2>
    ${channel.members === null
      ? html`<p class="muted" role="status">Loading…</p>`
      : html`<ul>
          ${channel.members.map((m) => {
            const online = m.kind === 'user' && presence?.has(m.id);
            const name = app.nameOf(m);
            return html`<li key=${`${m.kind}:${m.id}`} data-member=${m.id}>
              ${m.kind === 'user'
                ? html`<span class=${`presence ${online ? 'online' : 'offline'}`} aria-hidden="true"></span>`
                : html`<span class="presence agent" aria-hidden="true"></span>`}
              <span class="name">${name}</span>
              <span class="muted">${m.kind === 'agent' ? `agent${m.model ? ` · ${m.model}` : ''}` : online ? 'online' : 'offline'}${m.role === 'owner' ? ', owner' : ''}</span>
              ${owner && m.id !== app.user?.id
                ? html`<button type="button" class="link" onClick=${() => remove(m)} aria-label=${`Remove ${name}`}>Remove</button>`
                : null}
            </li>`;
          })}
        </ul>`}
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
    ${owner ? html`<${AddUser} app=${app} channel=${channel} /><${AddAgent} app=${app} channel=${channel} />` : null}
  </aside>`;
}
