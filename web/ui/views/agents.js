// The user's agents: create, edit, delete, add to a channel. The server
// validates; its message is shown at the field it names.

import { html, fieldOf, useModel, useState } from '../lib.js';

const FIELDS = ['name', 'persona', 'quirks', 'model', 'tools', 'response_policy', 'on_busy'];

/** What a message does that arrives while the agent is answering in the channel. */
const ON_BUSY = {
  enqueue: 'waits its turn',
  reject: 'is not answered',
  interrupt: 'stops the current answer',
};

function emptyForm() {
  return { name: '', persona: '', quirks: '', model: '', tools: '', response_policy: 'mention', on_busy: 'enqueue' };
}

/** @param {any} agent */
function formOf(agent) {
  return {
    name: agent.name,
    persona: agent.persona,
    quirks: agent.quirks.join('\n'),
    model: agent.model,
    tools: agent.tools.join(', '),
    response_policy: agent.response_policy,
    on_busy: agent.on_busy ?? 'enqueue',
  };
}

function bodyOf(form) {
  const list = (s, sep) =>
    s
      .split(sep)
      .map((x) => x.trim())
      .filter(Boolean);
  return {
    name: form.name,
    persona: form.persona,
    quirks: list(form.quirks, '\n'),
    model: form.model.trim() || null,
    tools: list(form.tools, ','),
    response_policy: form.response_policy,
    on_busy: form.on_busy,
  };
}

function Field({ id, label, help, error, children }) {
  return html`<div class=${`field ${error ? 'invalid' : ''}`}>
    <label for=${id}>${label}</label>
    ${children}
    ${help ? html`<p class="help" id=${`${id}-help`}>${help}</p>` : null}
    ${error ? html`<p class="error" id=${`${id}-error`}>${error}</p>` : null}
  </div>`;
}

function AgentForm({ app, agent, onDone }) {
  const [form, setForm] = useState(() => (agent ? formOf(agent) : emptyForm()));
  const [errors, setErrors] = useState(/** @type {Record<string, string>} */ ({}));
  const [general, setGeneral] = useState(/** @type {string | null} */ (null));
  const [busy, setBusy] = useState(false);
  const prefix = agent ? `agent-${agent.id}` : 'agent-new';
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });
  const describe = (k, help) => [help ? `${prefix}-${k}-help` : null, errors[k] ? `${prefix}-${k}-error` : null].filter(Boolean).join(' ') || undefined;

  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setErrors({});
    setGeneral(null);
    try {
      if (agent) await app.rest.patch(`agents/${encodeURIComponent(agent.id)}`, bodyOf(form));
      else await app.rest.post('agents', bodyOf(form));
      await app.loadAgents();
      onDone();
    } catch (err) {
      app.noteError(err);
      const field = fieldOf(err.message, FIELDS) ?? (err.code === 'conflict' ? 'name' : null);
      if (field) {
        setErrors({ [field]: err.message.replace(/^[a-z_]+(\[\d+\])?\s*:\s*/, '') });
        document.getElementById(`${prefix}-${field}`)?.focus();
      } else {
        setGeneral(err.message);
      }
    } finally {
      setBusy(false);
    }
  }

  const input = (k, attrs = {}) => html`<input id=${`${prefix}-${k}`} value=${form[k]} onInput=${set(k)}
    aria-invalid=${errors[k] ? 'true' : undefined} aria-describedby=${describe(k, attrs.help)} ...${attrs.props ?? {}} />`;

  return html`<form class="card agent-form" onSubmit=${submit} aria-label=${agent ? `Edit ${agent.name}` : 'New agent'} novalidate>
    <${Field} id=${`${prefix}-name`} label="Name" help="1–50 letters, digits, spaces, _ and -" error=${errors.name}>
      ${input('name', { help: true, props: { required: true } })}
    <//>
    <${Field} id=${`${prefix}-persona`} label="Persona" help="Who the agent is and how it answers: 10–500 characters" error=${errors.persona}>
      <textarea id=${`${prefix}-persona`} rows="3" value=${form.persona} onInput=${set('persona')}
        aria-invalid=${errors.persona ? 'true' : undefined} aria-describedby=${describe('persona', true)}></textarea>
    <//>
    <${Field} id=${`${prefix}-quirks`} label="Quirks" help="One per line, at most 10" error=${errors.quirks}>
      <textarea id=${`${prefix}-quirks`} rows="2" value=${form.quirks} onInput=${set('quirks')}
        aria-invalid=${errors.quirks ? 'true' : undefined} aria-describedby=${describe('quirks', true)}></textarea>
    <//>
    <${Field} id=${`${prefix}-model`} label="Model" help="Empty: the server's default" error=${errors.model}>
      ${input('model', { help: true })}
    <//>
    <${Field} id=${`${prefix}-tools`} label="Tools" help="Comma-separated, e.g. clock, calculator" error=${errors.tools}>
      ${input('tools', { help: true })}
    <//>
    <${Field} id=${`${prefix}-response_policy`} label="Answers" error=${errors.response_policy}>
      <select id=${`${prefix}-response_policy`} value=${form.response_policy} onChange=${set('response_policy')}
        aria-invalid=${errors.response_policy ? 'true' : undefined} aria-describedby=${describe('response_policy', false)}>
        <option value="mention">when mentioned (@name)</option>
        <option value="always">every message</option>
        <option value="manual">only when started explicitly</option>
      </select>
    <//>
    <${Field} id=${`${prefix}-on_busy`} label="While busy, a new message" help="What a message to the agent does while it is still answering in that channel" error=${errors.on_busy}>
      <select id=${`${prefix}-on_busy`} value=${form.on_busy} onChange=${set('on_busy')}
        aria-invalid=${errors.on_busy ? 'true' : undefined} aria-describedby=${describe('on_busy', true)}>
        ${Object.entries(ON_BUSY).map(([value, text]) => html`<option value=${value}>${text}</option>`)}
      </select>
    <//>
    ${general ? html`<p class="error" role="alert">${general}</p>` : null}
    <div class="row">
      <button type="submit" class="primary" disabled=${busy}>${agent ? 'Save' : 'Create agent'}</button>
      <button type="button" onClick=${onDone}>Cancel</button>
    </div>
  </form>`;
}

