"""Tiny stand-ins for rtmlib's pose models, and synthetic videos for them (tests and `benchmark.py extract`).

The real models cannot be downloaded on an air-gapped machine, so the tests run the real rtmlib pipeline
(letterbox, YOLOX box decoding, affine crop, SimCC decoding, inverse transform) on two small ONNX files that
have exactly the real models' input/output signatures and whose outputs are known functions of the picture:

- detector (YOLOX end2end, NMS inside): input `input` (1, 3, H, W) BGR 0-255, outputs `dets` (1, 2, 5)
  [x1, y1, x2, y2, score] and `labels` (1, 2) int64. Slot s is the box around the bright (> 200) pixels
  of the left (s = 0) or right (s = 1) half of the picture, score 1 (0 when that half has none).
- pose model (RTMPose/RTMW SimCC): input `input` (1, 3, h, w) mean/std-normalised, outputs `simcc_x`
  (1, 133, 2w) and `simcc_y` (1, 133, 2h). It finds the extent of the bright pixels in its crop and puts
  keypoint k at (xmin + U_k (xmax - xmin), ymin + V_k (ymax - ymin)): a fixed template skeleton (U, V)
  stretched over the blob, as SimCC peaks exp(-(bin - 2x)^2 / 8) (all zero when the crop has no blob).

    python script/tiny_pose_models.py OUT_DIR   # both models and a 3-second clip, to try the commands offline

A "person" in a synthetic video is a white rectangle on black. Its pixels x0..x1-1 span [x0 - 0.5, x1 - 0.5]
in pixel-centre coordinates, so the picture puts keypoint k at x0 - 0.5 + U_k (x1 - x0) (expected_keypoints).
"""
import os

import numpy as np

NUM_KEYPOINTS = 133
DET_INPUT_SIZE = (416, 416)  # (H, W), rtmlib's YOLOX order
POSE_INPUT_SIZE = (192, 256)  # (w, h), rtmlib's RTMPose order
SIMCC_SPLIT = 2  # SimCC bins per input pixel (rtmlib's simcc_split_ratio)
OPSET = 17


