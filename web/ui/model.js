// What the UI knows: the signed-in user, the connection, channels with their
// messages, unread counts and runs, the user's agents, banners. Views watch
// these models; the SDK feeds them.

import { Chorus, ChorusError, LocalSession } from '../sdk/index.js';
import { Model, shortId } from './lib.js';

/** Messages fetched per history page. */
const PAGE = 50;
/** Messages kept per channel; older ones are dropped (and fetched again when scrolled to). */
const MAX_MESSAGES = 2000;
/** Loop-guard notices kept per channel; the oldest go first. */
const MAX_NOTICES = 20;

export class AppModel extends Model {
  /** @param {string} baseUrl the page's base URL (from `<base href>`) */
  constructor(baseUrl) {
    super();
    this.baseUrl = baseUrl;
    this.session = new LocalSession({ url: baseUrl });
    /** @type {Chorus | null} */
    this.chorus = null;
    /** @type {{id: string, username: string, role: string} | null} */
    this.user = this.session.user;
    /** @type {Map<string, ChannelModel>} */
    this.channels = new Map();
    this.channelsLoaded = false;
    /** @type {any[]} */
    this.agents = [];
    /** Names of users and agents we have seen, by id. @type {Map<string, string>} */
    this.names = new Map();
    /** @type {import('../sdk/client.js').StateChange | null} */
    this.connection = null;
    this.everConnected = false;
    /** When the next reconnect attempt starts (ms since the epoch), while reconnecting. */
    this.reconnectAt = 0;
    /** @type {{enabled: boolean, message: string | null} } */
    this.maintenance = { enabled: false, message: null };
    this.reloaded = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.reloadedTimer = null;
    /** @type {string | null} why the user was signed out, for the sign-in page */
    this.signedOutReason = null;
    this.session.on('change', ({ user }) => {
      // Signed out in another tab (or the session ended).
      if (!user && this.user) this.stop('You were signed out.');
    });
  }

  get rest() {
    return this.session.rest;
  }

  /** After sign-in (or at start with a stored session): connect and load. */
  async start() {
    this.user = this.session.user;
    if (!this.user) return;
    if (this.user.username) this.names.set(this.user.id, this.user.username);
    const chorus = new Chorus({ url: this.baseUrl, getToken: this.session.getToken });
    this.chorus = chorus;
    chorus.on('state', (change) => {
      this.connection = change;
      this.reconnectAt = change.state === 'reconnecting' && change.delayMs ? Date.now() + change.delayMs : 0;
      if (change.state === 'connected') this.everConnected = true;
      if (change.state === 'stopped' && (change.reason === 'signed_out' || change.reason === 'revoked')) {
        this.stop(change.reason === 'revoked' ? 'This session was revoked.' : 'Your session ended; sign in again.');
        return;
      }
      this.notify();
    });
    chorus.on('connected', () => this.checkMaintenance());
    const personal = chorus.subscribe(`user:${this.user.id}`, { loadState: () => this.loadChannels() });
    personal.on('event', (e) => this.onPersonalEvent(e));
    chorus.connect();
    this.loadAgents();
    this.notify();
  }

  /** Signs out here (and revokes the session on the server). */
  async signOut() {
    await this.session.logOut();
    this.stop(null);
  }

  /** @param {string | null} reason */
  stop(reason) {
    this.chorus?.close();
    this.chorus = null;
    this.user = null;
    this.channels = new Map();
    this.channelsLoaded = false;
    this.agents = [];
    this.connection = null;
    this.everConnected = false;
    this.signedOutReason = reason;
    if (reason) this.session.clear();
    this.notify();
  }

  // ------------------------------------------------------------ channels

  async loadChannels() {
    const body = await this.rest.get('channels');
    const seen = new Set();
    for (const { channel, role } of body.channels ?? []) {
      seen.add(channel.id);
      const existing = this.channels.get(channel.id);
      if (existing) {
        existing.info = channel;
        existing.role = role;
        existing.notify();
      } else {
        this.channels.set(channel.id, new ChannelModel(this, channel, role));
      }
    }
    for (const [id, model] of this.channels) {
      if (!seen.has(id)) {
        model.close();
        this.channels.delete(id);
      }
    }
    this.channelsLoaded = true;
    this.notify();
  }

  /** @param {import('../sdk/types.js').ChannelEvent} event */
  onPersonalEvent(event) {
    switch (event.type) {
      case 'channel_created':
      case 'channel_member_added':
      case 'channel_member_removed':
      case 'channel_deleted':
      case 'channel_updated':
        this.loadChannels().catch((e) => console.warn('chorus ui: channels', e));
        break;
      case 'agent_spawned':
      case 'agent_updated':
      case 'agent_despawned':
        this.loadAgents();
        break;
      default:
    }
  }

  /** @param {string} name */
  async createChannel(name) {
    const channel = await this.rest.post('channels', { name });
    await this.loadChannels();
    return channel;
  }

