"""``POST /v1/audio/translations``: OpenAI's speech to English text.

The same form as a transcription (ext_proc/endpoints/audio_transcriptions.py: read as it
passes, priced per second heard, the same choice of duration) without what OpenAI's
``CreateTranslationRequest`` lacks: no ``language``, no ``timestamp_granularities[]`` and no
``stream`` (refused with OpenAI's ``unknown_parameter``, whatever the provider).
"""

from __future__ import annotations

from .audio_transcriptions import AudioTranscriptions


class AudioTranslations(AudioTranscriptions):
    __slots__ = ()

    name = "audio_translations"
    paths = ("/v1/audio/translations",)
    streams = False
    operation = "translation"


ENDPOINT = AudioTranslations()
