"""Event streams on slow networks: compressed by Accept-Encoding, every frame decodable the
moment it arrives, the same frames either way, and few bytes per character of answer."""

from __future__ import annotations

import asyncio
import json
import zlib
from dataclasses import dataclass, field

import httpx
import openai
from httpx._decoders import GZipDecoder

from parley_dev.stack import Stack
from tests.support.keys import DEV_KEY
from tests.support.sse import parse, text_of


@dataclass
class Wire:
    """One response as it came over the connection: its headers, and its body's chunks as
    sent (chunked transfer coding undone, content coding not)."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    # Every byte of the body on the wire, chunk framing included.
    body_bytes: int = 0


async def raw_request(
    stack: Stack, method: str, path: str, body: object = None, accept_encoding: str | None = None
) -> Wire:
    """An HTTP/1.1 request on a plain socket, so the test sees the bytes as sent."""
    payload = b"" if body is None else json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.gateway_port)
    head = [
        f"{method} {path} HTTP/1.1",
        "Host: parley",
        f"Authorization: Bearer {DEV_KEY}",
        "Connection: close",
    ]
    if accept_encoding is not None:
        head.append(f"Accept-Encoding: {accept_encoding}")
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
    wire = Wire()
    try:
        wire.status = int((await reader.readline()).split()[1])
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            wire.headers[name.strip().lower()] = value.strip()
        assert wire.headers.get("transfer-encoding") == "chunked", wire.headers
        while True:
            size_line = await reader.readline()
            size = int(size_line, 16)
            wire.body_bytes += len(size_line) + size + 2
            if size == 0:
                await reader.readline()
                break
            wire.chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    finally:
        writer.close()
    return wire


async def new_conversation(client: httpx.AsyncClient) -> str:
    reply = await client.post("/v1/conversations", json={"title": "compression"})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def test_gzip_and_deflate_streams_decode_frame_by_frame_to_the_same_answer(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    content = "How do rainbows form after the rain?"
    plain = await raw_request(
        stack, "POST", f"/v1/conversations/{await new_conversation(client)}/messages", {"content": content}
    )
    assert plain.status == 200 and "content-encoding" not in plain.headers, plain.headers
    assert plain.headers["vary"].lower() == "accept-encoding"
    plain_frames = parse(b"".join(plain.chunks))
    answer = text_of(plain_frames)
    assert answer.startswith(f'You said: "{content}".') and plain_frames[-1].event == "done"

    for coding, wbits in (("gzip", 31), ("deflate", 15)):
        wire = await raw_request(
            stack,
            "POST",
            f"/v1/conversations/{await new_conversation(client)}/messages",
            {"content": content},
            accept_encoding=f"{coding}, br;q=0.5",
        )
        assert wire.status == 200 and wire.headers["content-encoding"] == coding, wire.headers
        assert wire.headers["content-type"].startswith("text/event-stream")
        # Each chunk, decompressed alone after the ones before it, is whole frames: nothing
        # of a frame waits in the compressor for the next one.
        # The last chunk carries the frames made as the answer ended (its `done`) and the
        # stream's end, in one write.
        decoder = zlib.decompressobj(wbits)
        decoded = []
        for i, chunk in enumerate(wire.chunks):
            piece = decoder.decompress(chunk)
            assert piece.endswith(b"\n\n") or (piece == b"" and i == len(wire.chunks) - 1), (coding, piece)
            assert decoder.eof == (i == len(wire.chunks) - 1), "the last chunk, and only it, ends the stream"
            decoded.append(piece)
        assert b"event: done" in decoded[-1], "the answer's last frame goes with the stream's end"
        frames = parse(b"".join(decoded))
        assert text_of(frames) == answer
        assert [f.event for f in frames if f.event != "delta"] == [f.event for f in plain_frames if f.event != "delta"]
        # Slow networks: a few bytes per character of the answer, framing and all, where the
        # frames as they are take several times that. Live, a frame goes out per token or two
        # (this stack's demo model: 40 tokens/s), each with its chunk framing and flush.
        assert wire.body_bytes <= 5 * len(answer), (coding, wire.body_bytes, len(answer))
        # Under half of the same frames uncompressed (this stream's own: how many frames the
        # answer took, and so the plain stream's size, moves with the machine's load).
        assert wire.body_bytes * 2 < len(b"".join(decoded)), (wire.body_bytes, len(b"".join(decoded)))

        # A client catching up (a resume; frames that queued up behind a slow network) gets
        # the frames waiting together: at most 3 bytes per character.
        response_id = wire.headers["x-parley-response-id"]
        again = await raw_request(stack, "GET", f"/v1/responses/{response_id}/events", accept_encoding=coding)
        assert again.headers["content-encoding"] == coding
        assert text_of(parse(zlib.decompress(b"".join(again.chunks), wbits))) == answer
        assert again.body_bytes <= 3 * len(answer), (coding, again.body_bytes, len(answer))


async def test_without_an_acceptable_coding_the_stream_is_sent_as_it_is(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    # `curl -N` sends no Accept-Encoding; these refuse gzip and deflate or name only others.
    for accept in (None, "identity", "br", "gzip;q=0, deflate;q=0", "*;q=0"):
        wire = await raw_request(
            stack,
            "POST",
            f"/v1/conversations/{await new_conversation(client)}/messages",
            {"content": "plain please"},
            accept_encoding=accept,
        )
        assert wire.status == 200 and "content-encoding" not in wire.headers, (accept, wire.headers)
        frames = parse(b"".join(wire.chunks))
        assert frames[0].event == "meta" and frames[-1].event == "done", accept
        assert text_of(frames).startswith('You said: "plain please".')


async def test_a_resume_is_compressed_too_and_deltas_carry_only_their_text(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    conversation = await new_conversation(client)
    first = await raw_request(
        stack, "POST", f"/v1/conversations/{conversation}/messages", {"content": "resume compressed"}, "gzip"
    )
    response_id = first.headers["x-parley-response-id"]
    frames = parse(zlib.decompress(b"".join(first.chunks), 31))
    for frame in frames:
        if frame.event == "delta":
            assert set(frame.data) == {"text"}
        else:
            assert frame.data["response_id"] == response_id, frame
            assert frame.data["conversation_id"] == conversation, frame
    again = await raw_request(stack, "GET", f"/v1/responses/{response_id}/events", accept_encoding="gzip")
    assert again.status == 200 and again.headers["content-encoding"] == "gzip"
    assert text_of(parse(zlib.decompress(b"".join(again.chunks), 31))) == text_of(frames)


async def test_the_openai_stream_is_compressed_for_httpx_and_decoded_chunk_by_chunk(stack: Stack) -> None:
    """httpx (the official SDK's transport) asks for gzip by itself and decodes each chunk as
    it arrives."""
    body = {"model": "demo", "stream": True, "messages": [{"role": "user", "content": "compress me"}]}
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as plain_client:
        async with plain_client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["content-encoding"] == "gzip"
            decoder = GZipDecoder()
            pieces = [decoder.decode(raw) async for raw in response.aiter_raw()]
    # Every chunk that carried a frame decoded to whole frames at once.
    assert all(piece.endswith(b"\n\n") for piece in pieces if piece), pieces
    decoded = b"".join(pieces) + decoder.flush()
    assert decoded.endswith(b"data: [DONE]\n\n")
    assert text_of(parse(decoded)).startswith('You said: "compress me".')

    # And the SDK itself reads the same answer from the compressed stream.
    async with openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=DEV_KEY, max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "compress me"}], stream=True
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == text_of(parse(decoded))
