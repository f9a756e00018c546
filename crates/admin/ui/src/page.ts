// What every page of the console implements.

export interface Page {
  /** Builds the page into `root`; returns what stops its timers and streams. */
  mount(root: HTMLElement): () => void;
}

/** Runs `task` now and every `everyMs` until the returned stop is called. */
export function every(everyMs: number, task: () => Promise<void> | void): () => void {
  let stopped = false;
  let timer: number | undefined;
  const run = async () => {
    try {
      await task();
    } finally {
      if (!stopped) timer = window.setTimeout(run, everyMs);
    }
  };
  void run();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}
