"""script/inspect_poses.py on real signing: layouts, coverage per part, label checks and two extractions compared."""
import gzip
import json
import os
import pickle
import shutil

import pytest

import inspect_poses
import pose_files

REAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "real_poses")


def inspect(capsys, *argv):
    assert inspect_poses.main(inspect_poses.get_args_parser().parse_args([*argv, "--json"])) == 0
    return json.loads(capsys.readouterr().out)


def test_layouts_and_coverage_of_the_real_files(capsys):
    result = inspect(capsys, REAL)
    by_name = {os.path.basename(r["file"]): r for r in result["files"]}
    assert by_name["openpose.pose"]["layout"] == "openpose_137" and by_name["openpose.pose"]["frames"] == 93
    assert by_name["essen.pose"]["layout"] == "mediapipe_holistic_reduced" and by_name["essen.pose"]["fps"] == 24
    # the reduced Holistic lacks nose and ears (3 of the 9 body points) and the nose tip (1 of 18 face points)
    assert by_name["essen.pose"]["parts"]["body"]["missing"] == pytest.approx(3 / 9)
    assert by_name["essen.pose"]["parts"]["face_all"]["missing"] == pytest.approx(1 / 18)
    assert by_name["openpose.pose"]["parts"]["face_all"]["missing"] == 0
    assert by_name["kinder.pose"]["parts"]["left"]["missing"] == 1.0  # MediaPipe found no left hand in it
    assert result["summary"]["files"] == 6 and result["summary"]["unreadable"] == 0


def test_labels_and_a_second_extraction(tmp_path, capsys):
    poses, other = tmp_path / "poses" / "dev", tmp_path / "other" / "dev"
    poses.mkdir(parents=True)
    other.mkdir(parents=True)
    labels = {}
    for name in ("kleine", "pizza", "gone"):
        if name != "gone":
            shutil.copy(os.path.join(REAL, name + ".pose"), poses / f"{name}.pose")
            record = pose_files.read_pose_file(os.path.join(REAL, name + ".pose"))
            with open(other / f"{name}.pkl", "wb") as f:  # "another extraction": the same points but the jaw
                keypoints = record.keypoints.copy()
                keypoints[:, 23:40] += 0.01  # the jaw (not the nose tip the face is recentred on)
                pickle.dump({"keypoints": keypoints[:, None], "scores": record.scores[:, None]}, f)
        labels[f"dev/{name}"] = {"name": f"dev/{name}", "gloss": name.upper(), "text": name, "imgs_path": [],
                                 "length": 68 if name == "kleine" else 50}
    with gzip.open(tmp_path / "labels.dev", "wb") as f:
        pickle.dump(labels, f)
    result = inspect(capsys, str(tmp_path / "poses"), "--labels", str(tmp_path / "labels.dev"), "--compare",
                     str(tmp_path / "other"))
    assert result["labels"]["without_pose_file"] == ["dev/gone"]
    assert result["labels"]["length_mismatches"] == [{"name": "dev/pizza", "label_length": 50, "frames": 53}]
    distance = result["compare"]["mean_distance"]
    assert result["compare"]["files_compared"] == 2
    assert distance["body"] == pytest.approx(0, abs=1e-6) and distance["left"] == pytest.approx(0, abs=1e-6)
    assert distance["face_all"] > 0.001  # only the jaw moved


def test_table_and_errors(tmp_path, capsys):
    (tmp_path / "broken.pose").write_bytes(b"\0" * 10)
    shutil.copy(os.path.join(REAL, "openpose.pose"), tmp_path)
    assert inspect_poses.main(inspect_poses.get_args_parser().parse_args([str(tmp_path)])) == 0
    out = capsys.readouterr().out
    assert "openpose_137" in out and "broken.pose" in out and "error: " in out and "1 unreadable" in out
    with pytest.raises(SystemExit):
        inspect_poses.main(inspect_poses.get_args_parser().parse_args([str(tmp_path / "nowhere")]))