function AddToChannel({ app, agent }) {
  useModel(app);
  const channels = [...app.channels.values()].filter((c) => c.role === 'owner');
  const [channelId, setChannelId] = useState('');
  const [note, setNote] = useState(/** @type {{ok: boolean, text: string} | null} */ (null));
  if (channels.length === 0) return null;
  const id = `add-${agent.id}`;
  async function submit(e) {
    e.preventDefault();
    const target = channelId || channels[0].id;
    try {
      await app.rest.post(`channels/${encodeURIComponent(target)}/members`, { kind: 'agent', id: agent.id });
      setNote({ ok: true, text: `Added to #${app.channels.get(target)?.info.name}.` });
    } catch (err) {
      setNote({ ok: false, text: err.message });
    }
  }
  return html`<form class="inline-form" onSubmit=${submit}>
    <label for=${id}>Add ${agent.name} to a channel</label>
    <div class="row">
      <select id=${id} value=${channelId || channels[0].id} onChange=${(e) => setChannelId(e.currentTarget.value)}>
        ${channels.map((c) => html`<option value=${c.id}>#${c.info.name}</option>`)}
      </select>
      <button type="submit">Add</button>
    </div>
    ${note ? html`<p class=${note.ok ? 'ok' : 'error'} role="status">${note.text}</p>` : null}
  </form>`;
}

function AgentItem({ app, agent }) {
  const [editing, setEditing] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState(/** @type {string | null} */ (null));
  if (editing) return html`<li><${AgentForm} app=${app} agent=${agent} onDone=${() => setEditing(false)} /></li>`;
  async function remove() {
    try {
      await app.rest.delete(`agents/${encodeURIComponent(agent.id)}`);
      await app.loadAgents();
    } catch (err) {
      setError(err.message);
    }
  }
  return html`<li class="card agent" data-agent=${agent.name}>
    <h2>${agent.name}</h2>
    <p>${agent.persona}</p>
    <dl>
      <dt>Model</dt><dd>${agent.model}</dd>
      <dt>Tools</dt><dd>${agent.tools.length ? agent.tools.join(', ') : 'none'}</dd>
      <dt>Answers</dt><dd>${agent.response_policy}</dd>
      <dt>While busy</dt><dd data-on-busy=${agent.on_busy}>${ON_BUSY[agent.on_busy] ?? agent.on_busy}</dd>
      ${agent.quirks.length ? html`<dt>Quirks</dt><dd>${agent.quirks.join('; ')}</dd>` : null}
    </dl>
    <div class="row">
      <button type="button" onClick=${() => setEditing(true)}>Edit</button>
      ${confirming
        ? html`<span role="group" aria-label="Confirm delete">Delete ${agent.name}?
            <button type="button" class="danger" onClick=${remove}>Delete</button>
            <button type="button" onClick=${() => setConfirming(false)}>Keep</button></span>`
        : html`<button type="button" onClick=${() => setConfirming(true)}>Delete</button>`}
    </div>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
    <${AddToChannel} app=${app} agent=${agent} />
  </li>`;
}

export function AgentsView({ app }) {
  useModel(app);
  const [creating, setCreating] = useState(false);
  return html`<section class="page" aria-labelledby="agents-title">
    <h1 id="agents-title">Agents</h1>
    ${creating
      ? html`<${AgentForm} app=${app} agent=${null} onDone=${() => setCreating(false)} />`
      : html`<button type="button" class="primary" onClick=${() => setCreating(true)}>New agent</button>`}
    <ul class="agents">
      ${app.agents.map((a) => html`<${AgentItem} key=${a.id} app=${app} agent=${a} />`)}
    </ul>
    ${app.agents.length === 0 && !creating ? html`<p class="muted">No agents yet.</p>` : null}
  </section>`;
}
