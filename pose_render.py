"""Skeleton drawings of pose files: the COCO-WholeBody skeleton (body, both hands, face) over a video's frames
or a blank canvas, several pose files side by side, streamed to mp4 (OpenCV), GIF (Pillow) or one PNG.

Shared by script/render_poses.py, script/extract_poses.py --preview, script/translate_video.py --render and
script/make_demo.py --render. Pose files are read by datasets.load_pose, the reader training uses.

Public: draw_skeleton, render_frame, read_pose, PoseClip, render_clip, check_output, RenderError,
open_writer, subtitle_strip, write_srt, PART_COLOURS, OUTPUT_EXTENSIONS.
"""
import collections
import functools
import itertools
import os

import numpy as np

from atomic import atomic_path
import pose_extraction  # sets OpenCV's FFmpeg log level before cv2 is first imported
import cv2  # noqa: E402  (after pose_extraction on purpose)
import pose_files  # noqa: E402
from datasets import CONFIDENCE_THRESHOLD, PART_INDICES, BadSampleError, load_pose  # noqa: E402
from safe_pickle import PoseUnpickler, UnsafePickleError, build_frames, load_restricted  # noqa: E402
from stgcn_layers import HAND_EDGES  # noqa: E402

OUTPUT_EXTENSIONS = (".mp4", ".gif", ".png")
DEFAULT_SIZE = (512, 512)  # blank canvas of a pose file without w_h (the demo's synthetic signer is square)
DEFAULT_FPS = 25.0
SHIFT = 4                  # OpenCV's fixed-point bits: points are placed to 1/16 px, not rounded to whole pixels
# BGR colours of the four parts (the model's body/left/right/face_all), and of points the model does not read.
PART_COLOURS = {"body": (0, 140, 255), "left": (60, 210, 40), "right": (255, 110, 20), "face": (200, 60, 230)}
UNREAD_COLOUR = (150, 150, 150)
FADE = 0.35                # low-confidence points, when shown, keep this fraction of their colour

