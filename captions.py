"""Long videos with timed captions as a dataset: each caption is a clip of its video's pose file (docs/captions.md).

A corpus is a folder of long-video pose files (`VIDEO.pkl`) beside their captions (`VIDEO.vtt`, `VIDEO.srt`, or
yt-dlp's `VIDEO.LANG.vtt`), optionally named by a video list (YouTube-ASL's released id list: one id a line), or a
How2Sign-style CSV/TSV of video, start, end (seconds) and text. A caption from start to end seconds is frames
[round(start * fps), round(end * fps)) of its video; the sample index stores that range, and the loader reads only
those frames (pose_clips.py). Folders and lists are split by video, deterministically: videos ordered by the CRC-32
of their name, the last DEV_FRACTION of them (at least one) held out as dev (and test), so no video is in two
splits; a CSV is one split as it is (How2Sign ships one per split).

Public: CAPTION_DATASETS, CaptionConfig, add_caption_flags, CAPTION_FLAG_RULES, check_caption_flags,
is_caption_corpus, is_caption_folder, read_clip_index, parse_captions, clean_text.
"""
import csv
import dataclasses
import functools
import html
import os
import re
import zlib

import numpy as np
from tqdm import tqdm

import pose_clips
import utils
from sample_index import LabelFileError, RepeatedStrings, SampleIndex, refuse_duplicate_names, string_table

CAPTION_DATASETS = ("YouTubeASL", "Captions")
CAPTION_EXTENSIONS = (".vtt", ".srt")
TABLE_EXTENSIONS = (".csv", ".tsv")
DEV_FRACTION = 0.01  # as CSL-News's held-out 1 %
BEYOND_END_TOLERANCE_S = 1.0  # a caption ending this little past the video's last frame is cut to it, and counted
# Column names of a caption table: How2Sign's realigned timings first, then plain ones.
COLUMNS = {"video": ("VIDEO_NAME", "video"), "start": ("START_REALIGNED", "START", "start"),
           "end": ("END_REALIGNED", "END", "end"), "text": ("SENTENCE", "text"), "name": ("SENTENCE_NAME", "name")}


# ----------------------------------------------------------------------------- flags
@dataclasses.dataclass(frozen=True)  # hashable: the parsed corpus is cached per settings
class CaptionConfig:
    """The settings read_clip_index reads, with their one default (sources in docs/captions.md)."""
    min_clip_s: float = 0.2
    max_clip_s: float = 60.0
    fps: float = 0.0  # 0: each pose file's own
    skip_bad_samples: bool = False

    from_args = classmethod(utils.config_from_args)


def add_caption_flags(parser):
    """The caption-corpus flags (fine_tuning.py's and so pretraining.py's)."""
    defaults = CaptionConfig()
    group = parser.add_argument_group("captioned long videos (docs/captions.md)")
    group.add_argument("--captions", default=None, metavar="DIR",
                       help="a folder of long-video pose files beside their .vtt/.srt captions: pretrain on its clips")
    group.add_argument("--min_clip_s", type=float, default=defaults.min_clip_s, help="skip shorter captions (seconds)")
    group.add_argument("--max_clip_s", type=float, default=defaults.max_clip_s, help="skip longer captions (seconds)")
    group.add_argument("--fps", type=float, default=defaults.fps,
                       help="frame rate of pose files that do not store theirs (0: each file's own)")
    return parser


def _positive(value):
    return np.isfinite(value) and value > 0


# The caption flags' ranges, in preflight.FLAG_RULES's form (flag, attribute, valid, what it takes).
CAPTION_FLAG_RULES = (
    ("--min_clip_s", "min_clip_s", lambda value: np.isfinite(value) and value >= 0, "0 (no minimum) or more seconds"),
    ("--max_clip_s", "max_clip_s", _positive, "a positive number of seconds"),
    ("--fps", "fps", lambda value: value == 0 or _positive(value), "0 (each pose file's own) or a positive rate"),
)


