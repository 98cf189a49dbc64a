// The view library (Preact with hooks, and htm for templates without a
// build step), re-exported so views import it from one place.

export { html, render, Component, createContext, useState, useReducer, useEffect, useLayoutEffect, useRef, useMemo, useCallback, useContext } from '../vendor/htm-preact-standalone.mjs';
import { useEffect, useRef, useState } from '../vendor/htm-preact-standalone.mjs';

/**
 * A ref whose element takes the focus when it first appears (a form opened
 * from a button), after it is in the document.
 */
export function useAutoFocus() {
  const ref = useRef(/** @type {HTMLElement | null} */ (null));
  useEffect(() => {
    ref.current?.focus();
  }, []);
  return ref;
}

/**
 * Re-renders the calling component whenever `model` notifies (a model has
 * `subscribe(fn) → unsubscribe`); `model` may be null.
 * @param {{subscribe: (fn: () => void) => () => void} | null | undefined} model
 */
export function useModel(model) {
  const [, setTick] = useState(0);
  useEffect(() => {
    if (!model) return undefined;
    return model.subscribe(() => setTick((t) => t + 1));
  }, [model]);
  return model;
}

/** Something views can watch: `subscribe(fn)` and `notify()`. */
export class Model {
  constructor() {
    /** @type {Set<() => void>} */
    this.watchers = new Set();
    this.scheduled = false;
  }

  /** @param {() => void} fn */
  subscribe(fn) {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  /** Tells the watchers, at most once per animation frame's worth of changes. */
  notify() {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      for (const fn of [...this.watchers]) {
        try {
          fn();
        } catch (error) {
          console.error('chorus ui: a watcher threw', error);
        }
      }
    });
  }
}

/** A readable name for an id we know nothing else about. */
export function shortId(id) {
  return String(id ?? '').slice(-6);
}

/** `12:04` today, else `3 Dec 12:04`. */
export function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const now = new Date();
  const time = d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.toLocaleDateString(undefined, { day: 'numeric', month: 'short' })} ${time}`;
}

/** JSON for people: strings as they are, everything else indented. */
export function pretty(value) {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/**
 * The field a server validation message names (`name: too long` → `name`),
 * so forms can show it at that field.
 * @param {string} message
 * @param {string[]} fields
 */
export function fieldOf(message, fields) {
  const m = /^([a-z_]+)(?:\[\d+\])?\s*:/.exec(String(message ?? ''));
  return m && fields.includes(m[1]) ? m[1] : null;
}
