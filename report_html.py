"""A run's report: one self-contained HTML file (images embedded as data URIs, a few lines of plain JavaScript,
nothing fetched from the network), so that it opens offline on a cluster or a laptop.

    write_report(output_dir, split="test", baseline=None, out=None) -> path of the written file
    report_at_end_of_run(output_dir, task, defaults)  -> what fine_tuning.py calls when a run ends

Sections: the run, curves per epoch, every sample (sortable, filterable), the ten worst and best, scores by
reference and video length, the Poincaré plot and part importance, skeleton animations, and with a baseline the
comparison. What is shown is computed by report_data.py. The file is written atomically.
"""
import base64
import html
import io
import json
import os
import tempfile

import numpy as np

import report_data as data
from atomic import atomic_open

ANIMATED = 4  # samples drawn as skeleton animations: the two worst and the two best
ANIMATION_FRAMES = 40  # at most, evenly spaced, so the GIFs stay small
ANIMATION_SIZE = 200  # pixels, the longer side
SORT_AND_FILTER_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, column) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], up = th.dataset.order !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(function (o) { delete o.dataset.order; });
    th.dataset.order = up ? 'asc' : 'desc';
    var key = function (row) { var c = row.cells[column]; return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent; };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), d = (typeof x === 'number') ? x - y : String(x).localeCompare(String(y));
      return up ? d : -d;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
var filter = document.getElementById('filter');
filter.addEventListener('input', function () {
  var q = filter.value.toLowerCase(), shown = 0;
  document.querySelectorAll('#sample-table tbody tr').forEach(function (row) {
    var keep = row.textContent.toLowerCase().indexOf(q) >= 0;
    row.style.display = keep ? '' : 'none';
    shown += keep;
  });
  document.getElementById('shown').textContent = shown;
});
"""
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}table{border-collapse:collapse;font-size:.88em}
td,th{border:1px solid #ddd;padding:.25em .5em;vertical-align:top}th{background:#f3f3f3}
table.sortable th{cursor:pointer}th[data-order=asc]::after{content:' \\25B2'}th[data-order=desc]::after{content:' \\25BC'}
td.n{text-align:right;font-variant-numeric:tabular-nums}.warn{color:#a40;font-weight:bold}
img{max-width:100%}.note{color:#666;font-size:.9em}figure{display:inline-block;margin:.5em;vertical-align:top;max-width:380px}"""


def esc(value):
    return html.escape(str(value))


def image(png_or_gif_bytes, kind="png", alt=""):
    """An <img> holding the image itself (a data URI): the report needs no file beside it."""
    encoded = base64.b64encode(png_or_gif_bytes).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/{kind};base64,{encoded}">'


def figure_png(fig):
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def table(header, rows, numeric=(), sortable=False, table_id=None, integer=()):
    """An HTML table; cells of columns in `numeric` (2 decimals) or `integer` are right-aligned and keep their
    value in data-v for sorting."""
    def cell(k, value):
        if k in numeric or k in integer:
            missing = value is None or (isinstance(value, float) and np.isnan(value))
            shown = "n/a" if missing else f"{value:.0f}" if k in integer else f"{value:.2f}"
            sort = "-1e9" if shown == "n/a" else repr(float(value))
            return f'<td class="n" data-v="{sort}">{shown}</td>'
        return f"<td>{esc(value)}</td>"
    head = "".join(f"<th>{esc(h)}</th>" for h in header) if any(header) else ""
    body = "\n".join("<tr>" + "".join(cell(k, v) for k, v in enumerate(row)) + "</tr>" for row in rows)
    attrs = (' class="sortable"' if sortable else "") + (f' id="{table_id}"' if table_id else "")
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table{attrs}>{head}<tbody>\n{body}\n</tbody></table>"


