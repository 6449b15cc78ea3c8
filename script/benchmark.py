"""Speed checks, measured side by side in one process.

    python script/benchmark.py data         # pose loading + normalisation vs a bare pickle.load
    python script/benchmark.py hyperbolic   # training step with the token-mode branch vs without

Each prints both times and the ratio; its last line is a JSON object with the ratio under "ratio".
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["data", "hyperbolic"])
    args, rest = parser.parse_known_args()
    if args.which == "data":
        import bench_data as bench
    else:
        import bench_hyperbolic as bench
    bench.main(rest)


if __name__ == "__main__":
    main()
