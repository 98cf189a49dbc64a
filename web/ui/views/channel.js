// A channel: its messages (a `role="log"`, paged back on demand, with a
// "new messages" divider and "jump to latest"), agent run cards in line,
// messages still in the outbox, who is typing, and the composer.

import { html, useEffect, useLayoutEffect, useModel, useRef, useState } from '../lib.js';
import { MembersPanel } from './members.js';
import { MessageRow } from './message.js';
import { RunCard } from './run.js';

/** Pixels from the bottom that still count as "at the newest message". */
const NEAR_BOTTOM = 48;
/** Least time between two `typing` commands while the user types. */
const TYPING_EVERY_MS = 2000;

function typingLine(app, channel) {
  const me = app.user?.id;
  const names = channel.sub.typing.users.filter((u) => u !== me).map((u) => app.nameOf({ kind: 'user', id: u }));
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}

/**
 * A notice that the loop guard stopped a chain of agents answering one
 * another. Inside the log, so screen readers announce it as it is added.
 */
function ChainNotice({ app, notice }) {
  const name = app.nameOf({ kind: 'agent', id: notice.agentId });
  const why =
    notice.reason === 'rate'
      ? 'too many agent runs started in this channel in the last minute'
      : 'agents answering one another reached the longest chain this server allows';
  return html`<p class="notice" data-notice="agent_chain_limited" data-reason=${notice.reason}>
    ${name} did not answer: ${why}. Mention it again to continue.
  </p>`;
}

function OutboxItem({ app, item }) {
  const chorus = app.chorus;
  return html`<div class=${`msg mine outbox ${item.status}`} data-outbox=${item.status}>
    <header class="msg-head">
      <span class="author">${app.user?.username}</span>
      <span class="muted">${item.status === 'pending' ? 'Sending…' : 'Not sent'}</span>
    </header>
    <p class="plain">${item.text}</p>
    ${item.status === 'failed'
      ? html`<p class="error" role="alert">${item.error?.message ?? 'The server refused this message.'}
          <button type="button" class="link" onClick=${() => chorus?.outbox.retry(item)}>Retry</button>
          <button type="button" class="link" onClick=${() => {
            chorus?.outbox.discard(item);
            app.notify();
          }}>Discard</button></p>`
      : null}
  </div>`;
}

