"""Keypoint layouts of other pose estimators, mapped onto the COCO-WholeBody points the model reads.

A `.pose` file (the pose-format library's) names its components and their points in its header; a layout is
recognised from those names, never from point counts alone, and each of the model's points is looked up by
name. The tables are written once here:

- COCO-WholeBody 133 (MMPose / RTMW through pose-format's `cocowholebody133_header`): used as is.
- MediaPipe Holistic (POSE_LANDMARKS 33, FACE_LANDMARKS 468 or 478, the two hands, optionally
  POSE_WORLD_LANDMARKS 33: 543, 553, 576 or 586 points) and pose-format's reduced Holistic (8 body points, the
  128 face-mesh contour points, the hands: 178). Body points by joint name (MediaPipe's LEFT is the signer's
  left, as COCO's); hands share the 21-point order (wrist, then four points per finger from the thumb); the face
  by the MediaPipe face mesh -> 68-point (iBUG 300-W) correspondence of Yan's Mediapipe_2_Dlib_Landmarks
  (github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks), where a 68-point landmark with two mesh vertices is their mean.
- OpenPose BODY_25 + face 70 + hands (137): body by joint name; the face's first 68 points are the iBUG order.

A point a layout lacks has confidence 0 (a missing point, as everywhere else). A part's anchor that a layout
lacks (the nose tip in the reduced Holistic, which keeps only the face's contours) gets a stand-in position, so
that the face is still recentred on the middle of the face; its confidence stays 0.
"""
import dataclasses
import functools

import numpy as np

NUM_COCO_POINTS = 133
# COCO-WholeBody's 23 body point names (pose-format's and MMPose's spelling), indices 0..22.
COCO_BODY = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
             "right_knee", "left_ankle", "right_ankle", "left_big_toe", "left_small_toe", "left_heel",
             "right_big_toe", "right_small_toe", "right_heel"]
FACE_START, LEFT_HAND_START, RIGHT_HAND_START = 23, 91, 112  # face-0, left hand_0, right hand_0

# The model's body points by name (datasets.PART_INDICES["body"]), and the 68-point face landmarks it reads:
# the even jaw points, the inner lips and the nose tip (its anchor).
MODEL_BODY = ["nose", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
              "left_wrist", "right_wrist"]
MODEL_FACE = [0, 2, 4, 6, 8, 10, 12, 14, 16, 30, 60, 61, 62, 63, 64, 65, 66, 67]

# 68-point landmark -> MediaPipe face-mesh vertices (their mean), for the landmarks in MODEL_FACE.
MEDIAPIPE_FACE = {0: [127], 2: [93], 4: [58, 172], 6: [150], 8: [152], 10: [379], 12: [397, 288], 14: [323],
                  16: [356], 30: [4], 60: [78], 61: [82], 62: [13], 63: [312], 64: [308], 65: [317], 66: [14],
                  67: [87]}
# Where the nose tip sits when the mesh vertex is absent: the mean of the inner eye corners and the upper lip's
# top (all three on the reduced Holistic's contours).
MEDIAPIPE_NOSE_STAND_IN = [133, 362, 0]
MEDIAPIPE_BODY = {name: name.upper() for name in MODEL_BODY}
OPENPOSE_BODY = {"nose": "Nose", "left_ear": "LEar", "right_ear": "REar", "left_shoulder": "LShoulder",
                 "right_shoulder": "RShoulder", "left_elbow": "LElbow", "right_elbow": "RElbow",
                 "left_wrist": "LWrist", "right_wrist": "RWrist"}