def section(anchor, title, body):
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def run_section(run):
    best = data.best_record(run.records)
    settings = data.differing_settings(run.args, run.defaults or {})
    rows = [("output folder", run.folder), ("dataset", run.dataset or "unknown (no checkpoint.pth)"),
            ("epochs logged", len(run.records))]
    if best:
        rows.append(("best epoch (dev BLEU-4)", best["epoch"]))
        for split in ("dev", "test"):
            if f"{split}_bleu4" in best:
                rows.append((f"{split} at the best epoch", " | ".join(
                    f"{k} {best[f'{split}_{k}']:.2f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge")
                    if f"{split}_{k}" in best)))
    speeds = [r["train_samples_per_s"] for r in run.records if "train_samples_per_s" in r]
    if speeds:
        rows.append(("throughput (training)", f"{np.mean(speeds):.1f} samples/s, "
                     f"{np.mean([r.get('train_tflops', 0) for r in run.records]):.3f} TFLOP/s (mean over epochs)"))
    wall = sum(r.get("epoch_time_s", 0) for r in run.records)
    rows.append(("wall time (training and evaluation)", f"{wall / 60:.1f} min"))
    rows.append((f"{run.split} predictions in this report", f"{len(run.names)} samples, from the last epoch "
                 f"({run.split}_tmp_pres.txt)"))
    protocol = ("BLEU-1..4: sacrebleu corpus BLEU, 13a tokenisation, exp smoothing; ROUGE-L: F-measure as the "
                "rouge 1.0.1 package computes it; CSL datasets are scored on characters. Per sample: sacrebleu's "
                "sentence BLEU (exp smoothing, effective order) and ROUGE-L F.")
    flags = table(["flag", "this run", "default"], [(f"--{k}", v, d) for k, (v, d) in settings.items()])
    return section("run", "The run", table(["", ""], rows) + f'<p class="note">{esc(protocol)}</p>'
                   + "<h3>Settings that differ from the defaults</h3>" + (flags if settings else "<p>none</p>"))


