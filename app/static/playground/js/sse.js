// Server-sent events from a POST: EventSource only does GET, so read the body with fetch + ReadableStream.

/** An HTTP error before the stream started, carrying the server's {code, message, location}. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.location = error.location || null;
  }
}

/** Split an SSE byte stream into {event, data} records (data lines joined with "\n"; comments dropped). */
export async function* sseRecords(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).replace(/\r$/, "");
        buffer = buffer.slice(nl + 1);
        if (line === "") {
          if (data.length) yield { event, data: data.join("\n") };
          event = "message";
          data = [];
        } else if (line.startsWith(":")) {
          // keep-alive comment
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = text;
          else if (field === "data") data.push(text);
        }
      }
    }
  } finally {
    reader.releaseLock();
  }
}

export async function errorOf(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return new ApiError(resp.status, body.error);
  } catch {
    // not JSON: fall through
  }
  return new ApiError(resp.status, { code: `http_${resp.status}`, message: resp.statusText || "request failed" });
}

/**
 * POST `body` to the stream endpoint; calls onStep(step) per ACT step and returns the final SolveResponse.
 * Throws ApiError for a 4xx/5xx before the stream and for an in-band `error` event.
 */
export async function streamSolve(url, body, { onStep, signal } = {}) {
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  if (!resp.ok) throw await errorOf(resp);
  const requestId = resp.headers.get("X-Request-ID");
  for await (const rec of sseRecords(resp.body)) {
    const payload = JSON.parse(rec.data);
    if (rec.event === "step") onStep?.(payload);
    else if (rec.event === "result") return { ...payload, request_id: payload.request_id || requestId };
    // an in-band error says the status it would have had as a response
    else if (rec.event === "error") throw new ApiError(payload.status || 500, payload.error || payload);
  }
  throw new ApiError(0, { code: "stream_ended", message: "the stream ended without a result" });
}
