// The sidebar: the user, the connection, channels with unread counts, a
// form to make a channel, and links to the other pages.

import { html, useAutoFocus, useModel, useState } from '../lib.js';

const STATE_LABEL = {
  connected: 'Connected',
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting…',
  disconnected: 'Disconnected',
  stopped: 'Disconnected',
};

function ChannelLink({ channel, current }) {
  useModel(channel);
  const unread = current ? 0 : channel.unread;
  return html`<li>
    <a href=${`#/c/${encodeURIComponent(channel.id)}`} aria-current=${current ? 'page' : undefined} class="channel-link">
      <span class="hash" aria-hidden="true">#</span>
      <span class="name">${channel.info.name}${unread ? html`<span class="visually-hidden">, ${unread}${channel.unreadCapped ? ' or more' : ''} unread</span>` : null}</span>
      ${unread ? html`<span class="unread" aria-hidden="true" data-unread=${unread}>${unread}${channel.unreadCapped ? '+' : ''}</span>` : null}
    </a>
  </li>`;
}

function NewChannel({ app }) {
  const [open, setOpen] = useState(false);
  if (!open) return html`<button type="button" class="link" onClick=${() => setOpen(true)}>+ New channel</button>`;
  return html`<${NewChannelForm} app=${app} close=${() => setOpen(false)} />`;
}

function NewChannelForm({ app, close }) {
  const [name, setName] = useState('');
  const [error, setError] = useState(/** @type {string | null} */ (null));
  const field = useAutoFocus();
  async function submit(e) {
    e.preventDefault();
    setError(null);
    try {
      const channel = await app.createChannel(name);
      setName('');
      close();
      location.hash = `#/c/${encodeURIComponent(channel.id)}`;
    } catch (err) {
      app.noteError(err);
      setError(err.message);
    }
  }
  return html`<form class="new-channel" onSubmit=${submit}>
    <label for="new-channel-name">Channel name</label>
    <input id="new-channel-name" value=${name} required maxlength="80" onInput=${(e) => setName(e.currentTarget.value)}
      ref=${field} onKeyDown=${(e) => e.key === 'Escape' && close()}
      aria-invalid=${error ? 'true' : undefined} aria-describedby=${error ? 'new-channel-error' : undefined} />
    ${error ? html`<p class="error" id="new-channel-error" role="alert">${error}</p>` : null}
    <div class="row"><button type="submit" class="primary">Create</button><button type="button" onClick=${close}>Cancel</button></div>
  </form>`;
}

export function Sidebar({ app, route }) {
  useModel(app);
  const state = app.connection?.state ?? 'connecting';
  return html`<nav class="sidebar" aria-label="Chorus">
    <div class="me">
      <strong>${app.user.username}</strong>
      <span class=${`dot ${state}`} role="status" data-connection=${state}>${STATE_LABEL[state] ?? state}</span>
    </div>
    <h2 id="channels-heading">Channels</h2>
    <ul aria-labelledby="channels-heading" class="channels">
      ${[...app.channels.values()].map((c) => html`<${ChannelLink} key=${c.id} channel=${c} current=${route.name === 'c' && route.arg === c.id} />`)}
    </ul>
    <${NewChannel} app=${app} />
    <h2 id="more-heading">More</h2>
    <ul aria-labelledby="more-heading" class="pages">
      <li><a href="#/agents" aria-current=${route.name === 'agents' ? 'page' : undefined}>Agents</a></li>
      <li><a href="#/sessions" aria-current=${route.name === 'sessions' ? 'page' : undefined}>Sessions</a></li>
      ${app.user.role === 'admin' ? html`<li><a href="#/admin" aria-current=${route.name === 'admin' ? 'page' : undefined}>Admin</a></li>` : null}
    </ul>
    <button type="button" class="link signout" onClick=${() => app.signOut()}>Sign out</button>
  </nav>`;
}