def check_caption_flags(args):
    """--min_clip_s below --max_clip_s (their ranges: CAPTION_FLAG_RULES, in preflight's); else one `error:` line."""
    if args.min_clip_s >= args.max_clip_s:
        utils.fail(f"--min_clip_s {args.min_clip_s} is not below --max_clip_s {args.max_clip_s}: no clip would be kept")


def resolve_captions(args):
    """--captions DIR: the clips of DIR's captioned long videos are the data (dataset "Captions" unless
    --dataset names another caption corpus), every split read from DIR (dev and test: its held-out videos)."""
    if args.captions:
        if args.dataset not in CAPTION_DATASETS:
            args.dataset = "Captions"
        for phase in ("train", "dev", "test"):
            setattr(args, f"{phase}_label_path", getattr(args, f"{phase}_label_path") or args.captions)
        args.pose_dir = args.pose_dir or args.captions
    return args


# ----------------------------------------------------------------------------- caption files
class CaptionError(ValueError):
    """A caption file or entry that cannot become a clip; the message names the file and line."""


_VTT_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_VTT_TIME}\s*-->\s*{_VTT_TIME}(?:\s.*)?$")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # WebVTT's <c>, <i>, <00:01.000>; SubRip's {\an8}
_SOUND = re.compile(r"\[[^\]]*\]|[♪♫♬]")  # [MUSIC], [APPLAUSE], music notes


def _seconds(groups):
    hours, minutes, seconds, fraction = groups
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction.ljust(3, "0")) / 1000


def clean_text(lines):
    """One caption's text as YouTube-ASL uses it: lines joined by spaces, markup and HTML entities decoded away,
    sound tags ([MUSIC], notes) removed, whitespace collapsed; case and punctuation kept (mT5 reads them).
    An empty result means the caption has nothing to learn and is dropped."""
    text = html.unescape(_TAG.sub("", " ".join(lines)))
    return " ".join(_SOUND.sub(" ", text).split())


def parse_captions(path):
    """[(line, start_s, end_s, text lines)] of a .vtt or .srt file, in file order; CaptionError names the line."""
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    webvtt = path.endswith(".vtt")
    if webvtt and not (lines and lines[0].startswith("WEBVTT")):
        raise CaptionError(f"{path}:1: a WebVTT file starts with 'WEBVTT', found {lines[0][:40] if lines else ''!r}")
    cues, i = [], 0
    while webvtt and i < len(lines) and lines[i].strip():  # the header block (WEBVTT, Kind:, Language:)
        i += 1
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        block = i
        while i < len(lines) and lines[i].strip():
            i += 1
        timing = next((j for j in range(block, min(block + 2, i)) if "-->" in lines[j]), None)
        if timing is None:
            if webvtt and lines[block].split(None, 1)[0] in ("NOTE", "STYLE", "REGION"):
                continue
            raise CaptionError(f"{path}:{block + 1}: expected a cue's timing line ('00:00:01.000 --> 00:00:02.500'), "
                               f"found {lines[block][:60]!r}")
        match = _TIMING.match(lines[timing])
        if match is None:
            raise CaptionError(f"{path}:{timing + 1}: unreadable timing line {lines[timing][:60]!r} (expected "
                               "'HH:MM:SS.mmm --> HH:MM:SS.mmm')")
        cues.append((timing + 1, _seconds(match.groups()[:4]), _seconds(match.groups()[4:]), lines[timing + 1:i]))
    return cues


