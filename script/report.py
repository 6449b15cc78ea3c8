"""Write a run's report: one self-contained HTML file to open in any browser, offline.

    python script/report.py out/demo [--split test] [--baseline out/other_run] [--out FILE.html]

What it shows and how it is scored: report_html.py and report_data.py. fine_tuning.py writes the same report
at the end of a run (out/RUN/report.html).
"""
import argparse
import os

import fine_tuning
import utils
from report_data import ReportError
from report_html import write_report


def get_args_parser():
    p = argparse.ArgumentParser("Write a run's HTML report")
    p.add_argument("output_dir", help="the run's --output_dir")
    p.add_argument("--split", default="test", choices=["dev", "test"], help="whose predictions the report shows")
    p.add_argument("--baseline", default=None, help="another run's --output_dir, evaluated on the same samples")
    p.add_argument("--out", default=None, help="the HTML file (default: OUTPUT_DIR/report.html)")
    p.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples (with --baseline)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (with --baseline)")
    return p


def main(args):
    utils.silence_known_notices()
    if args.resamples < 1:
        utils.fail(f"--resamples must be at least 1 (got {args.resamples})")
    if args.out is not None and os.path.isdir(args.out):
        utils.fail(f"--out {args.out} is a folder: name the HTML file to write")
    try:
        path = write_report(args.output_dir, args.split, args.baseline, args.out, args.resamples, args.seed,
                            defaults=fine_tuning.default_settings())
    except ReportError as err:
        utils.fail(str(err))
    print(f"report: {path}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
