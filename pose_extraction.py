"""Whole-body poses from videos or frame folders, written as Uni-Sign pose pickles (the format: docs/design.md)
or `.pose` files (pose_files.py).

rtmlib's whole-body pipeline on onnxruntime: a YOLOX person detector, then RTMPose/RTMW (COCO-WholeBody,
133 keypoints) on the largest person's box. Shared by script/extract_poses.py and script/translate_video.py.

A frame folder (numbered png/jpg images, e.g. PHOENIX-2014T's images0001.png ...) is a video wherever a video
file is: its frames in the order of the number in their names, at a given rate (25 fps by default, PHOENIX's).

Public: PoseEstimator, extract_video, write_pose, pose_path_for, find_videos, is_frame_folder, VideoReader,
MODES, FORMATS, ExtractionError (VideoError, NoPersonError), ModelError.
"""
import contextlib
import os
import pickle
import re
import sys

import numpy as np

from atomic import atomic_open

# FFmpeg's own complaints about a broken file would interleave with ours; ours name the file and the fix.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
import cv2  # noqa: E402

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")
FRAME_FOLDER_FPS = 25.0  # PHOENIX-2014T's rate; --fps sets another
FORMATS = {"pkl": ".pkl", "pose": ".pose"}
MODES = ("lightweight", "balanced", "performance")  # rtmlib's Wholebody.MODE; lightweight is Uni-Sign's demo's


class ExtractionError(RuntimeError):
    """A video that yields no pose file; the message names the video."""


class VideoError(ExtractionError):
    """An unreadable, corrupt or empty video."""


class NoPersonError(ExtractionError):
    """A video in which the detector finds nobody in any frame."""


class ModelError(ValueError):
    """Pose models that cannot be loaded (missing file, failed download, no CUDA provider)."""


