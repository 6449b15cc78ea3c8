"""`.pose` files (the pose-format library's binary format), read into our pose arrays and written from them.

Reading goes through pose-format's own header and body readers; the layout comes from the header's component
and point names (pose_layouts.py) and is mapped onto COCO-WholeBody's points. Coordinates are divided by the
header's frame (width, height), as our pickles store them; confidence is the file's, 0 where pose-format's
masked array masks a point. Writing stores COCO-WholeBody 133 with pose-format's own header for it, so that
pose-format's tools (its visualiser, its normalisation) read our files.

Public: read_pose_file, write_pose_file, layout_mismatch_warning, PoseRecord, PoseFileError, POSE_EXTENSION,
TRAINED_LAYOUT, sibling_pose_file.
"""
import dataclasses
import os
import struct

import numpy as np
import numpy.ma as ma
from pose_format import Pose
from pose_format.numpy.pose_body import NumPyPoseBody
from pose_format.pose_header import PoseHeader, PoseHeaderDimensions
from pose_format.utils.cocowholebody133_header import cocowholebody_components
from pose_format.utils.reader import BufferReader

import pose_layouts
from atomic import atomic_open

POSE_EXTENSION = ".pose"
# What every checkpoint this project trains or loads saw: RTMPose's COCO-WholeBody points (pickles or .pose).
TRAINED_LAYOUT = "coco_wholebody_133"
DEFAULT_FPS = 25.0  # written when a video does not state its rate (PHOENIX-2014T's and most corpora's)


class PoseFileError(ValueError):
    """A `.pose` file that cannot give a sample; the message names the file and the problem."""


@dataclasses.dataclass
class PoseRecord:
    """One person of a `.pose` file on COCO-WholeBody's points: keypoints (T, 133, 2) divided by the frame size,
    scores (T, 133); layout name, fps, size (w, h) or None, people (T,) detected per frame (None unless asked
    for), missing: the model's
    COCO-WholeBody indices the layout lacks."""
    keypoints: np.ndarray
    scores: np.ndarray
    layout: str
    fps: float
    size: tuple
    people: np.ndarray
    missing: tuple


def sibling_pose_file(path):
    """The `.pose` file that stands for a missing pickle: same path, extension .pose."""
    return os.path.splitext(path)[0] + POSE_EXTENSION


def read_pose_file(path, person=0, count_people=False):
    """The PoseRecord of person `person` (0: the first) of a `.pose` file; PoseFileError naming the file for a
    missing, empty, truncated or foreign file, an unknown layout, no frames, no people, or NaN coordinates
    among the points read. count_people: fill PoseRecord.people (else None)."""
    header, body = _read(path)
    components = [(component.name, component.points) for component in header.components]
    try:
        mapping = pose_layouts.point_map(components)
    except pose_layouts.LayoutError as error:
        raise PoseFileError(f"{path}: {error}") from error
    frames, people = body.data.shape[:2]
    if frames == 0:
        raise PoseFileError(f"{path}: no frames")
    if people == 0:
        raise PoseFileError(f"{path}: no person in any frame (0 people stored)")
    if not 0 <= person < people:
        raise PoseFileError(f"{path}: person {person} asked for, but it stores {people} (numbered from 0)")
    # Only the points the model reads are taken (a full Holistic file stores 586 of which 75 are used).
    xy = ma.getdata(body.data)[:, person].take(mapping.columns, axis=1)[..., :2].astype(np.float32)
    confidence = ma.getdata(body.confidence)[:, person].take(mapping.columns, axis=1).astype(np.float32)
    mask = ma.getmask(body.data)
    if mask is not ma.nomask:
        confidence *= ~mask[:, person, :, 0].take(mapping.columns, axis=1)
    found = confidence > 0
    if not (np.isfinite(xy).all() and np.isfinite(confidence).all()):  # the rare case: find where
        broken = ((~np.isfinite(xy[..., 0]) | ~np.isfinite(xy[..., 1])) & found) | ~np.isfinite(confidence)
        if broken.any():
            frames_broken = np.unique(np.nonzero(broken)[0])[:10].tolist()
            raise PoseFileError(f"{path}: NaN or inf values in frame(s) {frames_broken}")
        xy = np.where(found[..., None], xy, np.float32(0))  # a masked point's NaN placeholder
    size = (header.dimensions.width, header.dimensions.height)
    if size[0] > 0 and size[1] > 0:
        xy /= np.array(size, dtype=np.float32)
    else:
        size = None
    xy *= found[..., None]
    keypoints, scores = pose_layouts.gather(mapping, xy, confidence)
    fps = float(body.fps) if body.fps and np.isfinite(body.fps) and body.fps > 0 else None
    return PoseRecord(keypoints, scores, mapping.layout, fps, size,
                      _people_per_frame(body) if count_people else None, mapping.missing)


