"""A long-lived espeak-ng: libespeak-ng loaded once, one request per line on stdin.

Starting the espeak-ng command costs ~12 ms (loading its phoneme data and voice); saying a short
name then takes ~1 ms. This worker pays the start once. It does what `espeak-ng -v V -s S -p P
--stdout` does with the text on stdin (src/espeak-ng.c of espeak-ng 1.51): the same
initialisation, voice, then rate and pitch, one `espeak_Synth` per line of at most 999 bytes
with espeakCHARS_AUTO | espeakPHONEMES | espeakENDPAUSE, each request in a fork of the
freshly initialised library (`_forking_server`: synthesis leaves state behind, and espeak-ng
draws noise from libc's `rand`), so the samples are the command's, bit for bit
(tests/test_data_tts.py checks).

It runs in its own process (`python -m xmodal_core.data._espeak_worker`) so that a crash in the
C library cannot take the app down; `tts._EspeakServer` talks to it.

Protocol: a request is one JSON line {"voice", "rate", "pitch", "text"}; the answer is one JSON
line {"ok": true, "sample_rate", "bytes"} followed by that many bytes of 16-bit PCM, or
{"ok": false, "error"}.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json

from xmodal_core.data._forking_server import serve

ENOUTPUT_MODE_SYNCHRONOUS = 0x0001
ESPEAK_RATE, ESPEAK_PITCH = 1, 3
POS_CHARACTER = 1
SYNTH_FLAGS = 0x0 | 0x100 | 0x1000  # espeakCHARS_AUTO | espeakPHONEMES | espeakENDPAUSE
LINE_BYTES = 1000  # the command's fgets buffer

class _VoiceSelect(ctypes.Structure):  # espeak_VOICE
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    lib = ctypes.CDLL(name)
    lib.espeak_ng_InitializePath.argtypes = [ctypes.c_char_p]
    lib.espeak_ng_Initialize.argtypes = [ctypes.c_void_p]
    lib.espeak_ng_InitializeOutput.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
    lib.espeak_ng_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_ng_SetVoiceByProperties.argtypes = [ctypes.POINTER(_VoiceSelect)]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    return lib


def _lines(text: bytes) -> list[bytes]:
    """The pieces `fgets(buf, 1000, stdin)` reads: up to and including a newline, at most 999 bytes."""
    out = []
    for line in text.splitlines(keepends=True):
        out += [line[i:i + LINE_BYTES - 1] for i in range(0, len(line), LINE_BYTES - 1)]
    return out


def main() -> int:
    lib = _library()
    lib.espeak_ng_InitializePath(None)
    context = ctypes.c_void_p()
    if lib.espeak_ng_Initialize(ctypes.byref(context)) != 0:
        print(json.dumps({"ok": False, "error": "espeak-ng could not load its data"}), flush=True)
        return 1
    lib.espeak_ng_InitializeOutput(ENOUTPUT_MODE_SYNCHRONOUS, 0, None)
    sample_rate = lib.espeak_ng_GetSampleRate()
    chunks: list[bytes] = []

    def on_samples(wav, n, _events) -> int:
        if wav and n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0

    callback = _CALLBACK(on_samples)
    lib.espeak_ng_SetVoiceByName(b"en")  # loads the English dictionary once, before the forks (no synthesis)
    lib.espeak_SetSynthCallback(callback)

    def speak(req: dict) -> None:
        name = req["voice"].encode("utf-8")
        if lib.espeak_ng_SetVoiceByName(name) != 0:  # then by language, as the command does
            if lib.espeak_ng_SetVoiceByProperties(ctypes.byref(_VoiceSelect(languages=name))) != 0:
                raise ValueError(f"espeak-ng has no voice {req['voice']!r}")
        lib.espeak_SetParameter(ESPEAK_RATE, int(req["rate"]), 0)
        lib.espeak_SetParameter(ESPEAK_PITCH, int(req["pitch"]), 0)
        for line in _lines(req["text"].encode("utf-8")):
            buf = ctypes.create_string_buffer(line, LINE_BYTES)
            lib.espeak_Synth(buf, LINE_BYTES, 0, POS_CHARACTER, 0, SYNTH_FLAGS, None, None)
        lib.espeak_ng_Synchronize()

    def respond(req: dict) -> tuple[dict, bytes]:
        speak(req)
        return {"sample_rate": sample_rate}, b"".join(chunks)

    return serve(respond, "espeak-ng")


if __name__ == "__main__":
    raise SystemExit(main())
