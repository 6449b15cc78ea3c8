"""The set-up files agree with each other and the README's commands exist."""
import ast
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = ".." + "/shared"  # spelled in two pieces so that this guard does not flag itself


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def requirement_lines(text):
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_env_yaml_pip_list_is_requirements_plus_torch():
    env = read("env.yaml")
    pip_section = env.split("- pip:", 1)[1]
    env_pins = [m.group(1).strip() for m in re.finditer(r"^\s+- (\S.*)$", pip_section, re.M)]
    assert env_pins[0] == "torch"
    assert env_pins[1:] == requirement_lines(read("requirements.txt"))


def test_readme_commands_and_ci_agree():
    readme = read("README.md")
    assert "bash script/demo.sh" in readme and "bash script/test.sh" in readme
    assert "script/test.sh" in read(".ci/run")
    for script in ("demo.sh", "test.sh", "setup.sh", "train.sh", "eval.sh", "train_paper.sh", "pretrain.sh"):
        assert os.path.isfile(os.path.join(ROOT, "script", script)), script


@pytest.mark.parametrize("name, needle", [("pretraining.pth", "hf download ZechengLi19/Uni-Sign csl_stage1_weight.pth"),
                                          ("best.pth", "put the released best.pth")])
def test_a_missing_released_checkpoint_is_one_line_saying_where_it_comes_from(tmp_path, name, needle):
    import subprocess
    missing = tmp_path / name
    result = subprocess.run(["bash", os.path.join(ROOT, "script", "train.sh")], capture_output=True, text=True,
                            env={**os.environ, "CKPT": str(missing)}, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1
    assert lines[0].startswith(f"error: checkpoint not found: {missing}") and needle in lines[0]


DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                                            recursive=True))
# Scripts of other projects that the docs name as theirs: DeepSpeed's converter of ZeRO partitions.
OTHERS_SCRIPTS = {"zero_to_fp32": "deepspeed.utils.zero_to_fp32"}
CODE_FOLDERS = ("", "script", os.path.join("script", "bench"), "tests")
# `name.ext` in the docs that is a file name, not a module's attribute (config.json, log.txt, ...)
FILE_EXTENSIONS = {"json", "html", "txt", "pth", "pt", "png", "pdf", "pkl", "csv", "npz", "yaml", "mp4", "gif", "gz", "bin",
                   "onnx", "safetensors", "model", "log", "md", "py", "sh", "pose", "jsonl", "train", "dev", "test"}


def project_modules():
    """{module name: its file} of the project's own modules (top level, script/, script/bench/, tests/)."""
    found = {}
    for folder in CODE_FOLDERS:
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "*.py"))):
            found.setdefault(os.path.basename(path)[:-3], path)
    return found


