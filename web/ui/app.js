// The Chorus web UI: the shell (sidebar, banners, routes) around the views.
// Routes live in the URL's hash (`#/c/<id>`, `#/agents`, ...), so the page
// itself is always the same document and every relative URL resolves
// against the configured path prefix.

import { html, render, useEffect, useModel, useState } from './lib.js';
import { AppModel } from './model.js';
import { AuthView } from './views/auth.js';
import { Banners } from './views/banners.js';
import { ChannelView } from './views/channel.js';
import { AgentsView } from './views/agents.js';
import { SessionsView } from './views/sessions.js';
import { AdminView } from './views/admin.js';
import { Sidebar } from './views/sidebar.js';

const app = new AppModel(document.baseURI);
// For tests and debugging in the browser's console.
Object.defineProperty(window, 'chorusApp', { value: app });

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const onHash = () => setHash(location.hash);
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  const parts = hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  return { name: parts[0] || 'home', arg: parts[1] ?? null };
}

function Home({ model }) {
  useModel(model);
  const first = [...model.channels.values()][0];
  useEffect(() => {
    if (first) location.replace(`#/c/${encodeURIComponent(first.id)}`);
  }, [first?.id]);
  if (!model.channelsLoaded) return html`<p class="muted" role="status">Loading channels…</p>`;
  return html`<section class="empty">
    <h1>Welcome to Chorus</h1>
    <p>Make a channel in the sidebar, add an agent to it under <a href="#/agents">Agents</a>, and talk.</p>
  </section>`;
}

function Main({ model, route }) {
  switch (route.name) {
    case 'c': {
      const channel = model.channels.get(route.arg ?? '');
      if (!channel) {
        return model.channelsLoaded
          ? html`<section class="empty"><h1>No such channel</h1><p>It was deleted, or you are no longer a member.</p></section>`
          : html`<p class="muted" role="status">Loading channels…</p>`;
      }
      return html`<${ChannelView} key=${channel.id} app=${model} channel=${channel} />`;
    }
    case 'agents':
      return html`<${AgentsView} app=${model} />`;
    case 'sessions':
      return html`<${SessionsView} app=${model} />`;
    case 'admin':
      return model.user?.role === 'admin' ? html`<${AdminView} app=${model} />` : html`<section class="empty"><h1>Administrators only</h1></section>`;
    default:
      return html`<${Home} model=${model} />`;
  }
}

function App() {
  const model = useModel(app);
  const route = useRoute();
  useEffect(() => {
    document.title = model.user ? 'Chorus' : 'Sign in · Chorus';
  }, [model.user]);
  if (!model.user || !model.chorus) {
    return html`<${AuthView} app=${model} mode=${route.name === 'signup' ? 'signup' : 'login'} />`;
  }
  return html`
    <a class="skip" href="#main" onClick=${(e) => {
      e.preventDefault();
      document.getElementById('main')?.focus();
    }}>Skip to content</a>
    <div class="shell">
      <${Sidebar} app=${model} route=${route} />
      <main id="main" tabindex="-1">
        <${Banners} app=${model} />
        <${Main} model=${model} route=${route} />
      </main>
    </div>`;
}

app.start();
render(html`<${App} />`, /** @type {HTMLElement} */ (document.getElementById('app')));
