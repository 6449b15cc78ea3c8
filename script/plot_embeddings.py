"""Draw the Poincaré-ball embedding space a Geo-Sign model learnt (the paper's figure).

    python script/plot_embeddings.py --finetune out/demo/best_checkpoint.pth --dataset Demo --split test \
        --output_dir out/demo/embeddings [--mt5_path pretrained_weight/mt5-demo] [--max_samples 200]

For each sample of the split (its deterministic evaluation frames) the model's own encode and teacher-forced
passes (Uni_Sign.hyperbolic_points) give four part points (body, left hand, right hand, face) and one text
point on the ball of curvature -c. They are drawn in the unit disk by project_to_disk: the origin stays the
origin and every point keeps its exact distance to the origin; the directions are the 2-D principal plane of
the tangent space at the origin. Writes poincare_disk.png / .pdf, embeddings_2d.npz and embeddings_2d.csv.
"""
import argparse
import csv
import os
import sys

import numpy as np
import torch

import hyperbolic as hyp
import model_io
import utils
from models import Uni_Sign

# Drawn in this order: the four parts (PARTS order of the model) and the text; Okabe-Ito colours.
POINT_NAMES = ("body", "left hand", "right hand", "face", "text")
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#222222")
MARKERS = ("o", "^", "v", "s", "*")


def get_args_parser():
    p = argparse.ArgumentParser("Draw a Geo-Sign model's Poincaré-ball embeddings")
    p.add_argument("--finetune", required=True, help="checkpoint (.pth) or model folder")
    p.add_argument("--dataset", default=None, help="default: the dataset the model was trained on")
    p.add_argument("--split", default="test", choices=["dev", "test"])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--mt5_path", default=None, help="for a .pth: the mT5 it was trained with (default: its saved one)")
    p.add_argument("--label_path", default=None, help="overrides config.py's label file of the split")
    p.add_argument("--pose_dir", default=None, help="overrides config.pose_dirs[dataset]")
    p.add_argument("--max_samples", type=int, default=200, help="the split's first N samples (0: all)")
    p.add_argument("--batch_size", type=int, default=8)
    return p


def project_to_disk(points, c):
    """(N, D) points of the Poincaré ball of curvature -c -> (N, 2) points of the unit disk.

    u = log_0(x) = artanh(sqrt(c)|x|) x / (sqrt(c)|x|)   tangent vectors at the origin (|u| = d_c(0, x) / 2),
    v = P u |u| / |P u|                                   P: the top-2 principal axes of the u (uncentred, so
                                                          that the origin stays the origin), length kept,
    y = sqrt(c) exp_0(v) = tanh(sqrt(c)|v|) v / |v|      back on the ball, scaled to the unit disk.

    So |y| = sqrt(c)|x|: every point keeps its distance to the origin (d_c(0, x) = 2 artanh(|y|) / sqrt(c)) and
    the radius ordering, whatever the curvature. Returns (y, share of the tangent vectors' energy in the plane)."""
    x = torch.as_tensor(points, dtype=torch.float64)
    sqrt_c = float(c) ** 0.5
    norm = x.norm(dim=-1, keepdim=True)
    scaled = (sqrt_c * norm).clamp(max=1 - 1e-15)
    u = torch.where(norm > 0, torch.atanh(scaled) * x / (sqrt_c * norm.clamp_min(1e-300)), torch.zeros_like(x))
    _, singular, vh = torch.linalg.svd(u, full_matrices=False)
    axes = vh[:2].T if vh.shape[0] >= 2 else torch.eye(x.shape[1], 2, dtype=x.dtype)
    plane = u @ axes
    if plane.shape[1] < 2:
        plane = torch.nn.functional.pad(plane, (0, 2 - plane.shape[1]))
    length, plane_length = u.norm(dim=-1, keepdim=True), plane.norm(dim=-1, keepdim=True)
    # a tangent vector orthogonal to the plane has no direction in it: it is put on the first axis
    first_axis = torch.tensor([1.0, 0.0], dtype=x.dtype).expand_as(plane)
    v = torch.where(plane_length > 1e-12, plane / plane_length.clamp_min(1e-300), first_axis) * length
    v_length = v.norm(dim=-1, keepdim=True)
    y = torch.where(v_length > 0, torch.tanh(sqrt_c * v_length) * v / v_length.clamp_min(1e-300), torch.zeros_like(v))
    energy = float((singular[:2] ** 2).sum() / (singular ** 2).sum().clamp_min(1e-300))
    return y.numpy(), energy


@torch.no_grad()
def embed(model, loader):
    """names, points (N, 5, D) (four parts and text), part weights (N, 4), distances to the origin (N, 5)."""
    names, points, weights = [], [], []
    for batch in loader:
        if not batch["name"]:
            continue
        out = model.hyperbolic_points(batch)
        names += batch["name"]
        points.append(torch.cat([out["parts"], out["text"].unsqueeze(1)], dim=1).float().cpu())
        weights.append(out["weights"].float().cpu())
    points = torch.cat(points)
    distances = model.manifold.dist0(points.to(model.manifold.c.device), dim=-1).cpu()
    return names, points.numpy(), torch.cat(weights).numpy(), distances.numpy()


