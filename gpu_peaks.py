"""The GPUs' datasheet peaks, which the model FLOPs utilisation (MFU) a training run reports divides by:
GPU_PEAK_TFLOPS and gpu_peak_flops, its lookup by the name and compute capability torch reports (utils.peak_flops
asks this process's GPU)."""
import re

# Dense (no structured sparsity) tensor-core peak TFLOP/s per GPU variant, bf16 and fp16 with fp32 accumulation, from
# NVIDIA's datasheets (which list the sparse figure, twice these): (name as torch.cuda.get_device_name() gives it, a
# regular expression matched whole after the "NVIDIA "/"Tesla " prefix; the variant; bf16; fp16). Variants of one chip
# differ by clock and power (H100 SXM 989.4, PCIe 756.5, NVL 835.5), so a name matches one variant or none.
GPU_PEAK_TFLOPS = (
    (r"H100 (SXM5?( \d+GB)?|\d+GB HBM3e?)", "H100 SXM", 989.4, 989.4),
    (r"H100( \d+GB)? PCIe", "H100 PCIe", 756.5, 756.5),
    (r"H100 NVL", "H100 NVL", 835.5, 835.5),
    (r"H200( SXM)?( \d+GB)?( HBM3e)?", "H200 SXM", 989.4, 989.4),
    (r"H200 NVL", "H200 NVL", 835.5, 835.5),
    (r"GH200( \d+GB)?", "GH200", 989.4, 989.4),
    (r"H800( \d+GB HBM3)?", "H800 SXM", 989.4, 989.4),
    (r"H800( \d+GB)? PCIe", "H800 PCIe", 756.5, 756.5),
    (r"A100-SXM4-\d+GB", "A100 SXM", 312.0, 312.0),
    (r"A100-PCIE-\d+GB|A100 \d+GB PCIe", "A100 PCIe", 312.0, 312.0),
    (r"A800-SXM4-\d+GB", "A800 SXM", 312.0, 312.0),
    (r"A800-PCIE-\d+GB|A800 \d+GB PCIe", "A800 PCIe", 312.0, 312.0),
    (r"A10", "A10", 125.0, 125.0),
    (r"A30", "A30", 165.0, 165.0),
    (r"A40", "A40", 149.7, 149.7),
    (r"L4", "L4", 121.0, 121.0),
    (r"L40", "L40", 181.0, 181.0),
    (r"L40S", "L40S", 362.0, 362.0),
    (r"RTX A6000", "RTX A6000", 154.8, 154.8),
    (r"GeForce RTX 3090", "GeForce RTX 3090", 71.0, 71.0),
    (r"GeForce RTX 4090", "GeForce RTX 4090", 165.2, 165.2),
    # pre-Ampere (compute capability 7.x): fp16 tensor cores only; bf16 is emulated
    (r"V100-SXM2-\d+GB", "V100 SXM2", None, 125.0),
    (r"V100-PCIE-\d+GB", "V100 PCIe", None, 112.0),
    (r"V100S-PCIE-\d+GB", "V100S PCIe", None, 130.0),
    (r"T4", "T4", None, 65.0),
)


def gpu_peak_flops(name, capability, dtype):
    """(peak FLOP/s, None) of the GPU called `name` (torch.cuda.get_device_name) with compute capability
    `capability` (major, minor) in `dtype`, or (None, why not): fp32 and unlisted GPUs are unknown, and a GPU
    before Ampere (capability < 8) has no bf16 tensor cores (bf16 runs emulated, far from any peak)."""
    if dtype not in ("bf16", "fp16"):
        return None, f"no peak is listed for {dtype}"
    if dtype == "bf16" and tuple(capability) < (8, 0):
        return None, (f"{name} (compute capability {capability[0]}.{capability[1]}) has no bf16 tensor cores: bf16 "
                      "runs emulated there (--dtype fp16 uses its tensor cores)")
    short = re.sub(r"^(NVIDIA|Tesla) ", "", name.strip())
    for pattern, variant, bf16, fp16 in GPU_PEAK_TFLOPS:
        if re.fullmatch(pattern, short, flags=re.IGNORECASE):
            return {"bf16": bf16, "fp16": fp16}[dtype] * 1e12, None
    return None, f"{name} is not in gpu_peaks.GPU_PEAK_TFLOPS (add its dense {dtype} peak from its datasheet)"
