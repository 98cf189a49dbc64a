// A WebSocket class for tests that wraps the real one: it records what the
// client sends and can drop chosen frames in either direction.

/**
 * @param {{dropIn?: (frame: string) => boolean, dropOut?: (frame: string) => boolean, sent?: string[], sockets?: any[]}} tap
 */
export function tapped(tap) {
  tap.sent ??= [];
  tap.sockets ??= [];
  return class TappedWebSocket {
    constructor(url) {
      this.ws = new WebSocket(url);
      tap.sockets.push(this);
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      this.onerror = null;
      this.ws.onopen = (e) => this.onopen?.(e);
      this.ws.onmessage = (e) => {
        if (tap.dropIn?.(String(e.data))) return;
        this.onmessage?.(e);
      };
      this.ws.onclose = (e) => this.onclose?.(e);
      this.ws.onerror = (e) => this.onerror?.(e);
    }

    send(data) {
      tap.sent.push(data);
      if (tap.dropOut?.(data)) return;
      this.ws.send(data);
    }

    close(code, reason) {
      this.ws.close(code, reason);
    }
  };
}