# ----------------------------------------------------------------------------- videos
class VideoReader:
    """Frames of a video, one at a time (BGR uint8, as rtmlib expects): memory stays one frame whatever the
    length. `fps` is the container's (None when it does not say); `size` (w, h) is known after the first frame."""

    def __init__(self, path, fps=None):
        self.path, self.frames = path, None
        if os.path.isdir(path):
            self._open_frame_folder(fps)
            return
        if not os.path.isfile(path):
            raise VideoError(f"{path}: video not found")
        self.capture = cv2.VideoCapture(path)
        if not self.capture.isOpened():
            raise VideoError(f"{path}: cannot be opened as a video (corrupt, truncated or an unknown format)")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
        self.frame_count = max(int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)  # the container's estimate
        self.size = None

    def _open_frame_folder(self, fps):
        self.frames = frame_files(self.path)
        if not self.frames:
            raise VideoError(f"{self.path}: a folder without frame images ({', '.join(FRAME_EXTENSIONS)}): not a "
                             "video")
        self.fps, self.frame_count, self.capture = float(fps or FRAME_FOLDER_FPS), len(self.frames), None
        self.size = None

    def declared_size(self):
        """(w, h) the container states (a frame folder: its first frame's), before any frame is read."""
        if self.frames is not None:
            return self._read_frame(self.frames[0]).shape[1::-1]
        return (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def _read_frame(self, name):
        image = cv2.imread(os.path.join(self.path, name), cv2.IMREAD_COLOR)
        if image is None:
            raise VideoError(f"{self.path}: frame {name} cannot be read (corrupt or not an image); replace or "
                             "remove it")
        return image

    def __iter__(self):
        if self.frames is not None:
            for name in self.frames:
                frame = self._read_frame(name)
                if self.size is None:
                    self.size = (frame.shape[1], frame.shape[0])
                elif (frame.shape[1], frame.shape[0]) != self.size:
                    raise VideoError(f"{self.path}: frame {name} is {frame.shape[1]}x{frame.shape[0]}, the frames "
                                     f"before it {self.size[0]}x{self.size[1]}: one folder must hold one video")
                yield frame
            return
        while True:
            ok, frame = self.capture.read()
            if not ok:
                return
            if self.size is None:
                self.size = (frame.shape[1], frame.shape[0])
            yield frame

    def close(self):
        if self.capture is not None:
            self.capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def frame_files(folder):
    """The frame images of a folder (png/jpg), in the order of the last number in their names (images2.png
    before images10.png); [] when it holds none."""
    names = [name for name in os.listdir(folder) if name.lower().endswith(FRAME_EXTENSIONS)]

    def number(name):
        digits = re.findall(r"\d+", name)
        return (int(digits[-1]) if digits else -1, name)
    return sorted(names, key=number)


def is_frame_folder(path):
    return os.path.isdir(path) and any(name.lower().endswith(FRAME_EXTENSIONS) for name in os.listdir(path))


def find_videos(src):
    """The videos under folder `src` (video files by extension, and frame folders), sorted; [src] for a file
    or a frame folder."""
    if os.path.isfile(src) or is_frame_folder(src):
        return [src]
    found = []
    for folder, subfolders, files in os.walk(src):
        subfolders.sort()
        if folder != src and any(name.lower().endswith(FRAME_EXTENSIONS) for name in files):
            found.append(folder)  # a frame folder: one video (its subfolders are not searched)
            subfolders.clear()
            continue
        found += [os.path.join(folder, name) for name in sorted(files) if name.lower().endswith(VIDEO_EXTENSIONS)]
    return sorted(found)


def pose_path_for(video, src, out, extension=".pkl"):
    """Where a video's pose file goes: <out>/<video path relative to src, extension -> .pkl> (the path the
    dataset code reads for label video_path; a frame folder <split>/<name> gives <split>/<name>.pkl, PHOENIX's);
    for a single-file or single-frame-folder src, <out>/<its name>.pkl. `extension`: .pose for .pose files."""
    single = os.path.isfile(src) or os.path.normpath(video) == os.path.normpath(src)
    relative = os.path.basename(os.path.normpath(video)) if single else os.path.relpath(video, src)
    stem = relative if os.path.isdir(video) else os.path.splitext(relative)[0]
    return os.path.join(out, stem + extension)


# ----------------------------------------------------------------------------- the pose models
def _input_shape(session):
    """(height, width) of a model's (1, 3, H, W) input, or None where the ONNX file leaves them dynamic."""
    shape = session.get_inputs()[0].shape
    return tuple(shape[2:4]) if len(shape) == 4 and all(isinstance(s, int) for s in shape[2:4]) else None


def _model_file(path, url, flag):
    """A local ONNX file as given, or rtmlib's URL with a note on stderr when it still has to be downloaded."""
    if path is not None:
        if not os.path.isfile(path):
            raise ModelError(f"{flag} {path}: no such file")
        return path
    from rtmlib.tools.file import _get_rtmhub_dir
    cache = os.path.join(_get_rtmhub_dir(), "checkpoints")
    name = os.path.basename(url).split(".")[0] + ".onnx"
    if not os.path.isfile(os.path.join(cache, name)):
        sys.stderr.write(f"pose models: downloading {url} to {cache} (once; later runs use the cached file; "
                         "TORCH_HOME or XDG_CACHE_HOME move the cache)\n")
    return url


def _onnxruntime_errors():
    """The exception classes onnxruntime raises for a file it cannot load (they derive from Exception only)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph", "RuntimeException")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


class PoseEstimator:
    """rtmlib's YOLOX + RTMPose whole-body pair; call it on a BGR frame.

    mode picks rtmlib's models (downloaded and cached by rtmlib); det_model / pose_model are local ONNX files
    instead (their input sizes are read from the files). threads caps onnxruntime's threads per model
    (None: onnxruntime's default, every core).
    """

    def __init__(self, mode="lightweight", det_model=None, pose_model=None, device="cpu", threads=None):
        import onnxruntime
        from rtmlib import RTMPose, YOLOX, Wholebody
        if mode not in MODES:
            raise ModelError(f"--mode {mode}: choose one of {', '.join(MODES)}")
        if device not in ("cpu", "cuda"):
            raise ModelError(f"--device {device}: choose cpu or cuda")
        if device == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise ModelError("--device cuda: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu "
                             "in place of onnxruntime), or use --device cpu")
        settings = Wholebody.MODE[mode]
        det_file = _model_file(det_model, settings["det"], "--det_model")
        pose_file = _model_file(pose_model, settings["pose"], "--pose_model")
        try:
            with contextlib.redirect_stdout(sys.stderr):  # rtmlib prints what it loads; stdout is for results
                self.detector = YOLOX(det_file, model_input_size=settings["det_input_size"], backend="onnxruntime",
                                      device=device)
                self.pose_model = RTMPose(pose_file, model_input_size=settings["pose_input_size"],
                                          backend="onnxruntime", device=device)
        except OSError as error:  # urllib's errors are OSErrors
            raise ModelError(f"could not download the {mode} pose models ({error}); on a machine without internet "
                             "pass local files with --det_model X.onnx --pose_model Y.onnx") from error
        except _onnxruntime_errors() as error:
            raise ModelError(f"onnxruntime cannot load the pose models {det_file}, {pose_file}: {error}") from error
        for tool, path in ((self.detector, det_model), (self.pose_model, pose_model)):
            if threads:
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                tool.session = onnxruntime.InferenceSession(tool.onnx_model, sess_options=options,
                                                            providers=tool.session.get_providers())
            if device == "cuda" and "CUDAExecutionProvider" not in tool.session.get_providers():
                # onnxruntime falls back to the CPU with a mere warning when its CUDA provider fails to load
                # (a CUDA or cuDNN version that onnxruntime-gpu was not built for)
                raise ModelError(f"--device cuda: onnxruntime could not use the GPU for {tool.onnx_model} and fell "
                                 "back to the CPU; install the onnxruntime-gpu build for this machine's CUDA and "
                                 "cuDNN, or use --device cpu")
            if tool.mean is not None:  # rtmlib's (crop - mean) / std then runs in float32, the model's input
                tool.mean, tool.std = np.float32(tool.mean), np.float32(tool.std)  # type, not float64 (3x faster)
            shape = _input_shape(tool.session)
            if path is not None and shape is not None:  # YOLOX takes (H, W), RTMPose (w, h)
                tool.model_input_size = shape if tool is self.detector else shape[::-1]

    def __call__(self, frame):
        """(keypoints (133, 2) in pixels, scores (133,), whether a person was detected). With several people
        the largest box is kept; with none, rtmlib's fallback runs the pose model on the whole frame."""
        boxes = np.asarray(self.detector(frame), dtype=np.float64).reshape(-1, 4)
        if len(boxes):
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            boxes = boxes[[int(np.argmax(areas))]]
        keypoints, scores = self.pose_model(frame, bboxes=list(boxes))
        return keypoints[0], scores[0], len(boxes) > 0


# ----------------------------------------------------------------------------- one video
def extract_video(path, estimator, progress=False, fps=None):
    """A video's pose dict: keypoints (T, 1, 133, 2) float32 divided by the frame's (w, h), scores (T, 1, 133)
    float32, w_h (w, h), fps; and num_fallback_frames, the frames where nobody was detected (kept, from the
    whole-frame fallback). Frames are streamed. `fps`: a frame folder's rate (default 25). Raises VideoError /
    NoPersonError naming the video (a frame folder's unreadable frame by its name)."""
    from tqdm import tqdm
    keypoints, scores, fallback = [], [], 0
    with VideoReader(path, fps) as video:
        bar = tqdm(total=video.frame_count or None, desc=os.path.basename(path), unit="frame", leave=False,
                   disable=not progress, dynamic_ncols=True)
        with bar:
            for frame in video:
                points, confidence, found = estimator(frame)
                keypoints.append(points.astype(np.float32))
                scores.append(confidence.astype(np.float32))
                fallback += not found
                bar.update()
        size, fps = video.size, video.fps
    if not keypoints:
        raise VideoError(f"{path}: no frame could be decoded (corrupt, truncated or empty video)")
    if fallback == len(keypoints):
        raise NoPersonError(f"{path}: no person detected in any of its {len(keypoints)} frames")
    keypoints = np.stack(keypoints)[:, None] / np.array(size, dtype=np.float32)
    return {"keypoints": keypoints.astype(np.float32), "scores": np.stack(scores)[:, None],
            "w_h": tuple(size), "fps": fps, "num_fallback_frames": fallback}


def write_pose(pose, path):
    """Pickle the pose dict to `path` atomically (a temporary file next to it, then a rename): an interrupted
    run never leaves a half-written pickle that a resumed run would take for a finished one. A path ending in
    .pose is written as a COCO-WholeBody `.pose` file instead (pose_files.write_pose_file, atomic too)."""
    if path.endswith(".pose"):
        import pose_files
        pose_files.write_pose_file(pose, path)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, "wb") as f:
        pickle.dump(pose, f, protocol=4)