def layout_mismatch_warning(pose_paths, trained=TRAINED_LAYOUT):
    """One warning line when the first `.pose` file among `pose_paths` holds another estimator's layout than
    the model was trained on (its points sit elsewhere on the body, and some are missing), else None. A
    file that cannot be read is left to the reader's own error."""
    path = next((str(p) for p in pose_paths if str(p).endswith(POSE_EXTENSION)), None)
    if path is None:
        return None
    try:
        header, _ = _read(path)
        layout = pose_layouts.detect_layout([(c.name, list(c.points)) for c in header.components])
    except (PoseFileError, pose_layouts.LayoutError):
        return None
    if layout == trained:
        return None
    return (f"warning: {path} holds {layout} keypoints, but the model was trained on {trained} (RTMPose) ones: "
            "its points are mapped by name, and translations may be worse than on the poses it was trained on")


def _read(path):
    """(header, body) by pose-format's readers; the whole buffer must be consumed (pose-format's v0.1 reader
    infers the frame count from the bytes left, so a truncated file would otherwise read as a shorter one)."""
    try:
        with open(path, "rb") as f:
            buffer = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise PoseFileError(f"{path}: pose file is missing") from error
    except OSError as error:
        raise PoseFileError(f"{path}: cannot be read ({error.strerror})") from error
    if not buffer:
        raise PoseFileError(f"{path}: pose file is empty")
    reader = BufferReader(buffer)
    try:
        header = PoseHeader.read(reader)
        body = NumPyPoseBody.read(header, reader)
    except (struct.error, ValueError, TypeError, UnicodeDecodeError, IndexError, OverflowError, NotImplementedError,
            ZeroDivisionError, MemoryError) as error:
        raise PoseFileError(f"{path}: not a readable .pose file (truncated, or another format: "
                            f"{type(error).__name__}: {error})") from error
    left = reader.bytes_left()
    if left:
        raise PoseFileError(f"{path}: truncated .pose file ({left} bytes past its last whole frame); extract or "
                            "copy it again")
    return header, body


def _people_per_frame(body):
    """How many of the stored people have any point in each frame."""
    confidence = np.asarray(ma.getdata(body.confidence))
    present = confidence > 0
    mask = ma.getmask(body.data)
    if mask is not ma.nomask:
        present &= ~mask[..., 0]
    return present.any(axis=2).sum(axis=1)


def write_pose_file(pose, path):
    """Write a pose dict (pose_extraction.extract_video's: keypoints (T, 1, 133, 2) divided by w_h, scores
    (T, 1, 133), w_h, fps) as a COCO-WholeBody `.pose` file in pixels, atomically (never a half-written file)."""
    width, height = (int(v) for v in pose["w_h"])
    header = PoseHeader(version=0.2, dimensions=PoseHeaderDimensions(width=width, height=height, depth=0),
                        components=cocowholebody_components())
    data = np.asarray(pose["keypoints"], dtype=np.float32) * np.array([width, height], dtype=np.float32)
    confidence = np.asarray(pose["scores"], dtype=np.float32)
    body = NumPyPoseBody(fps=float(pose.get("fps") or DEFAULT_FPS), data=ma.masked_array(data), confidence=confidence)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, "wb") as f:
        Pose(header, body).write(f)
