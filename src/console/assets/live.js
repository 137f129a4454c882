// A channel's events as they arrive, on EventSource, across token expiry and server restarts,
// each event shown once.
//
// The browser reconnects an EventSource by itself after a dropped stream (sending
// Last-Event-ID), but with the URL it was opened with: once the access token in that URL has
// expired (or the server answers an error while it restarts) the EventSource is closed for
// good. Then a fresh token is obtained and a new EventSource opened with `?last_event_id=` of
// the last event shown. Event ids are the channel's sequence numbers, so anything at or below
// the last id shown is a repeat and is dropped.

import { Unreachable } from "./api.js";

const MAX_BACKOFF_MS = 10000;

export class LiveChannel {
  /** `after`: show the events after this id (the channel's last_event_id: only new ones). */
  constructor(api, channelId, after, { onEvent, onStatus, onReset, onSignedOut }) {
    this.api = api;
    this.channelId = channelId;
    this.lastId = after;
    this.handlers = { onEvent, onStatus, onReset, onSignedOut };
    this.source = null;
    this.opens = 0;
    this.stopped = false;
    this.backoff = 500;
    this.timer = null;
  }

  start() {
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }

  status(state, detail = "") {
    this.handlers.onStatus(state, detail, this.opens);
  }

  open() {
    if (this.stopped) return;
    const token = this.api.access;
    if (!token) return this.signedOut();
    const url = `/channels/${encodeURIComponent(this.channelId)}/listen/`
      + `?access_token=${encodeURIComponent(token)}&last_event_id=${this.lastId}`;
    const source = new EventSource(url);
    this.source = source;
    this.opens += 1;
    this.status("connecting");
    source.addEventListener("open", () => {
      if (source !== this.source) return;
      this.backoff = 500;
      this.status("live");
    });
    source.addEventListener("refresh", (e) => {
      if (source !== this.source) return;
      const id = Number(e.lastEventId);
      if (!Number.isSafeInteger(id) || id <= this.lastId) return;
      this.lastId = id;
      let data = null;
      try {
        data = JSON.parse(e.data);
      } catch (_) {
        data = { raw: e.data };
      }
      this.handlers.onEvent(id, data);
    });
    source.addEventListener("reset", (e) => {
      if (source !== this.source) return;
      // Events after lastId were deleted by retention: say so, go on from the current one.
      const id = Number(e.lastEventId);
      if (Number.isSafeInteger(id)) this.lastId = id;
      this.handlers.onReset(id);
    });
    source.addEventListener("token_expired", () => this.reopen(source, token));
    for (const name of ["revoked", "session_expired"]) {
      source.addEventListener(name, () => {
        if (source !== this.source) return;
        this.stop();
        this.signedOut();
      });
    }
    source.addEventListener("error", () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) {
        this.reopen(source, token);
      } else {
        this.status("reconnecting", "the stream dropped; the browser reconnects");
      }
    });
  }

  signedOut() {
    this.status("stopped", "signed out");
    this.handlers.onSignedOut();
  }

  /** The EventSource opened with `token` is done: a fresh token, then a new one from lastId. */
  reopen(source, token) {
    if (source !== this.source || this.stopped) return;
    source.close();
    this.source = null;
    this.renew(token);
  }

  /** Renews the token and opens again; while the server cannot be reached (or answers an
   *  error), tried again after 0.5 s, 1 s, 2 s, ... up to 10 s. */
  async renew(token) {
    if (this.stopped) return;
    this.status("reconnecting", "renewing the access token");
    try {
      await this.api.renew(token);
    } catch (err) {
      if (!this.api.signedIn) return this.signedOut();
      const wait = this.backoff;
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      const why = err instanceof Unreachable ? "the server cannot be reached" : err.message;
      this.status("reconnecting", `${why}; trying again in ${(wait / 1000).toFixed(1)} s`);
      this.timer = setTimeout(() => this.renew(token), wait);
      return;
    }
    this.open();
  }
}
