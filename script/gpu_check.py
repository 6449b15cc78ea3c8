"""The first look at a GPU: what nothing on a CPU can show, in one command and one JSON summary.

    bash script/gpu_check.sh            # on a machine with one or more NVIDIA GPUs (about 8 minutes on one)
    bash script/gpu_check.sh --tiny     # CPU, small shapes: the same steps as a smoke run

Steps, each in a process of its own, each recorded even when another fails:
- nccl_broadcast: engine.deepspeed_initialize on a module still in host memory, with the start-up broadcast
  of its 0-d parameters forced on (world size taken as 2): under NCCL this broadcast used to fail with
  "No backend type associated with device type cpu", which stopped every multi-GPU Geo-Sign run;
- syncs: device-to-host reads (torch.profiler's aten::_local_scalar_dense, and on CUDA the warnings of
  torch.cuda.set_sync_debug_mode) of one forward + backward of the demo-size model: pose-only, pooled, token;
- demo_resume: the built-in demo trained in bf16 with the branch (token mode) for 3 epochs, and again stopped
  by SIGTERM after its first epoch and resumed with --resume: the later epochs' logged values compared;
- benchmark: script/benchmark.py gpu --compile (mt5-base shape; --tiny: benchmark.py gpu --tiny).
The last line printed is the JSON summary; --out FILE also writes it there.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.abspath(__file__)
DEMO_FLAGS = ["--dataset", "Demo", "--task", "SLT", "--use_hyperbolic", "--hyp_text_cmp", "token",
              "--hyp_text_emb_src", "decoder", "--alpha", "0.7", "--batch_size", "8", "--lr", "1e-3",
              "--warmup-epochs", "1", "--min-lr", "1e-5", "--num_workers", "0", "--num_beams", "4",
              "--max_tgt_len", "40", "--seed", "42", "--epochs", "3"]


def child_env():
    """A step's environment: a run of its own (no launcher's rank variables), quiet tokenizers, no wandb upload."""
    from bench.common import single_process_env
    return single_process_env(TOKENIZERS_PARALLELISM=os.environ.get("TOKENIZERS_PARALLELISM", "false"),
                              WANDB_MODE=os.environ.get("WANDB_MODE", "disabled"))


def run_step(cmd, timeout, cwd=ROOT):
    """Run cmd; return (returncode, stdout, stderr), returncode None when it ran past `timeout`."""
    try:
        done = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        return None, expired.stdout or "", expired.stderr or ""


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the step's output")


def child_step(name, timeout, extra=()):
    code, out, err = run_step([sys.executable, SCRIPT, "--child", name, *extra], timeout)
    if code != 0:
        return {"ok": False, "exit": code, "stderr_tail": (err or out)[-1500:]}
    return {"ok": True, **last_json(out)}


# ----------------------------------------------------------------------------- children (one process each)
def child_nccl_broadcast():
    import torch
    import engine
    import utils
    utils.init_distributed()
    model = torch.nn.Module()
    model.scale = torch.nn.Parameter(torch.tensor(0.5))
    model.lin = torch.nn.Linear(4, 4)
    utils.world_size = lambda: 2  # force the broadcast path in a one-rank group (a broadcast from rank 0 to itself)
    error = None
    try:
        import deepspeed
        # the broadcast is what is checked, not DeepSpeed's own start-up
        deepspeed.initialize = lambda **kw: (types.SimpleNamespace(module=kw["model"]), None, None, None)
        engine.deepspeed_initialize(model, None, {})
    except RuntimeError as e:
        error = str(e)
    import torch.distributed as dist
    print(json.dumps({"backend": dist.get_backend(), "broadcast_ok": error is None, "error": error,
                      "scalar_device": str(model.scale.device)}))


def child_syncs():
    from bench import syncs as bench_syncs
    import utils
    utils.init_distributed()
    print(json.dumps(bench_syncs.measure()))


# ----------------------------------------------------------------------------- steps run from the parent
def demo_resume(tiny, timeout):
    """Demo in bf16 (GPU) / fp32 (CPU) with the branch: 3 epochs at once vs stopped after epoch 0 and resumed."""
    import torch
    gpu = torch.cuda.is_available()
    tmp = tempfile.mkdtemp(prefix="gpu-check-")
    deadline = time.time() + timeout
    try:
        code, out, err = run_step([sys.executable, os.path.join(ROOT, "script", "make_demo.py"), "--out_root", tmp],
                                  timeout=300)
        if code != 0:
            return {"ok": False, "stage": "make_demo", "stderr_tail": err[-1500:]}
        flags = DEMO_FLAGS + ["--mt5_path", os.path.join(tmp, "pretrained_weight", "mt5-demo"),
                              "--pose_dir", os.path.join(tmp, "data", "demo", "pose_format")]
        for phase in ("train", "dev", "test"):
            flags += [f"--{phase}_label_path", os.path.join(tmp, "data", "demo", f"labels.{phase}")]
        flags += ["--dtype", "bf16"] if gpu else []
        flags += ["--quick_break", "4" if tiny else "12"]
        launcher = ["deepspeed", "--num_gpus", "1"] if gpu else [sys.executable]
        runs = {}
        start = time.time()
        whole = os.path.join(tmp, "whole")
        code, out, err = run_step(launcher + ["fine_tuning.py", *flags, "--output_dir", whole],
                                  timeout=max(1, deadline - time.time()))
        runs["whole_s"] = round(time.time() - start, 1)
        if code != 0:
            return {"ok": False, "stage": "uninterrupted run", "exit": code, "stderr_tail": (err or out)[-2000:]}
        stopped = os.path.join(tmp, "stopped")
        process = subprocess.Popen(launcher + ["fine_tuning.py", *flags, "--output_dir", stopped], cwd=ROOT,
                                   env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        log = os.path.join(stopped, "log.txt")
        while process.poll() is None and time.time() < deadline:
            if os.path.exists(log) and os.path.getsize(log) > 0:
                os.killpg(process.pid, signal.SIGTERM)
                break
            time.sleep(0.5)
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:  # a step of the C++ side can hold the handler back; kill -9 resumes too
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        code, out, err = run_step(launcher + ["fine_tuning.py", *flags, "--output_dir", stopped, "--resume"],
                                  timeout=max(1, deadline - time.time()))
        if code != 0:
            return {"ok": False, "stage": "resumed run", "exit": code, "stderr_tail": (err or out)[-2000:]}
        return {"ok": True, "dtype": "bf16" if gpu else "fp32", **compare_logs(whole, stopped), **runs}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare_logs(whole, resumed):
    """Per epoch after the first: the largest relative difference of any logged number, and the best dev score."""
    import utils
    a, b = utils.read_log(whole), utils.read_log(resumed)
    differences = {}
    for ra, rb in zip(a[1:], b[1:]):
        worst = 0.0
        for key, va in ra.items():
            vb = rb.get(key)
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not key.endswith(("_s", "per_s",
                                                                                                   "tflops", "mfu")):
                worst = max(worst, abs(va - vb) / max(abs(va), 1e-12))
        differences[str(ra.get("epoch"))] = worst
    return {"epochs": len(a), "epochs_resumed": len(b), "max_rel_diff_after_resume": differences,
            "exact": all(v == 0 for v in differences.values()) and len(a) == len(b),
            "last_epoch": {k: v for k, v in a[-1].items() if k.startswith(("dev_", "test_", "train_hyp"))}}


def benchmark(tiny, timeout):
    cmd = [sys.executable, os.path.join(ROOT, "script", "benchmark.py"), "gpu"] + (["--tiny"] if tiny else ["--compile"])
    code, out, err = run_step(cmd, timeout)
    if code != 0:
        return {"ok": False, "exit": code, "stderr_tail": (err or out)[-2000:]}
    return {"ok": True, **last_json(out)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small shapes and few steps: a smoke run on CPU")
    parser.add_argument("--out", default=None, help="also write the JSON summary to this file")
    parser.add_argument("--steps", default="nccl_broadcast,syncs,demo_resume,benchmark",
                        help="which steps, comma-separated")
    parser.add_argument("--budget", type=float, default=480, help="seconds for all steps together")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return {"nccl_broadcast": child_nccl_broadcast, "syncs": child_syncs}[args.child]()
    import torch
    summary = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "tiny": args.tiny}
    deadline = time.time() + args.budget

    def left(most):
        return max(1.0, min(most, deadline - time.time()))

    steps = {"nccl_broadcast": lambda: child_step("nccl_broadcast", left(300)),
             "syncs": lambda: child_step("syncs", left(240)),
             "demo_resume": lambda: demo_resume(args.tiny, left(240)),
             "benchmark": lambda: benchmark(args.tiny, left(480))}
    for name in args.steps.split(","):
        start = time.time()
        print(f"gpu_check: {name} ...", flush=True)
        summary[name] = steps[name]()
        summary[name]["seconds"] = round(time.time() - start, 1)
        print(f"gpu_check: {name}: {json.dumps(summary[name])[:3000]}", flush=True)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