def read_caption_table(path):
    """[(video, name or None, line, start_s, end_s, text)] of a CSV/TSV with a header (How2Sign's columns or
    video/start/end/text[/name]); CaptionError names the line."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = f.readline()
        delimiter = "\t" if "\t" in header or path.endswith(".tsv") else ","
        reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        names = next(csv.reader([header], delimiter=delimiter))
        where = {}
        for column, aliases in COLUMNS.items():
            found = next((names.index(a) for a in aliases if a in names), None)
            if found is None and column != "name":
                raise CaptionError(f"{path}:1: no {column} column (one of {', '.join(aliases)}) in the header")
            where[column] = found
        rows = []
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            try:
                get = {column: row[at] if at is not None else None for column, at in where.items()}
                rows.append((get["video"], get["name"], number, float(get["start"]), float(get["end"]), get["text"]))
            except (IndexError, ValueError) as error:
                raise CaptionError(f"{path}:{number}: malformed row ({error}): {delimiter.join(row)[:80]!r}") from None
    return rows


# ----------------------------------------------------------------------------- the corpus
def is_caption_corpus(dataset_name, label_path):
    """Whether build_dataset reads `label_path` with read_clip_index: a caption dataset's labels, or a caption
    table or folder given for any dataset but PHOENIX-2014T (whose corpus CSV is its labels: phoenix_labels.py)."""
    return (dataset_name in CAPTION_DATASETS or os.path.isdir(label_path)
            or (os.path.splitext(label_path)[1].lower() in TABLE_EXTENSIONS and dataset_name != "Phoenix2014T"))


def is_caption_folder(dataset_name, label_path):
    """A folder is a caption corpus's label path (a pose folder with captions beside its files)."""
    return os.path.isdir(label_path)


def read_clip_index(dataset_name, phase, label_path, pose_dir, args):
    """The SampleIndex of one phase's clips ({"name", "pose_path", "text", "frames": (start, end)}); a problem
    with the corpus is a LabelFileError naming the file (and line), or, with --skip_bad_samples, skipped and
    counted in a `warning:` line that names the first few."""
    settings = CaptionConfig.from_args(args)
    path = os.path.abspath(label_path)
    index, dev_start = _clip_index(path, os.path.getmtime(path), os.path.abspath(pose_dir), settings)
    if not _is_table(path):  # a folder or a video list: the held-out videos are dev and test
        index = index.slice(0, dev_start) if phase == "train" else index.slice(dev_start, len(index))
    if len(index) == 0:
        raise LabelFileError(f"{label_path}: no {phase} clips in it: every caption was dropped or "
                                      "skipped (see the counts above)")
    if phase != "train":  # predictions are matched to references by name (a table's SENTENCE_NAME may repeat)
        refuse_duplicate_names(index, label_path, phase)
    return index


def _is_table(path):
    return os.path.splitext(path)[1].lower() in TABLE_EXTENSIONS


class _Corpus:
    """What one pass over a corpus gathers: the clip columns, the counts of what was dropped, the skipped."""

    def __init__(self, label_path, pose_dir, skip_bad_samples):
        self.label_path, self.pose_dir, self.skip_bad_samples = label_path, pose_dir, skip_bad_samples
        self.names_list, self.texts_list, self.pose_paths, self.codes, self.frames = [], [], [], [], []
        self.dropped, self.skipped = dict.fromkeys(_DROPS, 0), []

    def add(self, pose_file, clips):
        """One video's clips, after those added before."""
        self.names_list.extend(c[0] for c in clips)
        self.texts_list.extend(c[3] for c in clips)
        self.codes.append(np.full(len(clips), len(self.pose_paths), np.int32))
        self.frames.append(np.array([(c[1], c[2]) for c in clips], np.int32).reshape(-1, 2))
        self.pose_paths.append(pose_file)

    def build(self):
        """The SampleIndex of every clip added (columns built in one pass each)."""
        codes = np.concatenate(self.codes) if self.codes else np.zeros(0, np.int32)
        frames = np.concatenate(self.frames) if self.frames else np.zeros((0, 2), np.int32)
        names, texts = string_table(self.names_list), string_table(self.texts_list)
        self.names_list, self.texts_list = [], []
        return SampleIndex(RepeatedStrings(string_table(self.pose_paths), codes), texts, self.pose_dir,
                           names=names, frames=frames)

    def bad(self, message):
        """A problem a user must fix: raised, or with --skip_bad_samples kept to be counted and named."""
        if not self.skip_bad_samples:
            raise LabelFileError(f"{message}; fix it, or pass --skip_bad_samples to skip and count it")
        self.skipped.append(message)


