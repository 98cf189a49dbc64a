// Sign in and sign up.

import { html, useState } from '../lib.js';

export function AuthView({ app, mode }) {
  const signup = mode === 'signup';
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState(/** @type {string | null} */ (null));
  const [busy, setBusy] = useState(false);

  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (signup) await app.session.signUp({ username, password });
      else await app.session.logIn({ username, password });
      app.signedOutReason = null;
      location.hash = '#/';
      await app.start();
    } catch (err) {
      setError(err?.message ?? String(err));
    } finally {
      setBusy(false);
    }
  }

  return html`
    <main class="auth" id="main">
      <form class="card" onSubmit=${submit} aria-labelledby="auth-title">
        <h1 id="auth-title">${signup ? 'Create an account' : 'Sign in to Chorus'}</h1>
        ${app.signedOutReason && !signup ? html`<p class="notice" role="status">${app.signedOutReason}</p>` : null}
        <label for="auth-username">Username</label>
        <input id="auth-username" name="username" autocomplete="username" required value=${username}
          aria-describedby=${signup ? 'auth-username-help' : undefined}
          onInput=${(e) => setUsername(e.currentTarget.value)} />
        ${signup ? html`<p class="help" id="auth-username-help">3–32 letters, digits, <code>_ . -</code></p>` : null}
        <label for="auth-password">Password</label>
        <input id="auth-password" name="password" type="password" required value=${password}
          autocomplete=${signup ? 'new-password' : 'current-password'}
          aria-describedby=${signup ? 'auth-password-help' : undefined}
          onInput=${(e) => setPassword(e.currentTarget.value)} />
        ${signup ? html`<p class="help" id="auth-password-help">At least 8 characters</p>` : null}
        ${error ? html`<p class="error" role="alert">${error}</p>` : null}
        <button type="submit" class="primary" disabled=${busy}>${signup ? 'Sign up' : 'Sign in'}</button>
        <p class="switch">
          ${signup ? html`Have an account? <a href="#/login">Sign in</a>` : html`New here? <a href="#/signup">Create an account</a>`}
        </p>
      </form>
    </main>`;
}
