"""Real speech made offline: espeak-ng speaks, PyAV encodes. For tests, the demo and the synthetic
training corpus — honest test data, not a claim about real emotion."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000

# Container and codec per file ending; ``rate`` overrides the encoding sample rate.
FORMATS: dict[str, dict] = {
    ".wav": {"format": "wav", "codec": "pcm_s16le"},
    ".flac": {"format": "flac", "codec": "flac"},
    ".mp3": {"format": "mp3", "codec": "libmp3lame"},
    # FFmpeg's own Vorbis encoder is experimental and refuses mono; sox (libvorbis) encodes it.
    ".ogg": {"tool": "sox"},
    ".opus": {"format": "ogg", "codec": "libopus", "rate": 48_000},
    ".m4a": {"format": "ipod", "codec": "aac"},
    ".ulaw.wav": {"format": "wav", "codec": "pcm_mulaw", "rate": 8_000},
    ".alaw.wav": {"format": "wav", "codec": "pcm_alaw", "rate": 8_000},
}


def speak(
    text: str,
    voice: str = "en-us",
    rate: int = 160,
    pitch: int = 50,
    amplitude: int = 100,
) -> np.ndarray:
    """espeak-ng's rendering of ``text`` as 16 kHz mono float32.

    Args:
        voice: an espeak-ng voice (``en-us``, ``en-gb``, ``en-us+f3``, …).
        rate: words per minute; pitch: 0–99; amplitude: 0–200.
    """
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (make setup installs it)")
    wav = subprocess.run(
        [
            "espeak-ng",
            "--stdout",
            "-v",
            voice,
            "-s",
            str(rate),
            "-p",
            str(pitch),
            "-a",
            str(amplitude),
            text,
        ],
        check=True,
        capture_output=True,
    ).stdout
    from annotator.audio.decode import decode_bytes

    return decode_bytes(wav)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def encode(audio: np.ndarray, path: str | Path, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write ``audio`` ((samples,) mono or (channels, samples)) in the format its name ends with."""
    import av

    path = Path(path)
    name = path.name.lower()
    ending = next((e for e in sorted(FORMATS, key=len, reverse=True) if name.endswith(e)), None)
    if ending is None:
        raise ValueError(f"no encoder for {path.name}; known endings: {', '.join(FORMATS)}")
    spec = FORMATS[ending]
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.get("tool") == "sox":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            wav = encode(audio, Path(tmp) / "in.wav", sample_rate)
            subprocess.run(["sox", str(wav), str(path)], check=True, capture_output=True)
        return path
    planes = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    layout = {1: "mono", 2: "stereo"}[planes.shape[0]]
    rate = spec.get("rate", sample_rate)
    with av.open(str(path), "w", format=spec["format"]) as container:
        stream = container.add_stream(spec["codec"], rate=rate)
        stream.layout = layout
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)
        frame_size = 4096
        pts = 0
        for start in range(0, planes.shape[1], frame_size):
            chunk = np.ascontiguousarray(planes[:, start : start + frame_size])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = pts
            frame.time_base = Fraction(1, sample_rate)
            pts += chunk.shape[1]
            for out in resampler.resample(frame):
                container.mux(stream.encode(out))
        for out in resampler.resample(None):
            container.mux(stream.encode(out))
        container.mux(stream.encode(None))
    return path