  // ------------------------------------------------------------ agents and names

  async loadAgents() {
    try {
      const body = await this.rest.get('agents');
      this.agents = body.agents ?? [];
      for (const a of this.agents) this.names.set(a.id, a.name);
      this.notify();
    } catch (e) {
      console.warn('chorus ui: agents', e);
    }
  }

  /**
   * A display name for a message author or member.
   * @param {{kind?: string, id: string, display_name?: string, name?: string, username?: string}} who
   */
  nameOf(who) {
    const given = who.display_name ?? who.name ?? who.username ?? this.names.get(who.id);
    if (given) return given;
    return who.kind === 'agent' ? `agent ${shortId(who.id)}` : `user ${shortId(who.id)}`;
  }

  // ------------------------------------------------------------ banners

  async checkMaintenance() {
    try {
      const res = await fetch(new URL('health/detailed', this.baseUrl), { headers: { accept: 'application/json' } });
      const body = await res.json();
      const enabled = Boolean(body?.checks?.hub?.details?.maintenance ?? body?.checks?.hub?.maintenance);
      this.setMaintenance(enabled, enabled ? this.maintenance.message : null);
    } catch {
      // Health unknown: keep what we knew.
    }
  }

  /**
   * @param {boolean} enabled
   * @param {string | null} message
   */
  setMaintenance(enabled, message) {
    this.maintenance = { enabled, message };
    this.notify();
  }

  /** An error from the server: maintenance refusals light the banner. @param {unknown} error */
  noteError(error) {
    if (error instanceof ChorusError && error.code === 'maintenance') this.setMaintenance(true, error.message);
  }

  showReloaded() {
    this.reloaded = true;
    if (this.reloadedTimer) clearTimeout(this.reloadedTimer);
    this.reloadedTimer = setTimeout(() => this.dismissReloaded(), 15000);
    this.notify();
  }

  dismissReloaded() {
    this.reloaded = false;
    this.notify();
  }
}

/** One channel: its info, messages, unread count, runs, members. */
export class ChannelModel extends Model {
  /**
   * @param {AppModel} app
   * @param {any} info a `ChannelView`
   * @param {string} role
   */
  constructor(app, info, role) {
    super();
    this.app = app;
    this.info = info;
    this.role = role;
    /** @type {Map<string, any>} */
    this.messages = new Map();
    /** @type {any[] | null} */
    this.sortedCache = null;
    /** @type {number | null} */
    this.nextBefore = null;
    this.loading = true;
    this.loadingOlder = false;
    /** @type {any[] | null} */
    this.members = null;
    /**
     * Agent chains the loop guard stopped (`agent_chain_limited`), shown
     * after the message that would have started the next run.
     * @type {{key: string, agentId: string, messageId: string | null, reason: string, hop: number | null}[]}
     */
    this.notices = [];
    this.readKey = `chorus.read.${app.user?.id}.${info.id}`;
    const raw = localStorage.getItem(this.readKey);
    const stored = raw === null ? NaN : Number(raw);
    /** The newest seq the user has seen (null: not known yet on this browser). */
    this.lastRead = Number.isInteger(stored) && stored >= 0 ? stored : null;
    /** Whether the user is looking at the newest messages of this channel. */
    this.viewing = false;
    const chorus = /** @type {Chorus} */ (app.chorus);
    this.sub = chorus.subscribe(info.stream, { presence: true, runs: true, loadState: ({ reason }) => this.loadLatest(reason) });
    this.offs = [
      this.sub.on('event', (e) => this.onEvent(e)),
      this.sub.on('state', () => this.notify()),
      this.sub.on('recovery_failed', () => app.showReloaded()),
      this.sub.on('unsubscribed', () => app.loadChannels().catch(() => {})),
      this.sub.presence?.on('change', () => this.notify()) ?? (() => {}),
      this.sub.typing.on('change', () => this.notify()),
      this.sub.runs?.on('change', () => this.notify()) ?? (() => {}),
      this.sub.runs?.on('stored', () => this.notify()) ?? (() => {}),
      this.sub.runs?.on('rebuilt', () => this.notify()) ?? (() => {}),
      chorus.outbox.on('change', ({ item }) => {
        if (item.channel === info.stream) this.notify();
        if (item.error) app.noteError(item.error);
        // A send that goes through again: maintenance may be over.
        if (item.status === 'sent' && app.maintenance.enabled) app.checkMaintenance();
      }),
    ];
  }

  get id() {
    return this.info.id;
  }

  close() {
    for (const off of this.offs) off();
    this.app.chorus?.unsubscribe(this.info.stream);
  }

  /** Messages oldest first. */
  sorted() {
    if (!this.sortedCache) this.sortedCache = [...this.messages.values()].sort((a, b) => a.seq - b.seq);
    return this.sortedCache;
  }

