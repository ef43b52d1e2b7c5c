"""Audio for the phone: WAV in and out, and the codecs (through aiortc/PyAV).

This is the one module that touches aiortc's codecs. Everything runs at the
codec's own rate: 20 ms frames of 160 samples for PCMU/PCMA at 8 kHz, 960 at
48 kHz for Opus. WAV files of another rate or layout are resampled on read.
"""

from __future__ import annotations

import fractions
import math
import wave
from dataclasses import dataclass
from pathlib import Path

import av
from aiortc.codecs import get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

FRAME_MS = 20


@dataclass(frozen=True, slots=True)
class Codec:
    """An audio payload format we can send and receive (RFC 3551, RFC 7587)."""

    name: str
    payload_type: int
    clock_rate: int
    channels: int = 1

    @property
    def rtpmap(self) -> str:
        suffix = f"/{self.channels}" if self.channels > 1 else ""
        return f"{self.name}/{self.clock_rate}{suffix}"

    @property
    def pcm_rate(self) -> int:
        """The rate of the PCM we feed the encoder and get from the decoder."""
        return self.clock_rate

    @property
    def samples_per_frame(self) -> int:
        return self.pcm_rate * FRAME_MS // 1000

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp units per 20 ms frame (the clock rate, not the PCM rate)."""
        return self.clock_rate * FRAME_MS // 1000

    def _parameters(self) -> RTCRtpCodecParameters:
        return RTCRtpCodecParameters(
            mimeType=f"audio/{self.name}",
            clockRate=self.clock_rate,
            channels=self.channels,
            payloadType=self.payload_type,
        )


PCMU = Codec("PCMU", 0, 8000)
PCMA = Codec("PCMA", 8, 8000)
OPUS = Codec("opus", 96, 48000, 2)
#: What the phone offers, in order of preference: wideband first.
CODECS = (OPUS, PCMU, PCMA)


def _frame(pcm: bytes, rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    return frame


class Encoder:
    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._encoder = get_encoder(codec._parameters())
        self._pts = 0

    def encode(self, pcm: bytes) -> list[bytes]:
        """One 20 ms frame of mono s16 PCM at ``codec.pcm_rate`` → RTP payloads."""
        frame = _frame(pcm, self.codec.pcm_rate, self._pts)
        self._pts += len(pcm) // 2
        payloads, _ = self._encoder.encode(frame)
        return [bytes(p) for p in payloads]


class Decoder:
    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._decoder = get_decoder(codec._parameters())
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=codec.pcm_rate)

    def decode(self, payload: bytes, timestamp: int) -> bytes:
        """An RTP payload → mono s16 PCM at ``codec.pcm_rate``."""
        out = b""
        for frame in self._decoder.decode(JitterFrame(data=payload, timestamp=timestamp)):
            if not isinstance(frame, av.AudioFrame):
                continue
            for mono in self._resampler.resample(frame):
                out += bytes(mono.planes[0])[: mono.samples * 2]
        return out


def read_wav(path: Path, rate: int) -> bytes:
    """A WAV file as mono s16 PCM at ``rate`` (resampled and mixed down as needed)."""
    container = av.open(str(path))
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    pcm = bytearray()
    try:
        for frame in container.decode(audio=0):
            for mono in resampler.resample(frame):
                pcm += bytes(mono.planes[0])[: mono.samples * 2]
        for mono in resampler.resample(None):
            pcm += bytes(mono.planes[0])[: mono.samples * 2]
    finally:
        container.close()
    return bytes(pcm)


class LoopingSource:
    """20 ms frames from PCM, looping; silence when there is none."""

    def __init__(self, pcm: bytes, samples_per_frame: int) -> None:
        self.size = samples_per_frame * 2
        self.pcm = pcm if pcm else bytes(self.size)
        self.at = 0

    def next_frame(self) -> bytes:
        out = b""
        while len(out) < self.size:
            take = self.pcm[self.at : self.at + self.size - len(out)]
            out += take
            self.at = (self.at + len(take)) % len(self.pcm)
        return out


def tone(frequency: float, seconds: float, rate: int = 8000, amplitude: int = 8000) -> bytes:
    """A sine tone as mono s16 PCM (test signals and the echo service's beep)."""
    count = int(seconds * rate)
    return b"".join(
        int(amplitude * math.sin(2 * math.pi * frequency * i / rate)).to_bytes(
            2, "little", signed=True
        )
        for i in range(count)
    )


def dominant_frequency(pcm: bytes, rate: int, candidates: range = range(100, 2001, 10)) -> float:
    """The strongest frequency of mono s16 PCM among ``candidates`` (Goertzel), in Hz."""
    samples = [
        int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm) - 1, 2)
    ]
    samples = samples[: rate // 2]
    best, best_power = 0.0, -1.0
    for frequency in candidates:
        coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
        s1 = s2 = 0.0
        for x in samples:
            s1, s2 = x + coefficient * s1 - s2, s1
        power = s1 * s1 + s2 * s2 - coefficient * s1 * s2
        if power > best_power:
            best, best_power = float(frequency), power
    return best


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    recorder = WavRecorder(path, rate)
    recorder.write(pcm)
    recorder.close()


class WavRecorder:
    """Received audio as a mono s16 WAV at the codec's PCM rate."""

    def __init__(self, path: Path, rate: int) -> None:
        self._wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed by close()
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)

    def write(self, pcm: bytes) -> None:
        self._wav.writeframes(pcm)

    def close(self) -> None:
        self._wav.close()