def definitions(path):
    """(names a module defines or imports at its top level, {class name: (its members, whether it has bases)})."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names, classes = set(), {}
    for node in tree.body:
        for inner in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(inner.name)
            elif isinstance(inner, (ast.Assign, ast.AnnAssign)):
                names |= {n.id for t in getattr(inner, "targets", [getattr(inner, "target", None)]) for n in ast.walk(t)
                          if isinstance(n, ast.Name)}
            elif isinstance(inner, (ast.Import, ast.ImportFrom)):
                names |= {(a.asname or a.name).split(".")[0] for a in inner.names}
        if isinstance(node, ast.ClassDef):
            members = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
            members |= {n.id for s in node.body if isinstance(s, (ast.Assign, ast.AnnAssign))
                        for t in getattr(s, "targets", [getattr(s, "target", None)]) for n in ast.walk(t)
                        if isinstance(n, ast.Name)}
            classes[node.name] = (members, bool(node.bases))
    return names, classes


def missing_code_names(text):
    """`module.name` and `module.Class.member` in the code spans of `text`, for the project's modules, that the
    module does not define (a member of a class with bases may be inherited: not checked)."""
    modules, known, missing = project_modules(), {}, []
    for span in re.findall(r"`([^`\n]+)`", text):
        for found in re.finditer(r"(?<![\w./-])([A-Za-z_]\w*)\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?", span):
            module, name, member = found.groups()
            if module not in modules or name in FILE_EXTENSIONS:
                continue
            names, classes = known.setdefault(module, definitions(modules[module]))
            if name not in names or (member and name in classes and not classes[name][1]
                                     and member not in classes[name][0]):
                missing.append(found.group(0))
    return missing


def test_readme_is_short_and_names_only_what_exists():
    """The README is for users (at most 250 lines); every script, document and command it names exists here or in
    the environment setup.sh builds (hf comes with huggingface_hub)."""
    import shutil
    import sys
    readme = read("README.md")
    assert len(readme.splitlines()) <= 250
    if re.search(r"\bhf download", readme):
        assert shutil.which("hf", path=os.path.dirname(sys.executable)), "the README's `hf download` needs hf"


@pytest.mark.parametrize("doc", DOCS)
def test_the_docs_name_only_files_modules_and_functions_that_exist(doc):
    """Every script, document, module (`name.py`, `python name.py`) and function or class (`module.name`) that
    README.md or a page of docs/ names exists (links are relative to the page)."""
    text = read(doc)
    paths = set(re.findall(r"(?<![\w/.-])((?:script|docs|tests)/[\w./-]+\.(?:py|sh|md|png))", text))
    paths |= {os.path.normpath(os.path.join(os.path.dirname(doc), link))
              for link in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text)}
    assert [p for p in sorted(paths) if not os.path.exists(os.path.join(ROOT, p))] == []
    modules = set(re.findall(r"`(\w+)\.py`", text)) | set(re.findall(r"python (\w+)\.py", text))
    assert [m for m in sorted(modules) if not any(os.path.isfile(os.path.join(ROOT, d, f"{m}.py"))
                                                  for d in CODE_FOLDERS) and m not in OTHERS_SCRIPTS] == []
    assert missing_code_names(text) == []


def test_the_other_projects_scripts_the_docs_name_are_installed():
    import importlib.util
    assert [name for name, module in OTHERS_SCRIPTS.items() if importlib.util.find_spec(module) is None] == []


def test_the_installed_distribution_declares_every_top_level_module():
    """script/ imports the top-level modules through the editable install, which maps only pyproject's py-modules:
    a module left out imports from the repository root and fails from anywhere else."""
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["tool"]["setuptools"]["py-modules"]
    present = sorted(name[:-3] for name in os.listdir(ROOT) if name.endswith(".py"))
    assert sorted(declared) == present


def test_project_never_reads_shared_folder():
    offenders = []
    for folder, _, files in os.walk(ROOT):
        if any(part in folder for part in (".venv", ".git", "__pycache__", "data")):
            continue
        for name in files:
            if name.endswith((".py", ".sh")):
                if SHARED in read(os.path.relpath(os.path.join(folder, name), ROOT)):
                    offenders.append(name)
    assert not offenders


def test_rtmlib_is_installed_without_its_opencv_dependencies_everywhere():
    pin = re.search(r"^RTMLIB=(\S+)", read("script/setup.sh"), re.M).group(1)
    assert 'pip install --no-deps "$RTMLIB"' in read("script/setup.sh")
    assert f"pip install --no-deps {pin}" in read("env.yaml")
    assert pin in read("requirements.txt") and "rtmlib" not in " ".join(requirement_lines(read("requirements.txt")))
    assert "opencv-python-headless" in requirement_lines(read("requirements.txt"))


def canonical(name):
    """A package name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_requirement_is_pinned_in_constraints_within_its_range():
    from packaging.requirements import Requirement

    pins = {}
    for line in requirement_lines(read("constraints.txt")):
        name, _, version = line.partition("==")
        assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
        pins[canonical(name)] = version
    setup = read("script/setup.sh")
    assert "-r requirements.txt -c constraints.txt" in setup  # the pins are what setup.sh installs
    rtmlib = re.search(r"^RTMLIB=(\S+)", setup, re.M).group(1)  # installed by setup.sh, not requirements.txt
    requirements = [Requirement(line) for line in requirement_lines(read("requirements.txt")) + ["torch", rtmlib]]
    missing = [r.name for r in requirements if canonical(r.name) not in pins]
    assert not missing, (f"not pinned in constraints.txt: {', '.join(missing)}; add a line NAME==VERSION for each "
                         "(the version `pip freeze` shows in the .venv the tests pass in)")
    outside = [f"{r} (pinned {pins[canonical(r.name)]})" for r in requirements
               if not r.specifier.contains(pins[canonical(r.name)], prereleases=True)]
    assert not outside, f"constraints.txt pins versions that requirements.txt or setup.sh exclude: {outside}"


