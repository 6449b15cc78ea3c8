"""The data settings: which dataset and task, where its labels and poses are, how many frames a video gives, what a
bad sample does and how BLEU is scored, each declared once (settings.setting); fine_tuning.py's data flags and their
checks (preflight.py) are generated from these fields. Also where a dataset's files are when no flag says
(config.py's paths) and what to do when they are missing."""
import dataclasses
import os

import captions
import config
import SLRT_metrics
import utils
from settings import at_least, resolve_unset, setting

TASKS = ("SLT", "ISLR", "CSLR")  # translation, isolated-sign and continuous (gloss) recognition
PHASES = ("train", "dev", "test")
LABEL_PATHS = {"train": config.train_label_paths, "dev": config.dev_label_paths, "test": config.test_label_paths}
REAL_DATA_HINT = 'download it and point config.py at it (see README.md, "Using real data")'


@dataclasses.dataclass
class DataConfig:
    """The settings build_dataset and the scoring read. recorded=False: paths of this machine, and settings that
    shape no weight, which a model folder's card leaves out."""
    dataset: str = setting("CSL_Daily", "the dataset: config.py's label and pose paths, the prompt's language",
                           choices=lambda: sorted(config.pose_dirs))
    task: str = setting("SLT", "SLT (translation), ISLR (isolated signs) or CSLR (glosses)", choices=TASKS)
    max_length: int = setting(256, "frames per video", valid=at_least(1), allowed="at least 1 (frames read per video)")
    train_label_path: str = setting(None, "overrides config.train_label_paths[dataset]", recorded=False)
    dev_label_path: str = setting(None, "overrides config.dev_label_paths[dataset]", recorded=False)
    test_label_path: str = setting(None, "overrides config.test_label_paths[dataset]", recorded=False)
    pose_dir: str = setting(None, "overrides config.pose_dirs[dataset]", recorded=False)
    skip_bad_samples: bool = setting(False, "skip and count unreadable pose files", recorded=False)
    bleu_tokenize: str = setting(SLRT_metrics.DEFAULT_BLEU_TOKENIZE,
                                 "BLEU's protocol: 13a (sacrebleu's default, as GFSLT-VLP and Uni-Sign score) or none "
                                 "(signjoey's raw corpus BLEU); docs/design.md",
                                 choices=tuple(SLRT_metrics.BLEU_PROTOCOLS), recorded=False)

    def __post_init__(self):
        resolve_unset(self)

    # The settings found in `args` (a namespace or dict, or a DataConfig); see utils.config_from_args.
    from_args = classmethod(utils.config_from_args)


def label_path_of(dataset_name, phase, given=None):
    """The label file (or caption folder) of one phase: `given` (a --{phase}_label_path), else config.py's."""
    return given or LABEL_PATHS[phase][dataset_name]


def missing_data_hint(dataset_name, sources):
    """What to do about a dataset's missing labels or poses: where they come from (config.label_sources or
    config.pose_sources) and where to put them."""
    if dataset_name == "Demo":
        return "run `python script/make_demo.py`"
    if dataset_name in sources:
        return f'get {sources[dataset_name]}, then point config.py (or the flag) at it (README.md, "Using real data")'
    return REAL_DATA_HINT


def data_paths(dataset_name, phase, label_path=None, pose_dir=None):
    """(label path, pose folder) of one phase: the ones given, else config.py's (WLASL: the phase's subfolder).
    ValueError for an unknown phase or dataset, FileNotFoundError saying where a missing file comes from."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if dataset_name not in config.train_label_paths and (label_path is None or pose_dir is None):
        raise ValueError(f"unknown dataset {dataset_name!r}; config.py knows {sorted(config.train_label_paths)}")
    label_path = label_path_of(dataset_name, phase, label_path)
    if not os.path.isfile(label_path) and not captions.is_caption_folder(dataset_name, label_path):
        hint = missing_data_hint(dataset_name, config.label_sources)
        raise FileNotFoundError(f"{dataset_name} {phase} labels not found at {label_path}: {hint}")
    pose_dir = pose_dir or config.pose_dirs[dataset_name]
    if dataset_name == "WLASL":
        pose_dir = os.path.join(pose_dir, phase)
    if not os.path.isdir(pose_dir):
        hint = missing_data_hint(dataset_name, config.pose_sources)
        raise FileNotFoundError(f"{dataset_name} pose folder not found at {pose_dir}: {hint}")
    return label_path, pose_dir
