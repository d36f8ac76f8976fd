"""Keeping trials honest across processes: heartbeats, stale trials, retries.

Owns: the scheduler's own handle on the study (storage with heartbeats and the retry callback),
the heartbeat thread for the trials this process runs, failing trials whose scheduler died
(judged by that scheduler's grace period), and re-queuing failed trials Optuna's way.
Must not know about: worker processes, the model.
"""
from __future__ import annotations

import copy
import logging
import threading
import warnings

import optuna
from optuna.trial import TrialState

from autotune import store
from autotune._optuna import study_id_of
from autotune.scheduler import policies
from autotune.spec_types import ParallelSpec

_log = logging.getLogger("autotune")

# user attrs of one attempt (the scheduler's, the growing curve); a retried trial starts without them
SCHEDULER_ATTRS = ("fail_reason", "slot", "gpu", "host", "gpu_seconds", "slot_seconds",
                   "stop_reason", "interrupted_by", "curve", "time_s", "compile", "metrics",
                   "traceback")


class RetryDiedTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback, except that the re-queued copy drops the scheduler's own user attrs
    (``fail_reason``, ``gpu_seconds``...), which belong to the failed attempt."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in SCHEDULER_ATTRS}
        super().__call__(study, trial)


def retry_callback(max_retries: int) -> RetryDiedTrial:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryDiedTrial(max_retry=max_retries)


def open_study(study: optuna.Study, storage_url: str, parallel: ParallelSpec
               ) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """The same study (sampler and pruner objects included) on a storage of our own, with
    heartbeats and the retry callback switched on."""
    storage = store.open_storage(
        storage_url, heartbeat_interval=max(1, int(parallel.heartbeat_interval)),
        grace_period=max(1, int(parallel.grace_period)),
        failed_trial_callback=retry_callback(parallel.max_retries))
    own = optuna.load_study(study_name=study.study_name, storage=storage,
                            sampler=study.sampler, pruner=study.pruner)
    return own, storage


GRACE_ATTR = store.GRACE_ATTR   # trial system attr: its scheduler's grace period, s


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> int:
    """Optuna's ``fail_stale_trials``, except that each trial is judged by the grace period of the
    scheduler that runs it (schedulers on other machines may use other settings), and the failed
    trial gets a ``fail_reason``. Returns how many trials it failed."""
    failed = 0
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial_id, age in store.heartbeat_ages(storage, study_id_of(study)).items():
        grace = storage.get_trial_system_attrs(trial_id).get(GRACE_ATTR, storage.grace_period)
        if not policies.is_stale(age, grace):
            continue
        try:
            storage.set_trial_user_attr(
                trial_id, "fail_reason", f"no heartbeat for {age:.0f}s (its scheduler died?)")
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process failed it first
        failed += 1
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return failed


class Heartbeats(threading.Thread):
    """Records a heartbeat for each running trial every ``interval`` seconds, on its own thread so
    that a slow sampler in the main loop never makes our trials look dead."""

    def __init__(self, storage: optuna.storages.RDBStorage, interval: float) -> None:
        super().__init__(name="autotune-heartbeats", daemon=True)
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            with self.lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried next interval
                    _log.warning("heartbeat of trial id %s failed: %s", trial_id,
                                 store.first_error_line(exc))

    def add(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.discard(trial_id)
