"""A long-lived flite: libflite and its voices loaded once, one request per line on stdin.

Starting the flite command costs ~15-20 ms (it registers every compiled-in voice), and from a
large Python process the fork and exec cost more (~70 ms a clip measured in adaptation); saying
a short name then takes a few ms. This worker pays the start once. It does what `flite -voice V
--setf duration_stretch=S -f TEXT -o OUT` does (main/flite_main.c of flite 2.2): flite_init,
every voice of the command's list registered in the command's order, the voice's features given
duration_stretch (a float, as --setf sets it), then flite_file_to_speech(TEXT, voice, OUT). Each
request runs in a fork of the freshly initialised library (`_forking_server`), so it starts from
the state the command starts from and the WAV file is the command's, byte for byte
(tests/test_data_tts.py).

It runs in its own process (`python -m xmodal_core.data._flite_worker`) so that a crash in the C
library cannot take the app down; `tts._FliteServer` talks to it.

Protocol: a request is one JSON line {"voice", "stretch", "text_file", "wav_file"}; the answer is
one JSON line {"ok": true, "bytes": 0} once the WAV file is written, or {"ok": false, "error"}.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

from xmodal_core.data._forking_server import serve

# The Debian flite command's voice list (flite -lv), in its order: register_<lib>(NULL) each.
VOICES = (("kal", "cmu_us_kal"), ("awb_time", "cmu_time_awb"), ("kal16", "cmu_us_kal16"), ("awb", "cmu_us_awb"),
          ("rms", "cmu_us_rms"), ("slt", "cmu_us_slt"))
_STRETCH = ctypes.c_char_p(b"duration_stretch")  # feature names are kept by pointer: keep this one alive


class _Voice(ctypes.Structure):  # cst_voice: name, features, ffunctions, utt_init
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p), ("ffunctions", ctypes.c_void_p),
                ("utt_init", ctypes.c_void_p)]


def _open(stem: str) -> ctypes.CDLL:
    # RTLD_GLOBAL: a voice library resolves libflite's, the lexicon's and the language's symbols.
    return ctypes.CDLL(ctypes.util.find_library(stem) or f"lib{stem}.so.1", mode=ctypes.RTLD_GLOBAL)


def load() -> tuple[ctypes.CDLL, dict[str, ctypes.c_void_p]]:
    """libflite initialised and the installed voices registered: (library, {voice name: cst_voice*})."""
    lib = _open("flite")
    for stem in ("flite_usenglish", "flite_cmulex"):
        _open(stem)
    lib.flite_init()
    lib.feat_set_float.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_float]
    lib.flite_file_to_speech.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_char_p]
    lib.flite_file_to_speech.restype = ctypes.c_float
    voices = {}
    for name, stem in VOICES:
        try:
            register = getattr(_open(f"flite_{stem}"), f"register_{stem}")
        except (OSError, AttributeError):
            continue  # not installed: the command would not list it either
        register.argtypes, register.restype = [ctypes.c_char_p], ctypes.c_void_p
        voices[name] = register(None)
    return lib, voices


def main() -> int:
    lib, voices = load()

    def respond(req: dict) -> tuple[dict, bytes]:
        voice = voices.get(req["voice"])
        if not voice:
            raise ValueError(f"flite has no voice {req['voice']!r}")
        features = ctypes.cast(voice, ctypes.POINTER(_Voice)).contents.features
        lib.feat_set_float(features, _STRETCH, float(req["stretch"]))
        lib.flite_file_to_speech(os.fsencode(req["text_file"]), voice, os.fsencode(req["wav_file"]))
        return {}, b""

    return serve(respond, "flite")


if __name__ == "__main__":
    raise SystemExit(main())