# COCO-WholeBody: 0-16 body, 17-22 feet, 23-90 face (68 iBUG landmarks), 91-111 left hand, 112-132 right hand.
_BODY_EDGES = [(15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
               (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
               (15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22), (9, 91), (10, 112)]


def _face_edges(first=23):
    """iBUG-68 outline: jaw, brows, nose bridge and base as chains; eyes and lips as closed rings."""
    chains = [range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36)]
    rings = [range(36, 42), range(42, 48), range(48, 60), range(60, 68)]
    edges = [(a, b) for chain in chains for a, b in zip(chain, chain[1:])]
    edges += [(a, b) for ring in rings for a, b in zip(ring, list(ring[1:]) + [ring[0]])]
    return [(first + a, first + b) for a, b in edges]


_EDGES = {"body": _BODY_EDGES, "face": _face_edges(),
          "left": [(91 + a, 91 + b) for a, b in HAND_EDGES], "right": [(112 + a, 112 + b) for a, b in HAND_EDGES]}
_PART_RANGES = {"body": range(0, 23), "face": range(23, 91), "left": range(91, 112), "right": range(112, 133)}
_PART_MASKS = [np.isin(np.arange(133), _PART_RANGES[part]) for part in PART_COLOURS]
_EDGE_ARRAYS = [np.array(_EDGES[part], dtype=np.int64) for part in PART_COLOURS]
_COLOURS = list(PART_COLOURS.values())
_MODEL_POINTS = np.zeros(133, dtype=bool)  # what stgcn_layers' four graphs read (datasets.PART_INDICES)
_MODEL_POINTS[np.concatenate([PART_INDICES[part] for part in PART_INDICES])] = True


class RenderError(ValueError):
    """A pose file, video or output that cannot be rendered; the message names the file and the fix."""


# ----------------------------------------------------------------------------- drawing one frame
def draw_skeleton(image, keypoints, scores, threshold=CONFIDENCE_THRESHOLD, parts=False, faded=False):
    """Draw one frame's skeleton onto `image` (H, W, 3) uint8 BGR, in place; returns `image`.

    keypoints (133, 2) are divided by the frame's (w, h), as pose files store them: pixel = keypoint * (W, H).
    A point is drawn when its score > threshold (the model's own test, datasets.normalise_pose), an edge when
    both its ends are; with `faded`, the others are drawn first in FADE of their colour. With `parts`, the
    points the model reads are drawn larger and the ones it does not read in grey. One polylines call per
    part keeps the cost of the edges in OpenCV, not in Python.
    """
    height, width = image.shape[:2]
    radius = max(1, round(min(width, height) / 240))
    fixed = np.rint(keypoints * (width * 16.0, height * 16.0)).astype(np.int32)  # 1/16 px (SHIFT = 4)
    confident = scores > threshold
    if faded:
        _draw_layer(image, fixed, ~confident, FADE, radius, parts, lambda a, b: a | b)
    return _draw_layer(image, fixed, confident, 1.0, radius, parts, lambda a, b: a & b)


def _draw_layer(image, fixed, shown, strength, radius, parts, edge_rule):
    """Edges whose ends' `shown` flags pass edge_rule, then the shown points, all in strength x their colour;
    with `parts`, the model's points get radius + 1 and the others UNREAD_COLOUR. A point is a zero-length
    thick line (OpenCV caps a line's ends with discs), so that each colour's points take one call."""
    thickness = max(1, radius // 2)
    for number, edges in enumerate(_EDGE_ARRAYS):
        drawn = edges[edge_rule(shown[edges[:, 0]], shown[edges[:, 1]])]
        if len(drawn):
            cv2.polylines(image, fixed[drawn], False, _scaled(_COLOURS[number], strength), thickness, cv2.LINE_AA,
                          SHIFT)
    groups = [(shown & ~_MODEL_POINTS, radius, UNREAD_COLOUR)] if parts else []
    for number, colour in enumerate(_COLOURS):
        in_part = shown & _PART_MASKS[number]
        groups.append((in_part & _MODEL_POINTS, radius + 1, colour) if parts else (in_part, radius, colour))
    for mask, size, colour in groups:
        if mask.any():
            dots = np.repeat(fixed[mask][:, None], 2, axis=1)  # (n, 2, 2): each point to itself
            cv2.polylines(image, dots, False, _scaled(colour, strength), 2 * size + 1, cv2.LINE_AA, SHIFT)
    return image


def _scaled(colour, strength):
    """`colour` with each channel times `strength` (FADE dims it)."""
    return colour if strength == 1.0 else tuple(strength * c for c in colour)


def render_frame(keypoints, scores, background=None, size=DEFAULT_SIZE, **style):
    """A new image: a copy of `background` (H, W, 3) BGR, or a black (w, h) = `size` canvas, with the
    skeleton drawn (draw_skeleton's `style`: threshold, parts, faded). The inputs are left unchanged."""
    image = np.zeros((size[1], size[0], 3), np.uint8) if background is None else background.copy()
    return draw_skeleton(image, keypoints, scores, **style)


def draw_label(image, text, top=True):
    """White text with a black outline in a corner of `image` (top-left, or bottom-left when not `top`);
    OpenCV's Hershey font draws ASCII only (others become '?')."""
    scale = max(0.4, image.shape[0] / 800)
    thickness = max(1, round(scale * 1.5))
    (_, text_height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    y = text_height + 6 if top else image.shape[0] - baseline - 6
    for colour, extra in (((0, 0, 0), 2 * thickness), ((255, 255, 255), 0)):
        cv2.putText(image, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness + extra, cv2.LINE_AA)


# ----------------------------------------------------------------------------- pose files
PoseClip = collections.namedtuple("PoseClip", "path keypoints scores size fps start stored")
PoseClip.__doc__ = """A pose file's person 0: keypoints (T, 133, 2) and scores (T, 133) of its frames [start, start + T),
size (w, h) from its w_h (None when it has none), fps (None when it has none), stored: its frame count."""


def read_pose(path):
    """The PoseClip of a pose pickle. Arrays, start/end and every check come from datasets.load_pose (the
    training reader); w_h, fps and the stored frame count, which it does not return, from the same
    restricted unpickler, whose arrays stay unbuilt bytes. A `.pose` file gives them from its header (pose_files.py).
    Raises RenderError naming the file."""
    if str(path).endswith(pose_files.POSE_EXTENSION):
        try:
            record = pose_files.read_pose_file(path)
        except pose_files.PoseFileError as error:
            raise RenderError(str(error)) from error
        return PoseClip(path, record.keypoints, record.scores, record.size, record.fps, 0, len(record.keypoints))
    try:
        keypoints, scores = load_pose(path)
        fields = load_restricted(path, PoseUnpickler)
    except (BadSampleError, UnsafePickleError) as error:
        raise RenderError(str(error)) from error
    except OSError as error:
        raise RenderError(f"{path}: cannot be read ({error.strerror})") from error
    frames = fields["keypoints"]
    stored = len(frames) if isinstance(frames, (list, tuple)) else len(build_frames(frames))
    fps = fields.get("fps")  # kept when a positive finite number; else the renderer's default applies
    fps = float(fps) if isinstance(fps, (int, float, np.number)) and np.isfinite(fps) and fps > 0 else None
    return PoseClip(path, keypoints, scores, _frame_size(path, fields.get("w_h")), fps, int(fields.get("start") or 0),
                    stored)


def _frame_size(path, w_h):
    """(w, h) from a pose file's w_h: two positive integers, or None when the file has none."""
    if w_h is None:
        return None
    values = tuple(w_h) if isinstance(w_h, (list, tuple, np.ndarray)) else ()
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in values):
        raise RenderError(f"{path}: w_h {w_h!r} is not a (width, height) pair of positive integers; fix or remove "
                          "it (without it the poses are drawn on a blank canvas)")
    return int(values[0]), int(values[1])


# ----------------------------------------------------------------------------- clips
def check_output(out):
    """The output's kind (its extension) if OpenCV or Pillow can write it, else RenderError naming --out."""
    kind = os.path.splitext(out)[1].lower()
    if kind not in OUTPUT_EXTENSIONS:
        raise RenderError(f"--out {out}: unknown kind of file; end it with {', '.join(OUTPUT_EXTENSIONS)}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise RenderError(f"--out {out}: folder {folder} does not exist or cannot be written; choose another --out")
    return kind


def open_video(path, clips):
    """A pose_extraction.VideoReader on `path` once its frame size and count match every clip's w_h and
    stored frame count (the container's count, where it states one); else RenderError naming both files."""
    try:
        reader = pose_extraction.VideoReader(path)
    except pose_extraction.VideoError as error:
        raise RenderError(str(error)) from error
    try:
        size = reader.declared_size()
    except pose_extraction.VideoError as error:
        raise RenderError(str(error)) from error
    for clip in clips:
        if clip.size is not None and clip.size != size:
            reader.close()
            raise RenderError(f"--video {path}: frames of {size[0]}x{size[1]}, but {clip.path} was extracted from "
                              f"{clip.size[0]}x{clip.size[1]} ones (its w_h): not the video of these poses")
        if reader.frame_count and reader.frame_count != clip.stored:
            reader.close()
            raise RenderError(f"--video {path}: {reader.frame_count} frames, but {clip.path} holds {clip.stored}: "
                              "not the video of these poses")
    return reader, size


def composed_frames(clips, size, video=None, labels=None, subtitle=None, **style):
    """The output frames, one at a time, in one reused (h, n w, 3) buffer: panel i shows clip i's skeleton
    over the video's frame (or black) with its label. Frames are aligned on the source video's frame index:
    clip i covers indices [start_i, start_i + T_i), the output spans the union. `subtitle`: (bgr, mask) of
    subtitle_strip, pasted at the bottom of every panel."""
    width, height = size
    first = min(clip.start for clip in clips)
    last = max(clip.start + len(clip.keypoints) for clip in clips)
    canvas = np.zeros((height, width * len(clips), 3), np.uint8)
    frames = iter(video) if video is not None else None
    if frames is not None:
        for _ in range(first):  # the video's frames before any clip's start
            next(frames, None)
    for index in range(first, last):
        background = next(frames, None) if frames is not None else None
        if frames is not None and (background is None or background.shape[:2] != (height, width)):
            raise RenderError(f"--video {video.path}: frame {index} is missing or of another size: not the video of "
                              f"{clips[0].path}")
        for number, clip in enumerate(clips):
            panel = canvas[:, number * width:(number + 1) * width]
            panel[...] = 0 if background is None else background
            t = index - clip.start
            if 0 <= t < len(clip.keypoints):
                draw_skeleton(panel, clip.keypoints[t], clip.scores[t], **style)
            if labels:
                draw_label(panel, labels[number])
            if subtitle is not None:
                rows = panel[height - subtitle[0].shape[0]:]
                np.copyto(rows, subtitle[0], where=subtitle[1][..., None])
        yield canvas


def render_clip(clips, out, video=None, fps=None, size=None, labels=None, subtitle=None, frame=0, progress=True,
                **style):
    """Render `clips` (PoseClips, side by side) to `out` (.mp4, .gif, or .png: the output's frame `frame` only)
    over `video` (a path) or a black canvas of `size` (default: the first clip's w_h, else DEFAULT_SIZE).
    fps: given, else the first clip's, the video's, DEFAULT_FPS. `subtitle`: text under every panel.
    Frames are streamed, so memory does not grow with the clip's length. The file is written under a
    temporary name and renamed when complete: an error (RenderError naming the file) leaves nothing.
    Returns the number of frames written."""
    from tqdm import tqdm
    kind = check_output(out)
    total = max(c.start + len(c.keypoints) for c in clips) - min(c.start for c in clips)
    if kind == ".png" and not 0 <= frame < total:
        raise RenderError(f"--frame {frame}: the clip has frames 0 to {total - 1}")
    reader = None
    if video is not None:
        reader, size = open_video(video, clips)
    size = size or clips[0].size or DEFAULT_SIZE
    fps = fps or clips[0].fps or (reader.fps if reader else None) or DEFAULT_FPS
    strip = subtitle_strip(subtitle, size[0]) if subtitle else None
    folder, name = os.path.split(os.path.abspath(out))
    temporary = os.path.join(folder, f".{name}.tmp-{os.getpid()}{kind}")
    frames = composed_frames(clips, size, reader, labels, strip, **style)
    if kind == ".png":  # drawing stops after the wanted frame; the ones before it are drawn, not kept
        frames, total = itertools.islice(frames, frame, frame + 1), 1
    written, writer = 0, None
    with atomic_path(out, temporary):  # the writer is closed before the temporary is renamed or removed
        try:
            writer = open_writer(temporary, (size[0] * len(clips), size[1]), fps)
            with tqdm(frames, total=total, desc=os.path.basename(out), unit="frame", leave=False,
                      dynamic_ncols=True, disable=not progress) as bar:
                for written, image in enumerate(bar, 1):
                    writer.write(image)
            writer.close()
        finally:
            for opened in (writer, reader):
                if opened is not None:
                    opened.close()
    return written


class _Mp4Writer:
    """OpenCV's VideoWriter with MPEG-4 part 2 ('mp4v'), the codec every opencv-python-headless wheel has."""

    def __init__(self, path, size, fps):
        self.writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self.writer.isOpened():
            raise RenderError(f"--out: OpenCV cannot write an mp4 video to {path}; try a .gif")

    def write(self, image):
        self.writer.write(image)

    def close(self):
        self.writer.release()


class _GifWriter:
    """A looping GIF written frame by frame with Pillow's GIF helpers (getheader once, getdata per frame):
    Image.save(append_images=...) keeps every frame until the end. Each frame is mapped, without dithering,
    onto one fixed palette holding the part colours exactly (so the global palette serves every frame)."""

    def __init__(self, path, size, fps):
        self.file = open(path, "wb")
        self.duration = max(20, round(1000 / fps))  # GIF counts hundredths; most viewers slow 10 ms frames down
        self.started = False

    def write(self, image):
        from PIL import GifImagePlugin, Image
        indexed = Image.fromarray(image[..., ::-1]).quantize(palette=_gif_palette(), dither=Image.Dither.NONE)
        if not self.started:
            header, _ = GifImagePlugin.getheader(indexed, info={"loop": 0, "duration": self.duration})
            self.file.write(b"".join(header))
            self.started = True
        self.file.write(b"".join(GifImagePlugin.getdata(indexed, duration=self.duration)))

    def close(self):
        if not self.file.closed:
            self.file.write(b";")  # the GIF trailer
            self.file.close()


class _PngWriter:
    """One frame as a PNG (lossless: what the docs' stills and pixel checks use)."""

    def __init__(self, path, size, fps):
        self.path = path  # size and fps: the other writers' signature

    def write(self, image):
        if not cv2.imwrite(self.path, image):
            raise RenderError(f"--out: OpenCV cannot write a PNG to {self.path}")

    def close(self):
        pass


_WRITERS = {".mp4": _Mp4Writer, ".gif": _GifWriter, ".png": _PngWriter}


def open_writer(path, size, fps):
    """A writer of (h, w, 3) BGR frames of `size` (w, h) for `path`, by its extension: write(image), close()."""
    return _WRITERS[os.path.splitext(path)[1].lower()](path, size, fps)
_PALETTE = []


def _gif_palette():
    """The GIF palette image (built once): black, white, the part, grey and faded colours, a 6x6x6 colour
    cube, then a grey ramp up to 256 entries (RGB order, as Pillow's)."""
    if not _PALETTE:
        from PIL import Image
        exact = [(0, 0, 0), (255, 255, 255)] + [c[::-1] for c in _COLOURS + [UNREAD_COLOUR]]
        exact += [tuple(round(FADE * v) for v in c) for c in exact[2:]]
        cube = [(r, g, b) for r in range(0, 256, 51) for g in range(0, 256, 51) for b in range(0, 256, 51)]
        ramp = [(v, v, v) for v in np.linspace(8, 248, 256 - len(exact) - len(cube)).astype(int)]
        palette = Image.new("P", (1, 1))
        palette.putpalette([int(v) for colour in exact + cube + ramp for v in colour])
        _PALETTE.append(palette)
    return _PALETTE[0]


# ----------------------------------------------------------------------------- subtitles
def subtitle_strip(text, width):
    """(bgr (h, width, 3), mask (h, width)) of `text` in white with a black outline, wrapped to `width`,
    drawn once with Pillow (OpenCV's fonts are ASCII only) and pasted under every frame. None when no
    installed font has all of the text's characters (the caller's .srt file still carries it)."""
    from PIL import Image, ImageDraw, ImageFont
    font_file = subtitle_font(text)
    if font_file is None:
        return None
    font = ImageFont.truetype(font_file, max(12, width // 28))
    lines = _wrap(text, font, width - 16)
    line_height = font.size + 6
    strip = Image.new("RGBA", (width, line_height * len(lines) + 10), (0, 0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for row, line in enumerate(lines):
        x = (width - font.getlength(line)) / 2
        draw.text((x, 4 + row * line_height), line, font=font, fill=(255, 255, 255, 255), stroke_width=2,
                  stroke_fill=(0, 0, 0, 255))
    pixels = np.asarray(strip)
    return np.ascontiguousarray(pixels[..., 2::-1]), pixels[..., 3] > 127


def _wrap(text, font, width):
    """Greedy line breaking at spaces, or between any characters for scripts written without them."""
    pieces = text.split(" ") if " " in text else list(text)
    joiner = " " if " " in text else ""
    lines = [""]
    for piece in pieces:
        candidate = lines[-1] + joiner + piece if lines[-1] else piece
        if font.getlength(candidate) <= width or not lines[-1]:
            lines[-1] = candidate
        else:
            lines.append(piece)
    return lines


@functools.lru_cache(maxsize=64)
def subtitle_font(text):
    """A font file with every character of `text`: matplotlib's DejaVu Sans when it has them, else the
    first of matplotlib's list of installed fonts whose character map covers them (CJK needs e.g. Noto
    Sans CJK), else None."""
    from fontTools.ttLib import TTFont, TTLibError
    from matplotlib import font_manager
    needed = {ord(c) for c in text if not c.isspace()}
    candidates = [font_manager.findfont("DejaVu Sans")] + sorted({f.fname for f in font_manager.fontManager.ttflist})
    for path in candidates:
        try:
            with TTFont(path, fontNumber=0, lazy=True) as font:
                if needed <= set(font.getBestCmap() or {}):
                    return path
        except (TTLibError, OSError):
            continue
    return None


def write_srt(path, text, seconds):
    """A one-cue SubRip file showing `text` from 0 to `seconds` (players render any script, fonts or not)."""
    millis = max(1, round(seconds * 1000))
    end = f"{millis // 3600000:02d}:{millis // 60000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"1\n00:00:00,000 --> {end}\n{text}\n\n")
