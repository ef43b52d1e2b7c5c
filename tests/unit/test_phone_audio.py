"""The phone's audio path: every codec carries a tone and keeps its frequency."""

from __future__ import annotations

from pathlib import Path

import pytest
from quietwire.phone.audio import (
    CODECS,
    Codec,
    Decoder,
    Encoder,
    LoopingSource,
    dominant_frequency,
    read_wav,
    tone,
    write_wav,
)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_tone_survives_the_codec(codec: Codec) -> None:
    source = LoopingSource(tone(440, 1.0, codec.pcm_rate), codec.samples_per_frame)
    encoder, decoder = Encoder(codec), Decoder(codec)
    out = b""
    for n in range(50):
        for payload in encoder.encode(source.next_frame()):
            out += decoder.decode(payload, n * codec.timestamp_step)
    assert len(out) > codec.pcm_rate  # about a second came back
    assert abs(dominant_frequency(out, codec.pcm_rate) - 440) <= 10


def test_wav_resampled_on_read(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    write_wav(path, tone(1000, 0.5, 16000), 16000)
    pcm = read_wav(path, 8000)
    assert abs(len(pcm) // 2 - 4000) < 200
    assert abs(dominant_frequency(pcm, 8000) - 1000) <= 10


def test_silence_when_nothing_to_play() -> None:
    assert LoopingSource(b"", 160).next_frame() == bytes(320)
