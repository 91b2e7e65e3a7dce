"""Media: the only place in the engine that opens a codec (torchcodec on the CPU or with NVDEC on CUDA, torchvision's
image and JPEG codecs, the ffmpeg program).

Everything else imports ``from engine import media`` and calls the names below, so that how a file is opened, what
its errors are called and which device decodes it are decided here once. The files follow the data path:

- ``streams``: opening a file, :func:`probe` (its streams' facts), :class:`DecodeError`;
- ``decode``: frames, sampled every ``interval`` seconds by presentation time or every frame of a range;
- ``audio``: the first audio stream as mono float samples;
- ``images``: a still image as a uint8 RGB tensor;
- ``encode``: JPEG bytes, and videos re-encoded by FFmpeg (a region covered, a clip cut out, a
  face-crop clip).

The files import each other directly (never through this package), so there is no import cycle.
"""

from engine.media.audio import AudioTrack, decode_audio
from engine.media.decode import DEFAULT_CHUNK, FrameBatch, iter_frames, sample_times
from engine.media.encode import (
    COVER_METHODS,
    cut_clip,
    encode_face_clip,
    encode_jpegs,
    encode_with_region_covered,
    ffmpeg_version,
)
from engine.media.images import load_image
from engine.media.sampling import sample_frames
from engine.media.streams import (
    TRUNCATION_TOLERANCE_S,
    AudioInfo,
    DecodeError,
    MediaInfo,
    VideoInfo,
    codecs_load,
    probe,
    torchcodec_version,
)

__all__ = [
    "COVER_METHODS",
    "DEFAULT_CHUNK",
    "TRUNCATION_TOLERANCE_S",
    "AudioInfo",
    "AudioTrack",
    "DecodeError",
    "FrameBatch",
    "MediaInfo",
    "VideoInfo",
    "codecs_load",
    "cut_clip",
    "decode_audio",
    "encode_face_clip",
    "encode_jpegs",
    "encode_with_region_covered",
    "ffmpeg_version",
    "iter_frames",
    "load_image",
    "probe",
    "sample_frames",
    "sample_times",
    "torchcodec_version",
]
