"""``python -m scheduler_tests.reader URL SECONDS``: read a study store in a loop the way
optuna-dashboard (plain Optuna storage, no autotune settings) and ``autotune status`` do;
prints the number of reads and every error."""
from __future__ import annotations

import sys
import time
import warnings

import optuna

from autotune import store


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    plain = optuna.storages.RDBStorage(url)   # like optuna-dashboard: default engine settings
    ours = store.open_storage(url)             # like autotune status
    reads, errors = 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            for summary in optuna.get_all_study_summaries(plain):
                optuna.load_study(study_name=summary.study_name, storage=plain).get_trials()
            store.summarize_studies(ours)
            reads += 1
        except Exception as exc:  # noqa: BLE001 - the test wants every error
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.05)
    print(f"reads={reads}")
    for e in errors:
        print("ERROR", e)


if __name__ == "__main__":
    main()