def _openpose_face_name(landmark):
    """pose-format's OpenPose face point names: a prefix for the feature (jaw, brows, nose, eyes, outer and inner
    lips) and the 68-point index."""
    prefixes = [(17, "FB"), (27, "FEB"), (36, "FN"), (48, "FE"), (60, "FLO"), (68, "FLI")]
    return next(f"{prefix}_{landmark}" for end, prefix in prefixes if landmark < end)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one estimator's components name the model's points. Each table maps to (component, point names)."""
    name: str
    body: tuple  # component name, {COCO body name: point name}
    face: tuple  # component name, {68-point landmark: [point names]}
    hands: tuple  # left hand component, right hand component (21 points each, in the shared order)
    stand_ins: dict = dataclasses.field(default_factory=dict)  # COCO index -> (component, [point names])


LAYOUTS = {
    "coco_wholebody_133": Layout(  # all 133 points, as our pickles hold them
        "coco_wholebody_133", ("BODY", {name: name for name in COCO_BODY}),
        ("FACE", {i: [f"face-{i}"] for i in range(68)}), ("LEFT_HAND", "RIGHT_HAND")),
    "mediapipe_holistic": Layout(
        "mediapipe_holistic", ("POSE_LANDMARKS", MEDIAPIPE_BODY),
        ("FACE_LANDMARKS", {i: [str(v) for v in vertices] for i, vertices in MEDIAPIPE_FACE.items()}),
        ("LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS"),
        {FACE_START + 30: ("FACE_LANDMARKS", [str(v) for v in MEDIAPIPE_NOSE_STAND_IN])}),
    "openpose_137": Layout(
        "openpose_137", ("pose_keypoints_2d", OPENPOSE_BODY),
        ("face_keypoints_2d", {i: [_openpose_face_name(i)] for i in MODEL_FACE}),
        ("hand_left_keypoints_2d", "hand_right_keypoints_2d")),
}
# The component names that identify each layout.
SIGNATURES = {name: {layout.body[0], layout.face[0], *layout.hands} for name, layout in LAYOUTS.items()}
HOLISTIC_FACE_SIZES = (468, 478)


class LayoutError(ValueError):
    """A header whose components match no known layout; the message lists the names it has."""


@dataclasses.dataclass(frozen=True, eq=False)
class PointMap:
    """How to gather COCO-WholeBody points from a file: read only the file's points `columns`; COCO point c is
    column first[c], or for the few in `averaged` the mean of several columns (confidence: their min); its
    confidence is 0 where `mapped[c]` is False (missing, or a stand-in's position only), and its position 0
    where `placed[c]` is False (nothing to put there)."""
    layout: str
    columns: np.ndarray  # (K,) indices into the file's flat point axis, sorted
    first: np.ndarray  # (133,) index into columns
    averaged: tuple  # ((COCO index, column indices), ...)
    mapped: np.ndarray  # (133,) bool
    placed: np.ndarray  # (133,) bool
    missing: tuple  # COCO indices of the model's points the layout lacks

    @functools.cached_property
    def identity(self):
        return bool(self.placed.all() and self.mapped.all() and not self.averaged
                    and np.array_equal(self.columns[self.first], np.arange(NUM_COCO_POINTS))
                    and np.array_equal(self.first, np.arange(NUM_COCO_POINTS)))

    @functools.cached_property
    def placed_factor(self):
        return self.placed.astype(np.float32)[:, None]

    @functools.cached_property
    def mapped_factor(self):
        return self.mapped.astype(np.float32)


def detect_layout(components):
    """The layout name for a header's [(component name, [point names])], or LayoutError."""
    names = {name for name, _ in components}
    for layout, signature in SIGNATURES.items():
        if signature <= names:
            if layout == "mediapipe_holistic":
                faces = dict(components)["FACE_LANDMARKS"]
                full = len(faces) in HOLISTIC_FACE_SIZES and list(faces) == [str(i) for i in range(len(faces))]
                return "mediapipe_holistic" if full else "mediapipe_holistic_reduced"
            return layout
    known = "; ".join(f"{name}: {', '.join(sorted(signature))}" for name, signature in SIGNATURES.items())
    raise LayoutError(f"unknown pose layout with components {', '.join(sorted(names)) or '(none)'}; "
                      f"known layouts (their components): {known}")


def point_map(components):
    """The PointMap of a header's [(component name, [point names])] (LayoutError for an unknown layout);
    cached, since a data set's files share a few headers."""
    return _point_map(tuple((name, tuple(points)) for name, points in components))


@functools.lru_cache(maxsize=32)
def _point_map(components):
    detected = detect_layout(components)
    layout = LAYOUTS["mediapipe_holistic" if detected.startswith("mediapipe") else detected]
    offsets, start = {}, 0
    for name, points in components:
        offsets[name] = (start, {point: start + i for i, point in enumerate(points)})
        start += len(points)
    wanted = {}  # COCO index -> (component, [point names])
    body_component, body = layout.body
    for name, point in body.items():
        wanted[COCO_BODY.index(name)] = (body_component, [point])
    face_component, face = layout.face
    for landmark, points in face.items():
        wanted[FACE_START + landmark] = (face_component, points)
    for component, first in zip(layout.hands, (LEFT_HAND_START, RIGHT_HAND_START)):
        hand_points = dict(components)[component]
        for i in range(21):
            wanted[first + i] = (component, [hand_points[i]] if i < len(hand_points) else ["?"])
    sources, mapped, missing = {}, np.zeros(NUM_COCO_POINTS, dtype=bool), []
    for coco, (component, points) in wanted.items():
        found = _indices(offsets, component, points)
        if found is None:
            missing.append(coco)
            stand_in = layout.stand_ins.get(coco)
            found = _indices(offsets, *stand_in) if stand_in else None
        else:
            mapped[coco] = True
        if found is not None:
            sources[coco] = found
    columns = np.array(sorted({i for found in sources.values() for i in found}), dtype=np.int64)
    column_of = {index: k for k, index in enumerate(columns)}
    first, placed = np.zeros(NUM_COCO_POINTS, dtype=np.int64), np.zeros(NUM_COCO_POINTS, dtype=bool)
    averaged = []
    for coco, found in sources.items():
        first[coco], placed[coco] = column_of[found[0]], True
        if len(found) > 1:
            averaged.append((coco, np.array([column_of[i] for i in found])))
    return PointMap(detected, columns, first, tuple(averaged), mapped, placed, tuple(sorted(missing)))


def _indices(offsets, component, points):
    """Flat indices of `points` of `component`, or None when any is absent."""
    if component not in offsets:
        return None
    lookup = offsets[component][1]
    return [lookup[p] for p in points] if all(p in lookup for p in points) else None


def gather(point_map_, xy, confidence):
    """A person's (T, K, 2) xy and (T, K) float32 confidence of the columns point_map_.columns -> COCO-WholeBody
    (T, 133, 2) and (T, 133), float32 (the arrays themselves for COCO-WholeBody)."""
    if point_map_.identity:  # COCO-WholeBody itself: every column is its own point
        return xy, confidence
    keypoints = xy.take(point_map_.first, axis=1)
    scores = confidence.take(point_map_.first, axis=1)
    for coco, columns in point_map_.averaged:  # a few points: plain sums beat reductions over 2-3 columns
        total, lowest = xy[:, columns[0]].copy(), confidence[:, columns[0]].copy()
        for column in columns[1:]:
            total += xy[:, column]
            np.minimum(lowest, confidence[:, column], out=lowest)
        keypoints[:, coco], scores[:, coco] = total / len(columns), lowest
    keypoints *= point_map_.placed_factor
    scores *= point_map_.mapped_factor
    return keypoints, scores
