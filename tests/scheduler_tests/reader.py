"""``python -m scheduler_tests.reader URL STOP_FILE``: read a study store in a loop the way
optuna-dashboard (plain Optuna storage, no autotune settings) and ``autotune status`` do, until
``STOP_FILE`` exists (at most 5 minutes); prints ``reading`` after the first read, then at the end
the number of reads and every error."""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import optuna

from autotune import store


def main() -> None:
    url, stop = sys.argv[1], Path(sys.argv[2])
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    plain = optuna.storages.RDBStorage(url)   # like optuna-dashboard: default engine settings
    ours = store.open_storage(url)             # like autotune status
    reads, errors = 0, []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (reads and stop.exists()):
        try:
            for summary in optuna.get_all_study_summaries(plain):
                optuna.load_study(study_name=summary.study_name, storage=plain).get_trials()
            store.summarize_studies(ours)
            reads += 1
        except Exception as exc:  # noqa: BLE001 - the test wants every error
            errors.append(f"{type(exc).__name__}: {exc}")
        if reads + len(errors) == 1:
            print("reading", flush=True)
        time.sleep(0.05)
    print(f"reads={reads}")
    for e in errors:
        print("ERROR", e)


if __name__ == "__main__":
    main()