def ring_distances(c, largest):
    """Distances to the origin worth a ring: round values up to `largest`, at least 0.08 apart in the disk."""
    rings, last_radius = [], 0.0
    for d in (0.25, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10):
        radius = float(np.tanh(np.sqrt(c) * d / 2))
        if d <= largest * 1.05 and radius - last_radius >= 0.08 and radius <= 0.985:
            rings.append((d, radius))
            last_radius = radius
    return rings


def draw(xy, distances, weights, c, energy, title, path_stem):
    """The figure: the Poincaré disk (left) and, right, each kind's distance to the origin and the mean part
    weights. Saved as PNG and PDF."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "font.family": "DejaVu Sans", "pdf.fonttype": 42})
    fig = plt.figure(figsize=(10.5, 5.2))
    grid = GridSpec(2, 2, width_ratios=(1.1, 1), height_ratios=(1.25, 1), wspace=0.28, hspace=0.5, figure=fig)
    disk = fig.add_subplot(grid[:, 0])
    theta = np.linspace(0, 2 * np.pi, 512)
    rings = ring_distances(c, float(distances.max()))
    radii, flat = np.array([r for _, r in rings] or [0.5]), xy.reshape(-1, 2)

    def clearance(angle):  # how far the ring labels at this angle would be from the nearest point
        labels = radii[:, None] * np.array([np.cos(angle), np.sin(angle)])
        return np.linalg.norm(labels[:, None] - flat[None], axis=-1).min()
    label_angle = max(np.linspace(-np.pi, np.pi, 48, endpoint=False), key=clearance)
    for d, r in rings:  # rings of constant distance to the origin
        disk.plot(r * np.cos(theta), r * np.sin(theta), color="0.82", lw=0.6, ls=(0, (4, 3)), zorder=0)
        disk.text(r * np.cos(label_angle), r * np.sin(label_angle), f"{d:g}", color="0.5", fontsize=7,
                  ha="center", va="center", bbox={"fc": "white", "ec": "none", "pad": 0.6}, zorder=1)
    disk.plot(np.cos(theta), np.sin(theta), color="black", lw=1.1, zorder=1)  # the ideal boundary
    # the float32 projection limit: a part point there has lost its radial gradient (hyperbolic.health_stats)
    limit = hyp.PROJECTION_LIMIT
    disk.plot(limit * np.cos(theta), limit * np.sin(theta), color="tab:red", lw=0.8, ls=(0, (1, 1.5)), zorder=1)
    at_limit = float((np.linalg.norm(xy[:, :4], axis=-1) >= limit - 1e-4).mean())
    disk.plot([0], [0], marker="+", color="black", ms=7, mew=1.0, zorder=4)
    for j in range(xy.shape[1]):
        disk.scatter(xy[:, j, 0], xy[:, j, 1], s=55 if j == 4 else 26, marker=MARKERS[j], color=COLOURS[j],
                     alpha=0.75, linewidths=0.3, edgecolors="white", label=POINT_NAMES[j], zorder=3 if j == 4 else 2)
    disk.set_xlim(-1.03, 1.03), disk.set_ylim(-1.03, 1.03), disk.set_aspect("equal")
    disk.axis("off")
    disk.set_title(title, fontsize=10)
    disk.legend(loc="upper center", bbox_to_anchor=(0.5, 0.01), ncol=5, frameon=False, handletextpad=0.1,
                columnspacing=1.0, markerscale=1.2)
    disk.text(0.5, -0.07, f"Poincaré disk of curvature $-c$, $c$ = {c:.3f}; dashed rings: distance to the origin. "
              f"\nDistances to the origin are exact; directions: the principal plane of the tangent\n"
              f"space at the origin ({100 * energy:.1f} % of the variance). Red dots: float32 projection limit,\n"
              f"{100 * at_limit:.0f} % of the part points at it.", transform=disk.transAxes, ha="center",
              va="top", fontsize=7.5, color="0.3")

    spread = fig.add_subplot(grid[0, 1])
    rows = range(len(POINT_NAMES))
    rng = np.random.default_rng(0)
    for j in rows:
        values = distances[:, j]
        if np.ptp(values) > 1e-3:
            body = spread.violinplot([values], positions=[j], orientation="horizontal", widths=0.8,
                                     showextrema=False)["bodies"][0]
            body.set_facecolor(COLOURS[j]), body.set_alpha(0.3), body.set_edgecolor("none")
        spread.scatter(values, j + rng.uniform(-0.16, 0.16, len(values)), s=6, color=COLOURS[j], alpha=0.7,
                       linewidths=0)
        spread.plot([np.median(values)] * 2, [j - 0.32, j + 0.32], color="0.15", lw=1.2)
    spread.set_yticks(list(rows), POINT_NAMES)
    spread.set_ylim(len(POINT_NAMES) - 0.5, -0.5)
    spread.set_xlabel("hyperbolic distance to the origin $d_c(0, x)$ (bar: median)")
    spread.set_title("distance to the origin, per sample", fontsize=10)

    bars = fig.add_subplot(grid[1, 1])
    mean, std = weights.mean(axis=0), weights.std(axis=0)
    bars.bar(range(4), mean, yerr=std, color=COLOURS[:4], alpha=0.85, width=0.65, capsize=3, error_kw={"lw": 0.8})
    bars.axhline(0.25, color="0.45", lw=0.8, ls=(0, (4, 3)))
    bars.text(-0.5, 0.25, " uniform", color="0.45", fontsize=7, va="bottom", ha="left")
    bars.set_ylim(0, max(0.3, float((mean + std).max()) * 1.12))
    bars.set_xticks(range(4), POINT_NAMES[:4])
    bars.set_ylabel("mean ± sd")
    bars.set_title("part weights $w_p = \\mathrm{softmax}_p\\, d_c(0, h_p)$", fontsize=10)
    for suffix in (".png", ".pdf"):
        fig.savefig(path_stem + suffix, dpi=200, bbox_inches="tight")
    plt.close(fig)


def save_coordinates(path_stem, names, xy, distances, weights, c, energy):
    """embeddings_2d.npz (arrays) and embeddings_2d.csv (one row per point)."""
    np.savez(path_stem + ".npz", names=np.array(names), kinds=np.array(POINT_NAMES), xy=xy, distance_to_origin=distances,
             part_weights=weights, curvature=np.array(c), plane_energy=np.array(energy))
    with open(path_stem + ".csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sample", "kind", "x", "y", "distance_to_origin", "part_weight"])
        for i, name in enumerate(names):
            for j, kind in enumerate(POINT_NAMES):
                writer.writerow([name, kind, f"{xy[i, j, 0]:.6f}", f"{xy[i, j, 1]:.6f}", f"{distances[i, j]:.6f}",
                                 f"{weights[i, j]:.6f}" if j < 4 else ""])


def main(args):
    from data_config import DataConfig
    from datasets import PoseCollator, build_dataset
    utils.silence_known_notices()
    if args.batch_size < 1 or args.max_samples < 0:
        utils.fail(f"--batch_size must be at least 1 and --max_samples 0 (all) or more (got {args.batch_size} and "
                   f"{args.max_samples})")
    utils.ensure_writable_dir(args.output_dir, "--output_dir")  # before the model runs, not after
    device = "cuda" if torch.cuda.is_available() else "cpu"
    read = model_io.read_model(args.finetune)
    model = Uni_Sign.from_pretrained(args.finetune, args.mt5_path, device, read=read)
    if not model.config.use_hyperbolic:
        raise model_io.ModelFileError(f"{args.finetune} has no hyperbolic branch (trained without --use_hyperbolic): "
                                      "there is no Poincaré ball to draw")
    dataset_name = args.dataset or read["args"].get("dataset")
    if not dataset_name:
        raise model_io.ModelFileError(f"{args.finetune} does not say its dataset: pass --dataset")
    settings = DataConfig.from_args({**read["args"], "skip_bad_samples": False})
    dataset = build_dataset(dataset_name, args.split, settings, label_path=args.label_path, pose_dir=args.pose_dir)
    count = min(len(dataset), args.max_samples) if args.max_samples > 0 else len(dataset)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(count)), batch_size=args.batch_size,
                                         collate_fn=PoseCollator(model.mt5_tokenizer, dataset_name))
    names, points, weights, distances = embed(model, loader)
    c = float(model.manifold.c.detach())
    flat, energy = project_to_disk(points.reshape(-1, points.shape[-1]), c)
    xy = flat.reshape(len(names), len(POINT_NAMES), 2)
    os.makedirs(args.output_dir, exist_ok=True)
    title = f"{os.path.basename(os.path.normpath(args.finetune))}: {dataset_name} {args.split}, {len(names)} samples"
    draw(xy, distances, weights, c, energy, title, os.path.join(args.output_dir, "poincare_disk"))
    save_coordinates(os.path.join(args.output_dir, "embeddings_2d"), names, xy, distances, weights, c, energy)
    at_limit = float((np.linalg.norm(xy[:, :4], axis=-1) >= hyp.PROJECTION_LIMIT - 1e-4).mean())
    print(f"{len(names)} samples x {len(POINT_NAMES)} points (curvature c = {c:.3f}, plane holds {100 * energy:.1f} % "
          f"of the variance; {100 * at_limit:.0f} % of the part points at the float32 projection limit): "
          f"{os.path.join(args.output_dir, 'poincare_disk.png')} (and .pdf), embeddings_2d.npz/.csv")


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    try:
        main(parsed)
    except (FileNotFoundError, model_io.ModelFileError) as err:
        utils.fail(str(err))
    finally:
        utils.freeze_long_lived_objects()  # a quick exit