def test_every_process_builds_deepspeeds_op_with_the_environments_own_ninja(monkeypatch, tmp_path):
    """Two ninja versions (a machine's 1.11, pip's 1.13) hash commands differently, so each rebuilt the op the
    other had built: the environment's ninja goes first on PATH, once."""
    import shutil
    import sys

    import utils
    scripts = os.path.dirname(sys.executable)
    if not os.access(os.path.join(scripts, "ninja"), os.X_OK):
        pytest.skip("this environment has no ninja of its own")
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path), "/usr/bin", "/bin"]))
    utils.use_environment_extension_cache()
    utils.use_environment_extension_cache()
    assert shutil.which("ninja") == os.path.join(scripts, "ninja")
    assert os.environ["PATH"].split(os.pathsep) == [scripts, str(tmp_path), "/usr/bin", "/bin"]


def test_a_gpu_machine_gets_the_gpu_build_of_onnxruntime():
    """--device cuda for pose extraction needs onnxruntime-gpu: setup.sh swaps it in where nvidia-smi exists,
    at its pinned version, which must exist beside the CPU build's pin."""
    setup = read("script/setup.sh")
    gpu_block = setup[setup.index("if command -v nvidia-smi >/dev/null 2>&1; then\n    # the GPU build"):]
    gpu_block = gpu_block[:gpu_block.index("\nfi\n")]
    assert "pip uninstall -y onnxruntime" in gpu_block and "onnxruntime-gpu==" in gpu_block
    pins = dict(line.partition("==")[::2] for line in requirement_lines(read("constraints.txt")))
    assert pins.get("onnxruntime-gpu") and pins.get("onnxruntime")


def test_how2sign_starts_with_the_shipped_files_its_test_split_standing_in_for_dev(tmp_path):
    """Uni-Sign's release has no How2Sign dev split: config.py points dev at the test file (documented as what
    selects the best epoch); a dev file of one's own is taken when given."""
    import config
    import datasets
    from data_config import DataConfig
    settings = DataConfig()
    splits = {phase: datasets.build_dataset("How2Sign", phase, settings, pose_dir=str(tmp_path))
              for phase in ("train", "dev", "test")}
    assert len(splits["train"]) > len(splits["test"]) > 2000
    assert [s["name"] for s in splits["dev"].samples] == [s["name"] for s in splits["test"].samples]
    assert config.dev_label_paths["How2Sign"] == config.test_label_paths["How2Sign"]
    assert "How2Sign has no dev split there: its test split selects the best epoch" in " ".join(read("README.md").split())
    own_dev = os.path.join(ROOT, "data", "OpenASL", "labels.dev")  # any label file of the format
    assert len(datasets.build_dataset("How2Sign", "dev", settings, label_path=own_dev, pose_dir=str(tmp_path))) > 900


def test_openasls_missing_train_file_is_one_line_and_the_readme_names_its_source(tmp_path):
    import config
    import datasets
    from data_config import DataConfig
    path = config.train_label_paths["OpenASL"]
    assert not os.path.exists(path)  # a large download: not shipped
    with pytest.raises(FileNotFoundError) as missing:
        datasets.build_dataset("OpenASL", "train", DataConfig(), pose_dir=str(tmp_path))
    message = str(missing.value)
    assert len(message.splitlines()) == 1 and path in message and "Using real data" in message
    assert "ZechengLi19/Uni-Sign" in message  # its source, in the line itself
    section = read("README.md").split("## Using real data", 1)[1].split("\n## ", 1)[0]
    assert "OpenASL's `labels.train` (`ZechengLi19/Uni-Sign`)" in section
    for source in ("Poses", "csl_stage1_weight.pth", "best.pth", "CSL_News_Labels.json"):
        assert source in section, source