_DROPS = ("empty or sound-only", "shorter than --min_clip_s", "longer than --max_clip_s", "cut at the video's end")


@functools.lru_cache(maxsize=2)
def _clip_index(label_path, mtime, pose_dir, settings):
    """(the whole corpus's SampleIndex, the first dev clip): parsed once per process (train, dev and test slice
    it; mtime in the key re-reads a changed file). Train videos' clips first, then the held-out videos': the last
    DEV_FRACTION (at least one) of the videos that give clips, in split order."""
    corpus = _Corpus(label_path, pose_dir, settings.skip_bad_samples)
    videos = _videos(label_path, pose_dir, corpus)
    kept = []
    for video, pose_file, captions in tqdm(videos, desc="captions", unit="video", leave=False,
                                           disable=not utils.is_main_process()):
        clips = _video_clips(corpus, video, pose_file, captions, settings)
        if clips:
            kept.append((pose_file, clips))
    held_out = 0 if _is_table(label_path) else max(1, round(len(kept) * DEV_FRACTION))
    if held_out and len(kept) < 2:
        raise LabelFileError(f"{label_path}: {len(kept)} video(s) give clips: a held-out dev split "
                                      "needs at least 2 (splits are by video)")
    for pose_file, clips in kept:
        corpus.add(pose_file, clips)
    _report(corpus, len(videos))
    dev_start = len(corpus.names_list) - sum(len(clips) for _, clips in kept[len(kept) - held_out:])
    return corpus.build(), dev_start


