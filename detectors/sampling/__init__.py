"""Turn a local video file into a few model-sized RGB frames, with ffmpeg.

1. :func:`probe_video` runs ``ffprobe`` and checks the file against the limits
   in :class:`SamplingConfig` before anything is decoded.  The sampler's own
   probe also lists the video stream's packets (their times and keyframe
   flags, read by the demuxer without decoding anything): the first
   ``SamplingConfig.index_scan_seconds`` in the same ffprobe call, and for a
   longer video a window around each wanted time in a second one.
2. A *plan* says which frame each wanted time gets and how it is decoded
   (:class:`SamplingConfig` ``seek``):

   * ``"nearest_keyframe"`` (default): the nearest keyframe when one lies
     within the tolerance, decoded alone (``-skip_frame nokey``: the decoder
     skips every other frame); otherwise the frame within the tolerance that
     needs the fewest frames decoded forward from the keyframe before it
     (usually the first frame of the wanted time's bin); the exact frame when
     the tolerance is 0.
   * ``"accurate"``: the frame on screen at each time, decoded forward from the
     keyframe before it.
   * ``"keyframe"``: the keyframe at or before each time (repeats dropped).

   Then a cost model, in decoded frames, picks how: one pass from the start
   (every frame up to the last wanted one), or one input per wanted frame,
   each seeking to its keyframe, plus, for keyframes, possibly one input that
   decodes only keyframes from the start.  All inputs of a plan run in one
   ffmpeg process (up to ``seeks_per_process`` inputs each).
3. Every frame is rotated upright (ffmpeg's autorotate), resized so its
   shortest side is the model's input size (bicubic) and centre-cropped to a
   square - the geometry of open_clip's default preprocessing - and written
   as raw RGB24 to a pipe.  A named ``showinfo`` filter per branch reports
   which branch produced a frame and that frame's exact timestamp; the count
   is checked, and the frames ffmpeg's decoders produced (its own statistics,
   ``-loglevel verbose``) are counted in :attr:`SampledFrames.frames_decoded`.

The modules follow those steps: :mod:`~detectors.sampling.config` (the limits and choices),
:mod:`~detectors.sampling.probe` (1), :mod:`~detectors.sampling.plan` (2),
:mod:`~detectors.sampling.decode` (3, and :class:`FfmpegSampler`, which runs them all),
:mod:`~detectors.sampling.process` (running ffmpeg and ffprobe) and
:mod:`~detectors.sampling.hwdecode` (whether NVDEC can decode here, for ``hw_decode="cuda"``).

Each ffmpeg/ffprobe runs with a timeout in its own process group, killed as
a whole when it overruns.  Failures are mapped onto :mod:`detectors.errors`
with messages written for a moderator; command lines are logged at DEBUG.

Known ffmpeg behaviour the plan accounts for (measured with ffmpeg 5.1): a
decoder hands over a frame only once it has seen as many later frames as the
stream may reorder (``has_b_frames``; ``-flags low_delay`` does not change
that).  With ``-skip_frame nokey`` the later frames it waits for are the next
*keyframes*, so an input that seeks to one keyframe of a stream with
B-frames decodes three keyframes and reads the packets of two GOPs.  Such a
stream's keyframe is therefore reached by a plain (non-accurate) seek
instead: the keyframe plus the two or so frames after it are decoded, which
costs about two thirds as much (8 keyframes of a 720p video: 0.35 s of CPU
against 0.63 s).  ``-skip_frame nokey`` is used where it decodes keyframes
alone: streams without B-frames, and the keyframes-only pass from the start
(there only the two keyframes after the last wanted one are extra).
"""

from __future__ import annotations

from detectors.sampling.config import (
    DEFAULT_ALLOWED_FORMATS,
    HW_DECODERS,
    SEEK_MODES,
    HwDecode,
    SamplingConfig,
    SeekMode,
)
from detectors.sampling.decode import FfmpegSampler, frames_decoded
from detectors.sampling.plan import DecodeMode
from detectors.sampling.probe import probe_video

__all__ = [
    "DEFAULT_ALLOWED_FORMATS",
    "HW_DECODERS",
    "SEEK_MODES",
    "DecodeMode",
    "FfmpegSampler",
    "HwDecode",
    "SamplingConfig",
    "SeekMode",
    "frames_decoded",
    "probe_video",
]
