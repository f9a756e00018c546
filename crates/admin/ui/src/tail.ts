// Tails a stream live over SSE (`live=sse`) with fetch: EventSource cannot send the bearer
// key, and a key in the URL would land in logs and history.

import { authHeaders } from "./api";

export interface TailEvent {
  event: string;
  data: string;
}

/** Reads the stream at `path` from its tail; calls `onEvent` per SSE event until aborted. */
export async function tail(path: string, signal: AbortSignal, onEvent: (e: TailEvent) => void): Promise<void> {
  const response = await fetch(`/v1/stream/${path}?offset=now&live=sse`, {
    headers: authHeaders({ Accept: "text/event-stream" }),
    cache: "no-store",
    signal,
  });
  if (!response.ok || !response.body) throw new Error(`tail answered ${response.status}`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length > 0) onEvent({ event, data: data.join("\n") });
    }
  }
}