def curves_section(run):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    records = run.records
    if not records:
        return section("curves", "Curves per epoch", "<p>log.txt holds no epoch yet.</p>")
    epochs = [r["epoch"] for r in records]
    keys = sorted({k for r in records for k in r})
    groups = [("losses", [k for k in keys if k.startswith("train_") and k.endswith("loss")]),
              ("scores", [k for k in keys if k.split("_", 1)[-1] in ("bleu4", "rouge") and k[:4] in ("dev_", "test")]),
              ("hyperbolic branch health", [k for k in keys if k.startswith("train_hyp_") and not k.endswith("loss")
                                            and not k.endswith("norm")]),
              ("tangent norms", [k for k in keys if k.startswith("train_hyp_") and k.endswith("norm")])]
    groups = [(title, ks) for title, ks in groups if ks]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.2), squeeze=False)
    for ax, (title, ks) in zip(axes[0], groups):
        for k in ks:
            ax.plot(epochs, [r.get(k, np.nan) for r in records], marker="o", ms=3, label=k)
        ax.set_title(title, fontsize=10), ax.set_xlabel("epoch"), ax.legend(fontsize=7, frameon=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
    saturated = [r["epoch"] for r in records if r.get("train_hyp_at_limit", 0) > 0.5]
    warning = (f'<p class="warn">warning: in epoch(s) {", ".join(map(str, saturated))} most part points sat at the '
               "Poincaré ball's float32 limit (train_hyp_at_limit &gt; 0.5): the hyperbolic branch was saturated "
               "(--hyp_recipe stable keeps them off it).</p>") if saturated else ""
    return section("curves", "Curves per epoch", warning + image(figure_png(fig), alt="curves"))


def sample_rows(run, baseline, order=None):
    order = range(len(run.names)) if order is None else order
    for i in order:
        row = [run.names[i], run.refs[i], run.hyps[i], run.bleu[i], run.rouge[i],
               None if run.frames is None else run.frames[i], float(run.words[i])]
        if baseline is not None:
            row += [baseline.hyps[i], baseline.bleu[i], run.bleu[i] - baseline.bleu[i]]
        yield row


def samples_section(run, baseline):
    unit = "characters" if run.dataset in _chinese() else "words"
    header = ["sample", "reference", "prediction", "BLEU", "ROUGE-L", "frames", unit]
    numeric = {3, 4}
    if baseline is not None:
        header += ["baseline prediction", "baseline BLEU", "BLEU - baseline"]
        numeric |= {8, 9}
    filter_box = (f'<p><input id="filter" placeholder="filter by text" size="40"> <span id="shown">{len(run.names)}'
                  f"</span> of {len(run.names)} samples shown; click a column header to sort.</p>")
    order = np.lexsort((run.rouge, run.bleu))
    worst, best = order[:10], order[::-1][:10]
    small = header[:5]
    return section("samples", f"Every {run.split} sample", filter_box + table(header, sample_rows(run, baseline),
                   numeric, sortable=True, table_id="sample-table", integer={5, 6})
                   + "<h3>The ten worst (sentence BLEU)</h3>"
                   + table(small, [r[:5] for r in sample_rows(run, None, worst)], {3, 4})
                   + "<h3>The ten best</h3>" + table(small, [r[:5] for r in sample_rows(run, None, best)], {3, 4}))


def buckets_section(run, baseline):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [run] + ([baseline] if baseline is not None else [])
    for r in runs:
        data.attach_stats(r)
    axes_values = [("reference length (" + ("characters" if run.dataset in _chinese() else "words") + ")",
                    run.words.astype(float))]
    if run.frames is not None:
        axes_values.append(("video length (frames)", run.frames))
    fig, axes = plt.subplots(1, 2 * len(axes_values), figsize=(4 * 2 * len(axes_values), 3.2), squeeze=False)
    tables = []
    for k, (title, values) in enumerate(axes_values):
        rows = data.bucket_scores(values, data.bucket_edges(values), runs)
        labels = [f"{r['bucket']}\n({r['samples']})" for r in rows]
        for m, (metric, name) in enumerate((("bleu4", "BLEU-4"), ("rouge", "ROUGE-L"))):
            ax = axes[0][2 * k + m]
            width = 0.8 / len(runs)
            for j, who in enumerate(["this run", "baseline"][:len(runs)]):
                ax.bar(np.arange(len(rows)) + (j - (len(runs) - 1) / 2) * width, [r["scores"][j][metric] for r in rows],
                       width, label=who)
            ax.set_xticks(range(len(rows)), labels, fontsize=7)
            ax.set_title(f"{name} by {title}", fontsize=9)
            if len(runs) > 1:
                ax.legend(fontsize=7, frameon=False)
        header = [title, "samples"] + [f"{who} {m}" for who in ["", "baseline "][:len(runs)]
                                       for m in ("BLEU-4", "ROUGE-L")]
        tables.append(table(header, [[r["bucket"], float(r["samples"])] + [s[m] for s in r["scores"]
                                                                            for m in ("bleu4", "rouge")]
                                     for r in rows], set(range(2, len(header))), integer={1}))
    note = ("" if run.frames is not None else '<p class="note">The run\'s pose files are not on this machine: no '
            "video lengths.</p>")
    return section("buckets", "Scores by reference and video length", image(figure_png(fig), alt="buckets") + note
                   + "".join(tables) + '<p class="note">Buckets: quartiles of the lengths; a bucket\'s BLEU-4 is '
                   "the corpus BLEU-4 of its sentences, its ROUGE-L their mean.</p>")


def _chinese():
    import config
    return config.chinese_datasets


def extras_section(run):
    body = []
    disk = data.find_extra(run.folder, os.path.join("embeddings", "poincare_disk.png"))
    if disk:
        with open(disk, "rb") as f:
            body.append("<h3>Poincaré plot</h3>" + image(f.read(), alt="Poincaré disk"))
    else:
        body.append(f"<p>No Poincaré plot: <code>python script/plot_embeddings.py --finetune "
                    f"{esc(os.path.join(run.folder, 'best_checkpoint.pth'))} --split {run.split} --output_dir "
                    f"{esc(os.path.join(run.folder, 'embeddings'))}</code> draws it.</p>")
    parts = data.read_part_importance(run.folder)
    plot = data.find_extra(run.folder, os.path.join("part_importance", "part_importance.png"))
    if parts and plot:
        with open(plot, "rb") as f:
            body.append("<h3>Part importance</h3>" + image(f.read(), alt="part importance"))
        rows = [(how, part, r["bleu4"]["drop"], r["bleu4"]["ci95"][0], r["bleu4"]["ci95"][1], r["rouge"]["drop"],
                 parts.get("part_weights", {}).get("mean", {}).get(part))
                for how, by_part in parts["drops"].items() for part, r in by_part.items()]
        body.append(table(["part removed", "part", "BLEU-4 drop", "95 % low", "95 % high", "ROUGE-L drop",
                           "mean weight"], rows, {2, 3, 4, 5, 6}))
        for how, by_metric in parts.get("weight_agreement", {}).items():
            rho = by_metric["bleu4"]["per_sample_mean"]
            body.append(f"<p>Part weights against the per-sample BLEU drops (part {esc(how)}): mean Spearman "
                        + ("n/a: the weights (or the drops) rank no part" if rho is None else
                           f"{rho:+.2f} over {by_metric['bleu4']['samples_ranked']} samples") + ".</p>")
    else:
        body.append(f"<p>No part importance: <code>python script/part_importance.py --finetune "
                    f"{esc(os.path.join(run.folder, 'best_checkpoint.pth'))} --split {run.split} --output_dir "
                    f"{esc(os.path.join(run.folder, 'part_importance'))}</code> measures it.</p>")
    return section("poincare", "Poincaré plot and part importance", "\n".join(body))


def animation(pose_path):
    """A small GIF of the pose file's skeleton (pose_render; at most ANIMATION_FRAMES frames), framed on the box of
    its confident points so that the signer fills the picture."""
    import pose_render
    from datasets import CONFIDENCE_THRESHOLD
    clip = pose_render.read_pose(pose_path)
    step = max(1, -(-len(clip.keypoints) // ANIMATION_FRAMES))
    # pose files store keypoints divided by the frame's (w, h): in pixels first, then divided by the new frame's
    pixels = clip.keypoints[::step] * np.array(clip.size or pose_render.DEFAULT_SIZE, dtype=np.float32)
    scores = clip.scores[::step]
    seen = pixels[scores > CONFIDENCE_THRESHOLD]
    if not len(seen):
        raise pose_render.RenderError(f"{pose_path}: no confident point to draw")
    low, high = seen.min(0), seen.max(0)
    margin = 0.08 * float((high - low).max() or 1.0)
    scale = ANIMATION_SIZE / (float((high - low).max()) + 2 * margin)
    size = tuple(max(1, int(round(float(v)))) for v in (high - low + 2 * margin) * scale)
    small = clip._replace(keypoints=(pixels - low + margin) * scale / np.array(size, dtype=np.float32),
                          scores=scores, size=size, fps=(clip.fps or pose_render.DEFAULT_FPS) / step, start=0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.gif")
        pose_render.render_clip([small], path, progress=False, parts=True)
        with open(path, "rb") as f:
            return f.read()


def animations_section(run):
    paths = data.pose_paths(run.args, run.split)
    if paths is None:
        return section("animations", "Samples as skeletons", "<p>The run's pose files are not on this machine.</p>")
    order = list(np.lexsort((run.rouge, run.bleu)))
    chosen = list(dict.fromkeys(order[:ANIMATED // 2] + order[::-1][:ANIMATED // 2]))
    figures = []
    for i in chosen:
        import pose_render
        try:
            gif = image(animation(paths[run.names[i]]), "gif", run.names[i])
        except (pose_render.RenderError, KeyError) as err:
            gif = f"<p>cannot draw: {esc(err)}</p>"
        figures.append(f"<figure>{gif}<figcaption><b>{esc(run.names[i])}</b> (BLEU {run.bleu[i]:.1f})<br>"
                       f"reference: {esc(run.refs[i])}<br>prediction: {esc(run.hyps[i])}</figcaption></figure>")
    return section("animations", "Samples as skeletons (the two worst, the two best)", "".join(figures))


def baseline_section(run, baseline, result):
    rows = [(metric, result["baseline"][metric], result["system"][metric], result[metric]["difference"],
             result[metric]["ci95"][0], result[metric]["ci95"][1], result[metric]["p_value"])
            for metric in ("bleu4", "rouge")]
    counts = result["sentence_bleu"]
    return section("baseline", "Against the baseline", f"<p>baseline: {esc(os.path.abspath(baseline.folder))}; "
                   f"this run wins {counts['wins']}, loses {counts['losses']} and ties {counts['ties']} samples in "
                   "sentence BLEU (per sample: the table above).</p>"
                   + table(["metric", "baseline", "this run", "difference", "95 % low", "95 % high", "p"], rows,
                           {1, 2, 3, 4, 5, 6})
                   + f'<p class="note">Paired bootstrap (Koehn 2004), {result["resamples"]} resamples, seed '
                   f'{result["seed"]}: the numbers of <code>python SLRT_metrics.py --hyp RUN/{run.split}_tmp_pres.txt '
                   f"--baseline BASELINE/{run.split}_tmp_pres.txt --ref RUN/{run.split}_tmp_refs.txt --dataset "
                   f"{esc(run.dataset)}</code>.</p>")


def render(run, baseline=None, comparison=None):
    sections = [run_section(run), curves_section(run), samples_section(run, baseline), buckets_section(run, baseline),
                extras_section(run), animations_section(run)]
    if baseline is not None:
        sections.append(baseline_section(run, baseline, comparison))
    title = f"Geo-Sign run report: {os.path.basename(os.path.abspath(run.folder))} ({run.split})"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            f"style-src 'unsafe-inline'; script-src 'unsafe-inline'\"><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1>\n" + "\n".join(sections) + f"\n<script>{SORT_AND_FILTER_JS}</script></body></html>\n")


def write_report(output_dir, split="test", baseline=None, out=None, resamples=1000, seed=0, defaults=None):
    """Write the report of the run in `output_dir` (against the run in `baseline`) to `out` (default
    output_dir/report.html) and return its path. A data.ReportError names what is missing; nothing is written
    then, and an error while writing leaves no partial file."""
    run = data.read_run(output_dir, split, defaults)
    other, comparison = None, None
    if baseline is not None:
        other = data.read_run(baseline, split, defaults)
        data.check_same_samples(run, other)
        comparison = data.compare(run, other, resamples, seed)
    page = render(run, other, comparison)
    out = out or os.path.join(output_dir, "report.html")
    with atomic_open(out) as f:
        f.write(page)
    if comparison is not None:  # the numbers, for scripts
        with atomic_open(os.path.splitext(out)[0] + "_bootstrap.json") as f:
            json.dump({k: v for k, v in comparison.items()}, f, indent=1)
    return out


def report_at_end_of_run(output_dir, task, defaults=None):
    """The report fine_tuning.py writes when a run ends (its --no_report skips it): of the test predictions, or
    the dev ones where the dataset has no test split (CSL-News). Translation runs only (the report scores BLEU and
    ROUGE-L). A report that cannot be written is one warning line: the run itself has finished and is saved."""
    if task != "SLT":
        return None
    split = "test" if os.path.isfile(os.path.join(output_dir, "test_tmp_pres.txt")) else "dev"
    try:
        path = write_report(output_dir, split, defaults=defaults)
    except (data.ReportError, OSError) as err:
        print(f"warning: no report.html ({err})")
        return None
    print(f"report: {path}")
    return path
