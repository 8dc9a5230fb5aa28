"""Container logs in the CRI log format, and what `kubectl logs` asks of them.

A container's stdout and stderr are pumped into one file per container instance, each line
as a container runtime writes it (`2026-01-01T00:00:00.123456789Z stdout F text`), so the
kubelet can answer `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes`,
`previous` and `follow` the way a real one does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

PARTIAL_AT = 16 * 1024  # a longer line is written in parts ("P"), as containerd does
FOLLOW_POLL_SECONDS = 0.1


def timestamp(at: float | None = None) -> str:
    """RFC 3339 with nanoseconds, as the runtime stamps each line."""
    at = time.time() if at is None else at
    whole = datetime.fromtimestamp(int(at), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{int((at % 1) * 1e9):09d}Z"


def parse_time(text: str) -> float:
    """An RFC 3339 time (any fraction) as seconds since the epoch."""
    text = text.strip().replace("Z", "+00:00")
    head, _, rest = text.partition(".")
    if rest:
        count = len(rest) - len(rest.lstrip("0123456789"))
        digits, zone = rest[:count], rest[count:]
        whole = datetime.fromisoformat(head + zone).timestamp()
        return whole + float(f"0.{digits}") if digits else whole
    return datetime.fromisoformat(text).timestamp()


async def pump(reader: asyncio.StreamReader, stream: str, out: BinaryIO) -> None:
    """Copy one output stream into the log file, line by line, until it ends."""
    tag = stream.encode()
    buffer = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        buffer += chunk
        while True:
            cut = buffer.find(b"\n")
            if cut < 0 or cut > PARTIAL_AT:
                if len(buffer) >= PARTIAL_AT:
                    _write(out, tag, b"P", buffer[:PARTIAL_AT])
                    buffer = buffer[PARTIAL_AT:]
                    continue
                break
            _write(out, tag, b"F", buffer[:cut])
            buffer = buffer[cut + 1:]
    if buffer:
        _write(out, tag, b"F", buffer)


def _write(out: BinaryIO, tag: bytes, kind: bytes, content: bytes) -> None:
    out.write(timestamp().encode() + b" " + tag + b" " + kind + b" " + content + b"\n")
    out.flush()


@dataclass
class LogOptions:
    """The query of `pods/log` (PodLogOptions)."""

    tail_lines: int | None = None
    since: float | None = None  # seconds since the epoch
    timestamps: bool = False
    limit_bytes: int | None = None
    follow: bool = False
    previous: bool = False


@dataclass
class _Line:
    stamp: str
    text: bytes  # with its newline unless the line is still partial


def _parse(data: bytes) -> list[_Line]:
    lines: list[_Line] = []
    pending: _Line | None = None
    for raw in data.split(b"\n"):
        if not raw:
            continue
        parts = raw.split(b" ", 3)
        if len(parts) < 4:
            parts += [b""] * (4 - len(parts))
        stamp, _, kind, content = parts
        if pending is None:
            pending = _Line(stamp.decode(errors="replace"), content)
        else:
            pending.text += content
        if kind != b"P":
            pending.text += b"\n"
            lines.append(pending)
            pending = None
    if pending is not None:
        lines.append(pending)
    return lines


def _render(lines: list[_Line], options: LogOptions) -> bytes:
    if options.since is not None:
        lines = [line for line in lines if parse_time(line.stamp) >= options.since]
    if options.tail_lines is not None:
        lines = lines[-options.tail_lines:] if options.tail_lines > 0 else []
    if options.timestamps:
        return b"".join(line.stamp.encode() + b" " + line.text for line in lines)
    return b"".join(line.text for line in lines)


def read(path: Path, options: LogOptions | None = None) -> bytes:
    """The log of one container instance, as `kubectl logs` prints it."""
    options = options or LogOptions()
    try:
        data = path.read_bytes()
    except OSError:
        return b""
    text = _render(_parse(data), options)
    if options.limit_bytes is not None:
        text = text[:options.limit_bytes]
    return text


def tail_text(path: Path, lines: int) -> str:
    """The last lines of a log, as text (a terminated container's message)."""
    return read(path, LogOptions(tail_lines=lines)).decode(errors="replace").rstrip("\n")


def _read_from(path: Path, offset: int) -> bytes:
    """The log from `offset` on (a small local file: read at once)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


async def follow(path: Path, options: LogOptions, done: Callable[[], bool]
                 ) -> AsyncIterator[bytes]:
    """What the log holds now (as `read` gives it), then each new complete line until
    `done()` says the container's output has ended."""
    data = _read_from(path, 0)
    offset = data.rfind(b"\n") + 1  # a partial last line is sent once it is complete
    sent = 0
    first = _render(_parse(data[:offset]), options)
    limit = options.limit_bytes
    if first:
        if limit is not None:
            first = first[:limit]
        sent += len(first)
        yield first
    while limit is None or sent < limit:
        finished = done()
        more = _read_from(path, offset)
        cut = more.rfind(b"\n") + 1
        if cut:
            offset += cut
            since_filtered = LogOptions(since=options.since, timestamps=options.timestamps)
            chunk = _render(_parse(more[:cut]), since_filtered)
            if limit is not None:
                chunk = chunk[:limit - sent]
            if chunk:
                sent += len(chunk)
                yield chunk
        elif finished:
            return
        else:
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
