// Server-Sent Events read from a fetch() body. EventSource can only GET, and a chat turn is a
// POST with a body, so the frames are parsed here, the way the HTML spec's EventSource does.

/**
 * Yields `{id, event, data}` for each event (`id` null when the frame has none) and
 * `{comment}` for comment lines, which the server sends as heartbeats.
 */
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let frame = { id: null, event: "", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      for (;;) {
        const end = buffer.search(/[\r\n]/);
        // A lone "\r" at the end may be the first half of "\r\n": wait for the next chunk.
        if (end < 0 || (buffer[end] === "\r" && end === buffer.length - 1)) break;
        const line = buffer.slice(0, end);
        buffer = buffer.slice(buffer.startsWith("\r\n", end) ? end + 2 : end + 1);
        if (line === "") {
          if (frame.data.length > 0) {
            yield { id: frame.id, event: frame.event || "message", data: frame.data.join("\n") };
          }
          frame = { id: null, event: "", data: [] };
        } else if (line.startsWith(":")) {
          yield { comment: line.slice(1).trim() };
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "data") frame.data.push(value);
          else if (field === "event") frame.event = value;
          else if (field === "id" && !value.includes("\0")) frame.id = value;
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
