"""Only audio and image files may be uploaded to the app.

Gradio's `/upload` route takes any file its components ask for, and a client can post any
file to it directly. `UploadTypeFilter` (ASGI middleware, installed by `app.py`) reads the
multipart part headers of every upload first and refuses the whole request with 415 and a
message when a file's name does not end in an audio or image extension, before Gradio
writes anything to its cache.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
ALLOWED = AUDIO_EXTENSIONS | IMAGE_EXTENSIONS
_FILENAME = re.compile(rb'filename="([^"\r\n]*)"', re.IGNORECASE)
_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)


def refused_names(content_type: bytes, body: bytes) -> list[str]:
    """File names in a multipart body whose extension is not an audio or image one."""
    found = _BOUNDARY.search(content_type)
    if not found:
        return []
    bad = []
    for part in body.split(b"--" + found.group(1))[1:]:
        head = part.split(b"\r\n\r\n", 1)[0]
        for raw in _FILENAME.findall(head):
            name = raw.decode("utf-8", "replace")
            if PurePosixPath(name).suffix.lower() not in ALLOWED:
                bad.append(name)
    return bad


class UploadTypeFilter:
    """ASGI middleware: POST .../upload bodies are read (up to `max_bytes`), checked, then replayed."""

    def __init__(self, app, max_bytes: int = 51 * 1024 * 1024):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/upload"):
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await _refuse(send, 413, f"an upload may be at most {self.max_bytes // 2**20} MB")
        body = b"".join(chunks)
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        bad = refused_names(content_type, body)
        if bad:
            return await _refuse(send, 415, f"{bad[0][:80]!r} is not an audio or image file; the app takes "
                                            f"{', '.join(sorted(ALLOWED))}")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send, status: int, text: str) -> None:
    data = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
