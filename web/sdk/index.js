// The Chorus JavaScript SDK: plain ES modules with no dependencies, for
// browsers and Node 20+ (`--experimental-websocket`).
//
//   import { Chorus, LocalSession } from './sdk/index.js';
//   const session = new LocalSession({ url: 'https://chat.example.com/' });
//   await session.logIn({ username, password });
//   const chorus = new Chorus({ url: 'https://chat.example.com/', getToken: session.getToken });
//   chorus.on('state', ({ state }) => console.log(state));
//   const room = chorus.subscribe('room:<id>', { presence: true, runs: true, loadState });
//   room.on('message_created', (e) => console.log(e.data.message.text));
//   chorus.connect();
//   chorus.sendMessage('room:<id>', 'hello');

export { Chorus, resolveUrls } from './client.js';
export { ChorusError, DEFINITE_REFUSALS } from './errors.js';
export { Backoff } from './backoff.js';
export { closePolicy } from './close-codes.js';
export { Emitter } from './emitter.js';
export { Subscription } from './subscription.js';
export { Outbox } from './outbox.js';
export { Presence, Typing } from './presence.js';
export { RunTracker, applyRunEvent, newRun, isEnded, RUN_EVENTS } from './runs.js';
export { Rest } from './rest.js';
export { LocalSession } from './session.js';
