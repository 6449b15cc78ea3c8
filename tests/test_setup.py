"""The set-up files agree with each other and the README's commands exist."""
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


def test_readme_is_short_and_names_only_what_exists():
    """The README is for users (at most 250 lines); every script, document and command it names exists here or in
    the environment setup.sh builds (hf comes with huggingface_hub)."""
    import shutil
    import sys
    readme = read("README.md")
    assert len(readme.splitlines()) <= 250
    paths = set(re.findall(r"\b((?:script|docs|tests)/[\w./-]+\.(?:py|sh|md|png))", readme))
    paths |= set(re.findall(r"\]\(((?:docs)/[^)#]+)\)", readme))
    assert paths and [p for p in sorted(paths) if not os.path.exists(os.path.join(ROOT, p))] == []
    modules = set(re.findall(r"`(\w+)\.py`", readme)) | set(re.findall(r"python (\w+)\.py", readme))
    folders = ("", "script", os.path.join("script", "bench"), "tests")
    assert [m for m in sorted(modules) if not any(os.path.isfile(os.path.join(ROOT, d, f"{m}.py")) for d in folders)] == []
    if re.search(r"^hf download", readme, re.M):
        assert shutil.which("hf", path=os.path.dirname(sys.executable)), "the README's `hf download` needs hf"


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