def _videos(label_path, pose_dir, corpus):
    """[(video, pose path relative to pose_dir, captions)] in split order; captions: a caption file's path, or
    a list of a table's rows. Videos lacking a pose file or captions go to corpus.bad."""
    if _is_table(label_path):
        try:
            rows = read_caption_table(label_path)
        except (CaptionError, OSError, UnicodeDecodeError) as error:
            raise LabelFileError(str(error)) from None
        by_video = {}
        for row in rows:
            by_video.setdefault(row[0], []).append(row)
        poses = _pose_files(pose_dir)
        videos = []
        for video, video_rows in by_video.items():
            if video not in poses:
                corpus.bad(f"{label_path}:{video_rows[0][2]}: video {video!r} has no pose file in {pose_dir}")
                continue
            videos.append((video, poses[video], video_rows))
        return videos
    poses = _pose_files(pose_dir)
    captions = _caption_files(label_path if os.path.isdir(label_path) else pose_dir, poses)
    if os.path.isdir(label_path):
        names = sorted(set(poses) | set(captions))
    else:  # a list of video ids (YouTube-ASL's youtube_asl_video_ids.txt)
        with open(label_path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    videos = []
    for video in sorted(set(names), key=lambda name: (zlib.crc32(name.encode("utf-8")), name)):
        found = captions.get(video, [])
        if video not in poses or len(found) != 1:
            problem = ("has no pose file" if video not in poses else "has no captions (.vtt or .srt)" if not found
                       else f"has {len(found)} caption files ({', '.join(sorted(found))}): keep one")
            corpus.bad(f"{label_path}: video {video!r} {problem} in {pose_dir}")
            continue
        videos.append((video, poses[video], found[0]))
    return videos


def _pose_files(folder):
    """{video: pose file name} of a folder's pose files (every extension pose_clips reads)."""
    found = {}
    for entry in sorted(os.listdir(folder)):
        stem, extension = os.path.splitext(entry)
        if extension in pose_clips.CLIP_READERS:
            found.setdefault(stem, entry)
    return found


def _caption_files(folder, poses):
    """{video: [caption paths]}: VIDEO.vtt / VIDEO.srt, or VIDEO.LANG.vtt as yt-dlp names them (a stem that is a
    pose file's video is that video, even when it ends like a language code)."""
    found = {}
    for entry in os.listdir(folder):
        stem, extension = os.path.splitext(entry)
        if extension.lower() in CAPTION_EXTENSIONS:
            base, language = os.path.splitext(stem)
            is_language = re.fullmatch(r"\.[A-Za-z]{2,3}(-[A-Za-z0-9]+)*", language) and stem not in poses
            video = base if is_language else stem
            found.setdefault(video, []).append(os.path.join(folder, entry))
    return found


def _video_clips(corpus, video, pose_file, captions, settings):
    """One video's clips [(name, first frame, end frame, text)]; a bad file is reported to corpus.bad."""
    try:
        if isinstance(captions, str):
            source = captions
            cues = [(f"{video}_{k:05d}", line, start, end, clean_text(text))
                    for k, (line, start, end, text) in enumerate(parse_captions(captions), start=1)]
        else:
            source = corpus.label_path
            cues = [(name or f"{video}_{k:05d}", line, start, end, clean_text([text]))
                    for k, (_, name, line, start, end, text) in enumerate(captions, start=1)]
    except (CaptionError, UnicodeDecodeError, OSError) as error:
        return corpus.bad(str(error) if isinstance(error, CaptionError) else f"{captions}: unreadable ({error})")
    full_pose_path = os.path.join(corpus.pose_dir, pose_file)
    try:
        num_frames, fps = pose_clips.probe(full_pose_path)
    except (OSError, ValueError, TypeError, EOFError) as error:
        return corpus.bad(f"{full_pose_path}: unreadable pose file ({type(error).__name__}: {error})")
    fps = fps or settings.fps
    if not fps:
        return corpus.bad(f"{full_pose_path}: the pose file stores no fps: pass --fps (the videos' frame rate)")
    return _clips(corpus, source, cues, num_frames, fps, settings)


def _clips(corpus, source, cues, num_frames, fps, settings):
    """[(name, first frame, end frame, text)] of one video's cues that make clips; the rest counted or bad."""
    kept, previous_end, previous_line = [], None, None
    tolerance = round(BEYOND_END_TOLERANCE_S * fps)
    for name, line, start, end, text in cues:
        where = f"{source}:{line}"
        if not (np.isfinite(start) and np.isfinite(end) and start >= 0) or end < start:
            corpus.bad(f"{where}: caption times reversed or invalid (starts at {start} s, ends at {end} s)")
            continue
        if previous_end is not None and start < previous_end - 0.5 / fps:
            corpus.bad(f"{where}: caption starts at {start:.3f} s, before the previous one (line {previous_line}) "
                       f"ends at {previous_end:.3f} s: overlapping captions")
            continue
        previous_end, previous_line = end, line
        first, last = round(start * fps), round(end * fps)
        if first >= num_frames or last > num_frames + tolerance:
            corpus.bad(f"{where}: caption ends at {end:.3f} s, past the pose file's {num_frames} frames "
                       f"({num_frames / fps:.3f} s at {fps:g} fps)")
            continue
        if not text:
            corpus.dropped["empty or sound-only"] += 1
        elif last - first < 1 or end - start < settings.min_clip_s:
            corpus.dropped["shorter than --min_clip_s"] += 1
        elif end - start > settings.max_clip_s:
            corpus.dropped["longer than --max_clip_s"] += 1
        else:
            if last > num_frames:
                corpus.dropped["cut at the video's end"] += 1
                last = num_frames
            kept.append((name, first, last, text))
    return kept


def _report(corpus, num_videos):
    if not utils.is_main_process():
        return
    clips = len(corpus.names_list)
    counts = ", ".join(f"{count} {what}" for what, count in corpus.dropped.items() if count)
    print(f"captions: {clips} clips from {len(corpus.pose_paths)} of {num_videos} videos ({corpus.label_path})"
          + (f"; not clips: {counts}" if counts else ""))
    if corpus.skipped:
        named = "; ".join(corpus.skipped[:3]) + ("; ..." if len(corpus.skipped) > 3 else "")
        print(f"warning: --skip_bad_samples: skipped {len(corpus.skipped)} bad caption files, captions or videos: "
              f"{named}")
