// One stored message: author, time, the text as sanitized Markdown; edit
// and delete for the author. (An agent's answer whose run this page saw is
// shown by its run's card instead.)

import { html, formatTime, useAutoFocus, useState } from '../lib.js';
import { renderMarkdown } from '../markdown.js';

function EditForm({ id, draft, setDraft, save, cancel }) {
  const field = useAutoFocus();
  return html`<form class="edit" onSubmit=${save}>
    <label for=${id} class="visually-hidden">Edit message</label>
    <textarea id=${id} value=${draft} rows="3" maxlength="2000" ref=${field} onInput=${(e) => setDraft(e.currentTarget.value)}
      onKeyDown=${(e) => {
        if (e.key === 'Escape') cancel();
        if (e.key === 'Enter' && !e.shiftKey) {
          e.preventDefault();
          save();
        }
      }}></textarea>
    <div class="row"><button type="submit" class="primary">Save</button><button type="button" onClick=${cancel}>Cancel</button></div>
  </form>`;
}

export function MessageRow({ app, channel, message }) {
  const [editing, setEditing] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [draft, setDraft] = useState(message.text);
  const [error, setError] = useState(/** @type {string | null} */ (null));
  const mine = message.author?.kind === 'user' && message.author.id === app.user?.id;
  const deleted = Boolean(message.deleted_at);
  const name = app.nameOf(message.author ?? { id: '' });
  const path = `channels/${encodeURIComponent(channel.id)}/messages/${encodeURIComponent(message.id)}`;

  async function save(e) {
    e?.preventDefault();
    setError(null);
    try {
      const updated = await app.rest.patch(path, { text: draft });
      if (updated?.id) channel.put(updated);
      channel.notify();
      setEditing(false);
    } catch (err) {
      app.noteError(err);
      setError(err.message);
    }
  }

  async function remove() {
    setError(null);
    try {
      await app.rest.delete(path);
      setConfirming(false);
    } catch (err) {
      setError(err.message);
    }
  }

  const editId = `edit-${message.id}`;
  return html`<article class=${`msg ${message.author?.kind === 'agent' ? 'agent' : ''} ${mine ? 'mine' : ''}`} data-message-id=${message.id}
      data-seq=${message.seq} data-run-id=${message.run_id} aria-busy="false">
    <header class="msg-head">
      <span class=${`author ${message.author?.kind ?? ''}`}>${name}</span>
      <time datetime=${message.created_at} class="muted">${formatTime(message.created_at)}</time>
      ${message.edited_at && !deleted ? html`<span class="muted">(edited)</span>` : null}
      ${mine && !deleted && !editing
        ? html`<span class="actions">
            <button type="button" class="link" onClick=${() => {
              setDraft(message.text);
              setEditing(true);
            }} aria-label=${`Edit message from ${formatTime(message.created_at)}`}>Edit</button>
            <button type="button" class="link" onClick=${() => setConfirming(true)} aria-label=${`Delete message from ${formatTime(message.created_at)}`}>Delete</button>
          </span>`
        : null}
    </header>
    ${deleted
      ? html`<p class="muted deleted">This message was deleted.</p>`
      : editing
        ? html`<${EditForm} id=${editId} draft=${draft} setDraft=${setDraft} save=${save} cancel=${() => setEditing(false)} />`
        : html`<div class="md" dangerouslySetInnerHTML=${{ __html: renderMarkdown(message.text) }} />`}
    ${confirming
      ? html`<div class="confirm" role="group" aria-label="Confirm delete">
          <span>Delete this message?</span>
          <button type="button" class="danger" onClick=${remove}>Delete</button>
          <button type="button" onClick=${() => setConfirming(false)}>Keep</button>
        </div>`
      : null}
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
  </article>`;
}