  get latestSeq() {
    const list = this.sorted();
    return list.length ? list[list.length - 1].seq : 0;
  }

  /** Messages of others after the last one the user saw. */
  get unread() {
    if (this.lastRead === null) return 0;
    const me = this.app.user?.id;
    let n = 0;
    for (const m of this.messages.values()) if (m.seq > this.lastRead && m.author?.id !== me && !m.deleted_at) n++;
    return n;
  }

  /** Whether `unread` may be more than the loaded messages show. */
  get unreadCapped() {
    return this.nextBefore !== null && this.lastRead !== null && this.sorted()[0]?.seq > this.lastRead + 1;
  }

  /**
   * The newest page of history (at the start, and again after events were
   * lost); older pages are fetched when the user scrolls to them.
   * @param {string} reason
   */
  async loadLatest(reason) {
    const page = await this.app.rest.get(`channels/${encodeURIComponent(this.id)}/messages?limit=${PAGE}`);
    if (reason === 'recovery_failed') this.messages = new Map();
    for (const m of page.messages ?? []) this.put(m);
    this.nextBefore = page.next_before ?? null;
    if (this.lastRead === null) this.markRead();
    this.loading = false;
    this.sortedCache = null;
    this.notify();
  }

  async loadOlder() {
    if (this.nextBefore === null || this.loadingOlder) return;
    this.loadingOlder = true;
    this.notify();
    try {
      const page = await this.app.rest.get(`channels/${encodeURIComponent(this.id)}/messages?before=${this.nextBefore}&limit=${PAGE}`);
      for (const m of page.messages ?? []) this.put(m);
      this.nextBefore = page.next_before ?? null;
    } finally {
      this.loadingOlder = false;
      this.sortedCache = null;
      this.notify();
    }
  }

  /** @param {any} message */
  put(message) {
    this.messages.set(message.id, message);
    this.sortedCache = null;
    if (message.author?.kind === 'agent' && message.author.name) this.app.names.set(message.author.id, message.author.name);
    if (this.messages.size > MAX_MESSAGES) {
      const oldest = this.sorted()[0];
      this.messages.delete(oldest.id);
      this.nextBefore = oldest.seq;
      this.sortedCache = null;
    }
  }

  /** @param {import('../sdk/types.js').ChannelEvent} event */
  onEvent(event) {
    const d = event.data ?? {};
    switch (event.type) {
      case 'message_created':
      case 'message_updated':
        if (d.message) this.put(d.message);
        if (event.type === 'message_created' && this.viewing) this.markRead();
        break;
      case 'message_deleted': {
        const m = this.messages.get(d.message_id);
        if (m) this.put({ ...m, text: '', deleted_at: event.timestamp });
        break;
      }
      case 'channel_updated':
        if (d.channel) this.info = d.channel;
        break;
      case 'channel_member_added':
      case 'channel_member_removed':
        if (this.members) this.loadMembers();
        break;
      case 'agent_updated':
        if (d.agent) this.app.names.set(d.agent.id, d.agent.name);
        break;
      case 'agent_chain_limited':
        this.notices.push({
          key: `${event.epoch}:${event.offset}`,
          agentId: String(d.agent_id ?? ''),
          messageId: typeof d.message_id === 'string' ? d.message_id : null,
          reason: String(d.reason ?? ''),
          hop: typeof d.hop === 'number' ? d.hop : null,
        });
        if (this.notices.length > MAX_NOTICES) this.notices.shift();
        break;
      default:
        return;
    }
    this.notify();
    this.app.notify();
  }

  /** The user has seen everything up to now. */
  markRead() {
    const latest = this.latestSeq;
    if (latest !== this.lastRead && latest >= (this.lastRead ?? 0)) {
      this.lastRead = latest;
      try {
        localStorage.setItem(this.readKey, String(latest));
      } catch {
        // Storage full or blocked: unread counts reset on reload.
      }
      this.app.notify();
    }
  }

  async loadMembers() {
    const body = await this.app.rest.get(`channels/${encodeURIComponent(this.id)}/members`);
    this.members = body.members ?? [];
    for (const m of this.members) if (typeof m.name === 'string' && m.name) this.app.names.set(m.id, m.name);
    this.notify();
  }

  /** Runs to show as cards: not yet replaced by their stored message. */
  runCards() {
    const runs = this.sub.runs;
    if (!runs) return [];
    const stored = new Set();
    for (const m of this.messages.values()) if (m.run_id) stored.add(m.run_id);
    return [...runs.runs.values()].filter((r) => !r.stored && !stored.has(r.id) && !(r.messageId && this.messages.has(r.messageId)));
  }

  /** The outbox items of this channel (pending or failed). */
  outbox() {
    const chorus = this.app.chorus;
    if (!chorus) return [];
    return chorus.outbox.queue.filter((i) => i.channel === this.info.stream);
  }
}