def template_skeleton(num_keypoints=NUM_KEYPOINTS, seed=0):
    """(U, V): each keypoint's place inside the person's box as fractions of its width and height."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.95, num_keypoints).astype(np.float32), rng.uniform(0.05, 0.95, num_keypoints).astype(np.float32)


def expected_keypoints(box):
    """(133, 2) keypoints, in pixels, that the picture puts on a person drawn as box (x0, y0, x1, y1),
    x1/y1 exclusive."""
    x0, y0, x1, y1 = box
    u, v = template_skeleton()
    return np.stack([x0 - 0.5 + u * (x1 - x0), y0 - 0.5 + v * (y1 - y0)], axis=1)


def _const(helper, numpy_helper, name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name))


def _extent(helper, nodes, profile, axis_len, prefix):
    """Nodes computing first/last index where profile (S, L) > 0: outputs {prefix}min, {prefix}max of shape (S,)."""
    from onnx import numpy_helper
    nodes += [
        _const(helper, numpy_helper, f"{prefix}idx", np.arange(axis_len, dtype=np.float32)),
        _const(helper, numpy_helper, f"{prefix}big", np.float32(1e6)),
        _const(helper, numpy_helper, f"{prefix}neg", np.float32(-1.0)),
        _const(helper, numpy_helper, f"{prefix}zero", np.float32(0.0)),
        helper.make_node("Greater", [profile, f"{prefix}zero"], [f"{prefix}on"]),
        helper.make_node("Where", [f"{prefix}on", f"{prefix}idx", f"{prefix}big"], [f"{prefix}lo_all"]),
        helper.make_node("Where", [f"{prefix}on", f"{prefix}idx", f"{prefix}neg"], [f"{prefix}hi_all"]),
        helper.make_node("ReduceMin", [f"{prefix}lo_all"], [f"{prefix}min"], axes=[-1], keepdims=0),
        helper.make_node("ReduceMax", [f"{prefix}hi_all"], [f"{prefix}max"], axes=[-1], keepdims=0),
    ]


def _save(helper, graph, path):
    import onnx
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="geo-sign-tests")
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx.save(model, path)
    return path


def make_detector(path, input_size=DET_INPUT_SIZE):
    """Write the YOLOX stand-in (see the module docstring) to `path`; input_size is (H, W)."""
    from onnx import TensorProto, helper, numpy_helper
    height, width = input_size
    halves = np.zeros((2, 1, width), dtype=np.float32)
    halves[0, 0, : width // 2], halves[1, 0, width // 2:] = 1, 1
    nodes = [
        _const(helper, numpy_helper, "threshold", np.float32(200.0)),
        _const(helper, numpy_helper, "halves", halves),
        helper.make_node("ReduceMax", ["input"], ["brightest"], axes=[1], keepdims=0),  # (1, H, W)
        helper.make_node("Greater", ["brightest", "threshold"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["mask", "halves"], ["slot_mask"]),  # (2, H, W)
        helper.make_node("ReduceMax", ["slot_mask"], ["columns"], axes=[1], keepdims=0),  # (2, W)
        helper.make_node("ReduceMax", ["slot_mask"], ["rows"], axes=[2], keepdims=0),  # (2, H)
        helper.make_node("ReduceMax", ["columns"], ["score"], axes=[1], keepdims=0),  # (2,)
        _const(helper, numpy_helper, "one", np.float32(1.0)),
    ]
    _extent(helper, nodes, "columns", width, "x")
    _extent(helper, nodes, "rows", height, "y")
    nodes += [
        helper.make_node("Add", ["xmax", "one"], ["x_end"]),  # exclusive ends: the box covers whole pixels
        helper.make_node("Add", ["ymax", "one"], ["y_end"]),
        _const(helper, numpy_helper, "axis1", np.array([1], dtype=np.int64)),
        _const(helper, numpy_helper, "axis0", np.array([0], dtype=np.int64)),
    ]
    for name in ("xmin", "ymin", "x_end", "y_end", "score"):
        nodes.append(helper.make_node("Unsqueeze", [name, "axis1"], [name + "_col"]))
    nodes += [
        helper.make_node("Concat", ["xmin_col", "ymin_col", "x_end_col", "y_end_col", "score_col"], ["boxes"], axis=1),
        helper.make_node("Unsqueeze", ["boxes", "axis0"], ["dets"]),
        _const(helper, numpy_helper, "labels", np.zeros((1, 2), dtype=np.int64)),
    ]
    graph = helper.make_graph(
        nodes, "tiny_yolox",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, 2, 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 2])])
    return _save(helper, graph, path)


def make_pose_model(path, input_size=POSE_INPUT_SIZE):
    """Write the RTMPose stand-in (see the module docstring) to `path`; input_size is (w, h)."""
    from onnx import TensorProto, helper, numpy_helper
    width, height = input_size
    u, v = template_skeleton()
    nodes = [
        _const(helper, numpy_helper, "threshold", np.float32(0.2)),  # between black (about -2) and white (about 2.4)
        helper.make_node("ReduceMean", ["input"], ["brightness"], axes=[1], keepdims=0),  # (1, h, w)
        helper.make_node("Greater", ["brightness", "threshold"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["mask"], ["columns"], axes=[1], keepdims=0),  # (1, w)
        helper.make_node("ReduceMax", ["mask"], ["rows"], axes=[2], keepdims=0),  # (1, h)
        helper.make_node("ReduceMax", ["columns"], ["present"], axes=[1], keepdims=1),  # (1, 1): any blob
        _const(helper, numpy_helper, "split", np.float32(SIMCC_SPLIT)),
        _const(helper, numpy_helper, "peak_sharpness", np.float32(-1.0 / 8.0)),
        _const(helper, numpy_helper, "axis2", np.array([2], dtype=np.int64)),
        helper.make_node("Unsqueeze", ["present", "axis2"], ["present_3d"]),  # (1, 1, 1)
    ]
    _extent(helper, nodes, "columns", width, "x")
    _extent(helper, nodes, "rows", height, "y")
    for axis, fractions, bins in (("x", u, SIMCC_SPLIT * width), ("y", v, SIMCC_SPLIT * height)):
        nodes += [
            _const(helper, numpy_helper, f"{axis}_template", fractions.reshape(1, -1, 1)),  # (1, K, 1)
            _const(helper, numpy_helper, f"{axis}_bins", np.arange(bins, dtype=np.float32).reshape(1, 1, -1)),
            helper.make_node("Sub", [f"{axis}max", f"{axis}min"], [f"{axis}_span"]),  # (1,)
            helper.make_node("Mul", [f"{axis}_template", f"{axis}_span"], [f"{axis}_offset"]),
            helper.make_node("Add", [f"{axis}_offset", f"{axis}min"], [f"{axis}_point"]),  # (1, K, 1) input pixels
            helper.make_node("Mul", [f"{axis}_point", "split"], [f"{axis}_peak"]),
            helper.make_node("Sub", [f"{axis}_bins", f"{axis}_peak"], [f"{axis}_distance"]),
            helper.make_node("Mul", [f"{axis}_distance", f"{axis}_distance"], [f"{axis}_square"]),
            helper.make_node("Mul", [f"{axis}_square", "peak_sharpness"], [f"{axis}_exponent"]),
            helper.make_node("Exp", [f"{axis}_exponent"], [f"{axis}_response"]),
            helper.make_node("Mul", [f"{axis}_response", "present_3d"], [f"simcc_{axis}"]),
        ]
    graph = helper.make_graph(
        nodes, "tiny_rtmpose",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, NUM_KEYPOINTS, SIMCC_SPLIT * width]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, NUM_KEYPOINTS, SIMCC_SPLIT * height])])
    return _save(helper, graph, path)


def make_models(folder):
    """Both stand-ins in `folder`; returns (detector path, pose model path)."""
    return (make_detector(os.path.join(folder, "tiny_yolox.onnx")),
            make_pose_model(os.path.join(folder, "tiny_rtmpose.onnx")))


# ----------------------------------------------------------------------------- synthetic videos
def moving_box(frame_index, size, box_size, speed=(2, 1), origin=(20, 10)):
    """A person's box (x0, y0, x1, y1) drifting across a frame of `size` (w, h), bouncing inside it."""
    (width, height), (box_w, box_h) = size, box_size
    span_x, span_y = max(width - box_w - 2 * origin[0], 1), max(height - box_h - 2 * origin[1], 1)
    x = origin[0] + abs((frame_index * speed[0]) % (2 * span_x) - span_x)
    y = origin[1] + abs((frame_index * speed[1]) % (2 * span_y) - span_y)
    return (x, y, x + box_w, y + box_h)


def write_video(path, boxes_per_frame, size, fps=25.0, fourcc="mp4v"):
    """A video of `size` (w, h) whose frame t shows the boxes boxes_per_frame[t] (x0, y0, x1, y1; x1/y1
    exclusive) as white rectangles on black (an empty list: an empty frame). Returns path."""
    import cv2
    width, height = size
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} video to {path}")
    for boxes in boxes_per_frame:
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        for x0, y0, x1, y1 in boxes:
            frame[y0:y1, x0:x1] = 255
        writer.write(frame)
    writer.release()
    return path


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 2:
        sys.exit("usage: python script/tiny_pose_models.py OUT_DIR")
    det, pose = make_models(sys.argv[1])
    clip = write_video(os.path.join(sys.argv[1], "clip.mp4"),
                       [[moving_box(t, (320, 240), (50, 100))] for t in range(75)], (320, 240))
    print(f"wrote {det}, {pose} and {clip}; e.g.\n  python script/translate_video.py {clip} --finetune CHECKPOINT "
          f"--det_model {det} --pose_model {pose}")
