"""The benchmarks behind `python script/benchmark.py NAME` (benchmark.BENCHMARKS maps each NAME to its module);
common.py holds what several share."""