function Composer({ app, channel }) {
  const [text, setText] = useState('');
  const [error, setError] = useState(/** @type {string | null} */ (null));
  const lastTyping = useRef(0);
  const id = `composer-${channel.id}`;
  const archived = channel.info.archived;

  function send() {
    const body = text.trim();
    if (!body || !app.chorus) return;
    try {
      app.chorus.sendMessage(channel.info.stream, text);
      setText('');
      setError(null);
      lastTyping.current = 0;
    } catch (err) {
      setError(err.message);
    }
  }

  function onInput(e) {
    const value = e.currentTarget.value;
    setText(value);
    const now = Date.now();
    if (value.trim() && now - lastTyping.current > TYPING_EVERY_MS && app.chorus) {
      lastTyping.current = now;
      app.chorus.typing(channel.info.stream, true);
    } else if (!value.trim() && lastTyping.current && app.chorus) {
      lastTyping.current = 0;
      app.chorus.typing(channel.info.stream, false);
    }
  }

  return html`<form class="composer" onSubmit=${(e) => {
    e.preventDefault();
    send();
  }}>
    <label for=${id} class="visually-hidden">Message #${channel.info.name}</label>
    <textarea id=${id} rows="2" maxlength="2000" value=${text} disabled=${archived}
      placeholder=${archived ? 'This channel is archived' : `Message #${channel.info.name} (Enter to send, Shift+Enter for a new line)`}
      onInput=${onInput}
      onKeyDown=${(e) => {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          send();
        }
      }}></textarea>
    <button type="submit" class="primary" disabled=${archived || !text.trim()}>Send</button>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
  </form>`;
}

export function ChannelView({ app, channel }) {
  useModel(channel);
  const scroller = useRef(/** @type {HTMLElement | null} */ (null));
  const [atBottom, setAtBottom] = useState(true);
  const [showMembers, setShowMembers] = useState(false);
  // The divider marks what arrived since the last visit; fixed while the channel is open.
  const [dividerAfter] = useState(() => channel.lastRead);
  const keep = useRef(/** @type {{height: number, top: number} | null} */ (null));

  useEffect(() => {
    // Names of the members and of their agents, for run cards and the typing line.
    channel.loadMembers().catch((e) => console.warn('chorus ui: members', e));
  }, [channel]);

  useEffect(() => {
    channel.viewing = true;
    channel.markRead();
    document.title = `#${channel.info.name} · Chorus`;
    const onVisible = () => {
      channel.viewing = document.visibilityState === 'visible';
      if (channel.viewing) channel.markRead();
    };
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      channel.viewing = false;
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [channel]);

  const messages = channel.sorted();
  const runs = channel.sub.runs;
  const cards = channel.runCards();
  const outbox = channel.outbox();
  const lastKey = `${messages.length}:${channel.latestSeq}:${channel.notices.length}:${cards.map((r) => `${r.id}:${r.text.length}:${r.items.length}:${r.status}`).join(',')}:${outbox.length}`;

  // Stick to the bottom while the user is there; keep the view still while older pages come in.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (keep.current) {
      el.scrollTop = el.scrollHeight - keep.current.height + keep.current.top;
      keep.current = null;
    } else if (atBottom) {
      el.scrollTop = el.scrollHeight;
    }
  }, [lastKey]);

  function onScroll() {
    const el = scroller.current;
    if (!el) return;
    const bottom = el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM;
    if (bottom !== atBottom) setAtBottom(bottom);
    channel.viewing = bottom && document.visibilityState === 'visible';
    if (bottom) channel.markRead();
    if (el.scrollTop < 40 && channel.nextBefore !== null && !channel.loadingOlder) older();
  }

  function older() {
    const el = scroller.current;
    if (el) keep.current = { height: el.scrollHeight, top: el.scrollTop };
    channel.loadOlder().catch((e) => console.warn('chorus ui: history', e));
  }

  function jump() {
    const el = scroller.current;
    if (el) el.scrollTop = el.scrollHeight;
    setAtBottom(true);
    channel.viewing = true;
    channel.markRead();
  }

  const me = app.user?.id;
  const firstUnread = dividerAfter === null ? null : messages.find((m) => m.seq > dividerAfter && m.author?.id !== me);
  const newBelow = !atBottom ? messages.filter((m) => m.seq > (channel.lastRead ?? 0) && m.author?.id !== me).length : 0;
  const typing = typingLine(app, channel);

  const entries = [];
  const noticesAfter = new Map();
  const loose = [];
  for (const n of channel.notices) {
    if (n.messageId && channel.messages.has(n.messageId)) noticesAfter.set(n.messageId, [...(noticesAfter.get(n.messageId) ?? []), n]);
    else loose.push(n);
  }
  for (const m of messages) {
    if (firstUnread && m.id === firstUnread.id) {
      entries.push(html`<div class="divider" key="divider" role="separator" aria-label="New messages"><span>New messages</span></div>`);
    }
    const run = m.run_id ? runs?.get(m.run_id) : undefined;
    entries.push(
      run
        ? html`<${RunCard} key=${`run:${run.id}`} app=${app} run=${run} message=${m} />`
        : html`<${MessageRow} key=${`msg:${m.id}`} app=${app} channel=${channel} message=${m} />`,
    );
    for (const n of noticesAfter.get(m.id) ?? []) entries.push(html`<${ChainNotice} key=${`notice:${n.key}`} app=${app} notice=${n} />`);
  }
  for (const n of loose) entries.push(html`<${ChainNotice} key=${`notice:${n.key}`} app=${app} notice=${n} />`);
  for (const run of cards) entries.push(html`<${RunCard} key=${`run:${run.id}`} app=${app} run=${run} />`);

  return html`<section class="channel" aria-labelledby="channel-title">
    <header class="channel-head">
      <div>
        <h1 id="channel-title"># ${channel.info.name}</h1>
        ${channel.info.topic ? html`<p class="muted topic">${channel.info.topic}</p>` : null}
      </div>
      <button type="button" aria-expanded=${showMembers} aria-controls="members-panel" onClick=${() => setShowMembers(!showMembers)}>
        Members${channel.sub.presence ? ` (${channel.sub.presence.users.size} online)` : ''}
      </button>
    </header>
    <div class="channel-body">
      <div class="scroller" ref=${scroller} onScroll=${onScroll} tabindex="0" role="region" aria-label="Conversation">
        ${channel.nextBefore !== null
          ? html`<button type="button" class="link older" onClick=${older} disabled=${channel.loadingOlder}>
              ${channel.loadingOlder ? 'Loading…' : 'Load older messages'}</button>`
          : !channel.loading ? html`<p class="muted start">This is the beginning of #${channel.info.name}.</p>` : null}
        ${channel.loading ? html`<p class="muted" role="status">Loading messages…</p>` : null}
        <div role="log" aria-label=${`Messages in #${channel.info.name}`} aria-relevant="additions" class="log"
          aria-busy=${channel.loading ? 'true' : 'false'} data-state=${channel.loading ? 'loading' : channel.sub.state}>
          ${entries}
        </div>
        ${outbox.length ? html`<div class="outbox-list" aria-label="Messages not yet sent" role="group">
          ${outbox.map((item) => html`<${OutboxItem} key=${item.key} app=${app} item=${item} />`)}
        </div>` : null}
      </div>
      ${!atBottom ? html`<button type="button" class="jump" onClick=${jump}>Jump to latest${newBelow ? ` (${newBelow} new)` : ''}</button>` : null}
      ${showMembers ? html`<${MembersPanel} app=${app} channel=${channel} />` : null}
    </div>
    <p class="typing muted" data-typing>${typing}</p>
    <${Composer} app=${app} channel=${channel} />
  </section>`;
}
