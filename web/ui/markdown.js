// Markdown to sanitized HTML. Message text is untrusted: marked renders it
// with raw HTML escaped and images turned into links, DOMPurify then removes
// anything that could still run or load something (event handlers,
// `javascript:` links, inline styles, forms), and links open in a new tab
// without the opener. While a run streams, an unfinished code
// fence is closed, so the half-written code does not flicker as text.

import { marked } from '../vendor/marked.esm.js';
import DOMPurify from '../vendor/purify.es.mjs';

const purify = DOMPurify(window);
purify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.getAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

const SANITIZE = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'option', 'iframe', 'frame', 'object', 'embed', 'link', 'meta', 'base', 'svg', 'math'],
  FORBID_ATTR: ['style', 'class', 'id', 'srcset', 'formaction', 'xlink:href'],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
};

/** @param {string} text */
function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}

marked.use({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    // Raw HTML in a message is shown as the text it is, never parsed (not
    // even inertly: an inert `<img onerror>` still trips the page's policy).
    html({ text }) {
      return escapeHtml(text);
    },
    // Images become links: the page loads nothing from elsewhere.
    image({ href, text }) {
      return `<a href="${escapeHtml(href ?? '')}">${escapeHtml(text || href || 'image')}</a>`;
    },
  },
});

/**
 * Closes a code fence left open at the end (``` or ~~~, three or more).
 * @param {string} text
 */
export function closeOpenFence(text) {
  let open = null;
  for (const line of text.split('\n')) {
    const m = /^ {0,3}(`{3,}|~{3,})/.exec(line);
    if (!m) continue;
    const fence = m[1];
    if (open === null) open = fence;
    else if (fence[0] === open[0] && fence.length >= open.length && line.trim() === fence) open = null;
  }
  if (open === null) return text;
  return `${text}${text.endsWith('\n') ? '' : '\n'}${open}`;
}

/**
 * @param {string} text
 * @param {{streaming?: boolean}} [options]
 * @returns {string} safe HTML
 */
export function renderMarkdown(text, options = {}) {
  const source = options.streaming ? closeOpenFence(text) : text;
  const html = /** @type {string} */ (marked.parse(source));
  return /** @type {string} */ (purify.sanitize(html, SANITIZE));
}
