"""Running fine_tuning.py's command line inside the test process (no interpreter start, no imports again), for
the tests whose subject is what fine_tuning.run does with a command line, not the process around it.

fine_tuning.run is what `python fine_tuning.py ...` runs after parsing; utils.fail ends it with SystemExit(1)
after writing its one `error:` line to sys.stderr, which pytest's capsys captures. A traceback a user would
see is an exception other than SystemExit here: it propagates and fails the test.
"""
import pytest

import fine_tuning
import utils

# DeepSpeed's logger writes to the sys.stdout of the moment it is first imported. Imported inside a test that uses
# capsys, that is capsys's stream, closed after the test: every later DeepSpeed warning would then print a
# "--- Logging error ---" traceback. Imported here, at collection, it writes to pytest's session-long capture.
utils.silence_known_notices()  # before the import, as fine_tuning does: DeepSpeed then knows it runs on the CPU
import deepspeed  # noqa: E402,F401


def fine_tuning_refuses(capsys, argv):
    """fine_tuning.run on these command-line arguments must exit with code 1 and write exactly one `error:` line;
    returns (that line, everything written to stdout, everything written to stderr)."""
    capsys.readouterr()  # drop what earlier steps of the test printed
    args = fine_tuning.get_args_parser().parse_args([str(a) for a in argv])
    with pytest.raises(SystemExit) as stop:
        fine_tuning.run(args)
    out, err = capsys.readouterr()
    assert stop.value.code == 1, f"exit {stop.value.code}\nSTDOUT:\n{out[-2000:]}\nSTDERR:\n{err[-3000:]}"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    return errors[0], out, err
