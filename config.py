"""Every path the project reads. Edit this file to point at your copies of the data and mT5.

Paths are relative to this file's folder, so runs work from any working directory.
The label files that do not ship in data/ are large downloads from Uni-Sign's Hugging Face Hub repositories:
OpenASL's labels.train (ZechengLi19/Uni-Sign) and CSL-News's CSL_News_Labels.json (ZechengLi19/CSL-News);
so are the pose pickles of every dataset. See README.md, "Using real data".
"""
import os

ROOT = os.path.dirname(os.path.abspath(__file__))


def _p(*parts):
    return os.path.join(ROOT, *parts)


# Hugging Face folder of google/mt5-base (save_pretrained layout: config.json, weights, spiece.model).
mt5_path = _p("pretrained_weight", "mt5-base")
# The tiny mT5 that `python script/make_demo.py` builds for the demo and the tests.
demo_mt5_path = _p("pretrained_weight", "mt5-demo")

train_label_paths = {
    "CSL_News": _p("data", "CSL_News", "CSL_News_Labels.json"),
    "CSL_Daily": _p("data", "CSL_Daily", "labels.train"),
    "WLASL": _p("data", "WLASL", "labels-2000.train"),
    "How2Sign": _p("data", "How2Sign", "labels.train"),
    "OpenASL": _p("data", "OpenASL", "labels.train"),
    "Demo": _p("data", "demo", "labels.train"),
    "Phoenix2014T": _p("data", "Phoenix2014T", "labels.train"),
    # YouTube-ASL's released video ids (youtube_asl_video_ids.txt); each video's pose file and .vtt captions are in
    # pose_dirs["YouTubeASL"]; 1 % of the videos are held out as dev and test (docs/captions.md).
    "YouTubeASL": _p("data", "YouTubeASL", "youtube_asl_video_ids.txt"),
    "Captions": _p("dataset", "Captions"),  # any folder of long-video pose files beside their captions
}

dev_label_paths = {
    "CSL_News": _p("data", "CSL_News", "CSL_News_Labels.json"),  # last 1 % of the list
    "CSL_Daily": _p("data", "CSL_Daily", "labels.dev"),
    "WLASL": _p("data", "WLASL", "labels-2000.dev"),
    # Uni-Sign's release has no How2Sign dev split (its config leaves it empty; it reports How2Sign on test), so
    # the test split stands in for it and selects the best epoch: that epoch's test score is optimistic. With
    # How2Sign's own validation split as a label file, pass --dev_label_path FILE (or point this entry at it).
    "How2Sign": _p("data", "How2Sign", "labels.test"),
    "OpenASL": _p("data", "OpenASL", "labels.dev"),
    "Demo": _p("data", "demo", "labels.dev"),
    "Phoenix2014T": _p("data", "Phoenix2014T", "labels.dev"),
    "YouTubeASL": _p("data", "YouTubeASL", "youtube_asl_video_ids.txt"),  # the held-out videos
    "Captions": _p("dataset", "Captions"),
}

test_label_paths = {
    "CSL_News": _p("data", "CSL_News", "CSL_News_Labels.json"),
    "CSL_Daily": _p("data", "CSL_Daily", "labels.test"),
    "WLASL": _p("data", "WLASL", "labels-2000.test"),
    "How2Sign": _p("data", "How2Sign", "labels.test"),
    "OpenASL": _p("data", "OpenASL", "labels.test"),
    "Demo": _p("data", "demo", "labels.test"),
    "Phoenix2014T": _p("data", "Phoenix2014T", "labels.test"),
    "YouTubeASL": _p("data", "YouTubeASL", "youtube_asl_video_ids.txt"),
    "Captions": _p("dataset", "Captions"),
}

# One pose pickle per video: <pose_dir>/<video_path with .mp4 -> .pkl> (WLASL: <pose_dir>/<phase>/...).
pose_dirs = {
    "CSL_News": _p("dataset", "CSL_News", "pose_format"),
    "CSL_Daily": _p("dataset", "CSL_Daily", "pose_format"),
    "WLASL": _p("dataset", "WLASL", "pose_format"),
    "How2Sign": _p("dataset", "How2Sign", "pose_format"),
    "OpenASL": _p("dataset", "OpenASL", "pose_format"),
    "Demo": _p("data", "demo", "pose_format"),
    # <split>/<name>.pkl (or .pose) per video, as `script/extract_poses.py --layout phoenix` writes them
    "Phoenix2014T": _p("dataset", "Phoenix2014T", "pose_format"),
    "YouTubeASL": _p("dataset", "YouTubeASL", "pose_format"),  # VIDEO_ID.pkl beside VIDEO_ID.en.vtt
    "Captions": _p("dataset", "Captions"),
}

# Where a missing file comes from: the line that reports it names this (the README's "Using real data" says more).
UNI_SIGN_HUB = "the Hugging Face repository ZechengLi19/Uni-Sign (Uni-Sign's release)"
label_sources = {
    "CSL_News": "CSL_News_Labels.json from the Hugging Face dataset ZechengLi19/CSL-News",
    "OpenASL": f"OpenASL's labels.train from {UNI_SIGN_HUB}",
    "YouTubeASL": "youtube_asl_video_ids.txt from YouTube-ASL's release (docs/captions.md)",
}
pose_sources = {
    "CSL_News": f"CSL-News's pose pickles from {UNI_SIGN_HUB}",
    "CSL_Daily": f"CSL-Daily's pose pickles from {UNI_SIGN_HUB}",
    "WLASL": f"WLASL's pose pickles from {UNI_SIGN_HUB}",
    "How2Sign": f"How2Sign's pose pickles from {UNI_SIGN_HUB}",
    "OpenASL": f"OpenASL's pose pickles from {UNI_SIGN_HUB}",
    "Phoenix2014T": ("the corpus's frame folders: python script/extract_poses.py --src "
                     "PHOENIX-2014-T/features/fullFrame-210x260px --out POSE_DIR --layout phoenix (docs/poses.md)"),
    "YouTubeASL": "the videos (yt-dlp) then python script/extract_poses.py (docs/captions.md)",
}

# Datasets whose text is Chinese: prompt language and CSL metric formatting depend on it.
chinese_datasets = ("CSL_News", "CSL_Daily", "Demo")
# Datasets whose text is German (the prompt's language).
german_datasets = ("Phoenix2014T",)
