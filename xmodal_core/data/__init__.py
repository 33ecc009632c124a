"""Data sets, manifests, synthetic speech and the frozen-feature cache.

Public API (imports are lazy so `import xmodal_core.data` stays cheap):
    Record, load_manifest, write_manifest, split_by_group, list_datasets   (manifest)
    build_dataset, BUILDERS                                                 (builders)
    speak_texts, synthesize, list_voices, Voice                            (tts)
    speak_dataset, assign_voice_splits                                      (speak)
    FeatureCache, extract_features                                          (features)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Record": "manifest", "BuildSummary": "manifest", "load_manifest": "manifest", "write_manifest": "manifest",
    "split_by_group": "manifest", "list_datasets": "manifest", "iter_manifest": "manifest",
    "check_disjoint": "manifest", "count_records": "manifest", "dataset_dir": "manifest", "manifest_path": "manifest",
    "build_dataset": "builders", "ensure_dataset": "builders", "BUILDERS": "builders", "class_word_overlap": "builders",
    "Voice": "tts", "SpeechRequest": "tts", "list_voices": "tts", "default_voices": "tts", "speak_texts": "tts",
    "synthesize": "tts", "plan_speech": "tts", "available_engines": "tts", "round_trip_wer": "tts",
    "request_for": "tts", "voice_person": "tts",
    "speak_dataset": "speak", "assign_voice_splits": "speak",
    "FeatureCache": "features", "extract_features": "features",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"xmodal_core.data.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'xmodal_core.data' has no attribute {name!r}")
