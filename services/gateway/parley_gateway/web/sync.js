// Offline sync: fetch every change since the saved cursor (GET /v1/sync?since=) when the
// browser comes back online, when the tab is shown again, and every half minute, and hand
// each change to `apply`. The cursor is kept, so nothing is fetched twice.

const EVERY_MS = 30_000;

export class SyncLoop {
  constructor(api, cursorStore, apply, onError) {
    this.api = api;
    this.cursorStore = cursorStore; // {get(), save(cursor)}
    this.apply = apply;
    this.onError = onError;
    this.running = null;
    this.again = false;
    this.timer = null;
    this.onVisible = () => {
      if (document.visibilityState === "visible") this.now();
    };
  }

  start() {
    window.addEventListener("online", this.now);
    document.addEventListener("visibilitychange", this.onVisible);
    this.timer = setInterval(this.now, EVERY_MS);
    return this.now();
  }

  stop() {
    window.removeEventListener("online", this.now);
    document.removeEventListener("visibilitychange", this.onVisible);
    clearInterval(this.timer);
  }

  /** Sync now; if a sync is running, once more after it. Resolves when caught up. */
  now = () => {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.drain().finally(() => {
      this.running = null;
    });
    return this.running;
  };

  async drain() {
    do {
      this.again = false;
      try {
        let page;
        do {
          page = await this.api.sync(this.cursorStore.get() ?? "");
          for (const change of page.data) this.apply(change);
          if (page.next_cursor) this.cursorStore.save(page.next_cursor);
        } while (page.has_more);
      } catch (err) {
        if (err.code === "sync_cursor_expired") {
          // Offline longer than the server keeps changes: start again from the beginning,
          // which is then a snapshot of everything as it is now (applied by id, so harmless).
          this.cursorStore.save("");
          this.again = true;
          continue;
        }
        this.onError(err);
        return;
      }
    } while (this.again);
  }
}
