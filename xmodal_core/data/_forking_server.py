"""The request loop of the engine workers (`_espeak_worker`, `_flite_worker`).

A worker initialises its engine's library once, then serves one JSON request per line on stdin,
each in a fork of that freshly initialised state: synthesis leaves state behind (espeak-ng's next
identical request comes out a few samples longer), so a fork starts every request from the state
the engine's command starts from. The child writes the whole answer, then exits; a child that
crashes (a fault in the C library) becomes an error answer and the worker carries on.

Answer: one JSON line {"ok": true, ...} followed by its "bytes" bytes of payload, or {"ok": false, "error"}.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Callable


def serve(speak: Callable[[dict], tuple[dict, bytes]], engine: str) -> int:
    """Answer requests until stdin closes; `speak(request)` -> (answer fields, payload)."""
    out = sys.stdout.buffer

    def answer(head: dict, payload: bytes = b"") -> None:
        out.write(json.dumps(head).encode() + b"\n" + payload)
        out.flush()

    for raw in sys.stdin.buffer:
        try:
            req = json.loads(raw)
        except ValueError as exc:
            answer({"ok": False, "error": f"bad request: {exc}"})
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                head, payload = speak(req)
                answer({"ok": True, **head, "bytes": len(payload)}, payload)
            except (ValueError, KeyError, TypeError) as exc:
                answer({"ok": False, "error": str(exc)})
            except BaseException:  # noqa: BLE001 - a child must never return into the loop
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            answer({"ok": False, "error": f"{engine} crashed on this text (status {status})"})
    return 0
