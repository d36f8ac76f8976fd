"""The scheduler: hands a study's trials to crash-isolated worker processes until the budget is spent.

Owns: slots and their worker processes (one per slot, started and killed through ``workers``),
the claim of each trial (race-free across processes and machines), heartbeats of running trials,
failing and retrying the trials of dead processes, budgets (trials, wall time, GPU-hours),
per-trial time limits (killing a hung trial's process group), and a graceful Ctrl-C / SIGTERM.
Its decisions are small pure functions (``policies``: budget spent? claim? which slots? retry?
timed out? too many failures?); the class is the loop that applies them.
Must not know about: the model. It runs the ``objective(trial_id, params, notify)`` it is handed.

The parent (this process) owns the sampler: ``study.ask()`` + ``suggest(trial)`` happen here, so
every suggestion comes from one long-lived sampler object; the worker only runs the objective.
"""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from autotune import store
from autotune._optuna import study_id_of, trial_id_of
from autotune.outcomes import INTERRUPTED, INTERRUPTED_BY_ATTR, RERUN_OF_ATTR, STOP_ATTR
from autotune.scheduler import _worker
from autotune.scheduler._liveness import (GRACE_ATTR, SCHEDULER_ATTRS, Heartbeats, fail_stale_trials,
                                          open_study, retry_callback)
from autotune.scheduler.gpus import Slot, plan_slots, shared_gpus
from autotune.scheduler.mps import Mps, start_mps
from autotune.scheduler.workers import (Running, Worker, describe_exit, kill_worker, start_worker,
                                       terminate_worker)
from autotune.scheduler import policies
from autotune.spec_types import BudgetSpec, ParallelSpec

_log = logging.getLogger("autotune")

POLL_S = 0.2                 # how often the main loop wakes up with nothing to do
STOP_GRACE_S = 5.0           # how long a worker gets to exit after "stop"


@dataclass
class RunResult:
    """What one ``run_study`` call did (this process only; the study may have more)."""

    study_name: str
    completed: int = 0
    pruned: int = 0
    failed: int = 0              # trials that failed on their own (not the interrupted ones)
    retried: int = 0             # failed trials re-queued (worker died)
    interrupted_trials: int = 0  # running trials cut by Ctrl-C / SIGTERM or --hard-stop, re-queued
    finished_in_study: int = 0   # COMPLETE + PRUNED in the whole study at the end
    stopped_by: str = ""         # trials | timeout | gpu_hours | interrupted | failures
    interrupted: bool = False
    wall_s: float = 0.0
    slot_seconds: float = 0.0    # trials' wall time summed over slots
    gpu_seconds: float = 0.0     # the same, each slot weighted by its share of its GPU
    slots: int = 0
    # where the slots' time outside trials went (seconds, summed over slots)
    startup_s: float = 0.0       # worker processes starting until they are ready
    handout_s: float = 0.0       # claiming a trial and sampling its parameters (ask + suggest)
    record_s: float = 0.0        # recording finished trials (tell)


class SchedulerError(RuntimeError):
    """The scheduler cannot go on, e.g. worker processes die while starting."""


@dataclass
class _Budget:
    spec: BudgetSpec
    started: float = field(default_factory=time.monotonic)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


@dataclass
class StartedWorkers:
    """A run's worker processes, started before its study is opened (``start_workers``), so that
    their start (imports, the CUDA context: seconds to tens of seconds) overlaps the scheduler's
    own. ``run_study(..., started=...)`` takes them over; ``stop()`` them if no run comes (a no-op
    once a run has taken them over)."""
    objective: Callable
    slots: list[Slot]
    mps: Mps
    workers: list[Worker]

    def stop(self) -> None:
        for worker in self.workers:
            terminate_worker(worker)
        for worker in self.workers:
            kill_worker(worker)
            worker.conn.close()
        self.workers = []
        self.mps.stop()


def start_workers(parallel: ParallelSpec, objective: Callable) -> StartedWorkers:
    """Start a worker on each of ``parallel``'s slots (with the run's MPS daemon when it asks
    for one) before the study is opened: a worker waits for its first trial, and its warm-up
    must not need the study (``TrialObjective.warm_up`` does not touch the store)."""
    slots = plan_slots(parallel)
    mps, slots = _mps_for(parallel, slots)
    try:
        workers = [start_worker(slot, objective) for slot in slots]
    except BaseException:
        mps.stop()
        raise
    return StartedWorkers(objective, slots, mps, workers)


def _mps_for(parallel: ParallelSpec, slots: list[Slot]) -> tuple[Mps, list[Slot]]:
    """parallel.mps: one MPS daemon for the run; the shared GPUs' slots reach it."""
    mps = start_mps(parallel.mps, shared_gpus(slots))
    if mps.note:
        _log.log(logging.INFO if mps.env else logging.WARNING, "%s", mps.note)
    if mps.env:
        extra = tuple(mps.env.items())
        slots = [replace(s, extra_env=extra) for s in slots]
    return mps, slots


def run_study(
    study: optuna.Study, *, storage_url: str,
    suggest: Callable[[optuna.trial.Trial], dict],
    objective: Callable[[int, dict, Callable[[int, dict], None]], list[float]],
    parallel: ParallelSpec, budget: BudgetSpec, hard_stop: bool = False,
    progress: Any = None, started: StartedWorkers | None = None,
) -> RunResult:
    """Run trials of ``study`` on this machine's slots until ``budget`` is spent or Ctrl-C.

    ``budget.trials`` counts the study's finished (COMPLETE + PRUNED) trials, including those of
    earlier runs and of other processes on the same storage; ``timeout_s`` is this run's wall time;
    ``gpu_hours`` sums the GPU-time of all the study's trials: a trial's wall time times its
    slot's share of its GPU (1 / ``trials_per_gpu``; a CPU worker counts as one device). When any
    runs out no new trial is handed out; running trials finish, or with ``hard_stop`` are
    interrupted. An interrupted trial (also by Ctrl-C / SIGTERM) is stored as FAIL with the user
    attr ``stop_reason: interrupted`` and re-queued as a WAITING copy that the next claim of any
    run takes first; it counts neither in the budget nor as a failure.
    ``started``: the workers ``start_workers`` started for this run (with the same ``parallel`` and
    ``objective``), taken over instead of starting new ones.
    """
    return _Scheduler(study, storage_url=storage_url, suggest=suggest, objective=objective,
                      parallel=parallel, budget=budget, hard_stop=hard_stop,
                      progress=progress, started=started).run()


TRACEBACK_ATTR = "traceback"    # user attr: a failed trial's traceback text
TRACEBACK_MAX_CHARS = 20_000    # its tail (the frames nearest the error) when longer


def stored_traceback(text: str, limit: int = TRACEBACK_MAX_CHARS) -> str:
    """What the store keeps of a traceback: all of it, or its last ``limit`` characters after a
    line saying how much was cut (a deep recursion's text runs to megabytes)."""
    if len(text) <= limit:
        return text
    return f"[{len(text) - limit} characters cut]\n" + text[-limit:]


HOST = socket.gethostname()


class _NoProgress:
    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class _Scheduler:
    """One ``run_study`` call: the main loop and its state."""

    def __init__(self, study: optuna.Study, *, storage_url: str, suggest: Callable,
                 objective: Callable, parallel: ParallelSpec, budget: BudgetSpec,
                 hard_stop: bool, progress: Any, started: StartedWorkers | None = None) -> None:
        self.study, self.storage = open_study(study, storage_url, parallel)
        self.suggest, self.objective = suggest, objective
        self.parallel, self.hard_stop = parallel, hard_stop
        self.progress = progress or _NoProgress()
        self.budget = _Budget(budget)
        self.retry = retry_callback(parallel.max_retries)
        self.slots = plan_slots(parallel)
        self.workers: list[Worker] = []
        self.heartbeats = Heartbeats(self.storage, max(1, parallel.heartbeat_interval))
        self.result = RunResult(study.study_name, slots=len(self.slots))
        self.interrupt: int | None = None
        self.stop_reason: str | None = None
        self.next_claim = 0.0            # monotonic time of the next claim attempt when idle
        self.next_stale_check = 0.0
        self.gpu_seconds_used = (0.0, -1.0)   # (study total, monotonic time read)
        self.start_failures: dict[int, int] = {}   # slot index -> workers dead before "ready"
        self.failure_streak = 0                    # trials in a row of this run that failed
        self.complete_slot_seconds: list[float] = []   # the study's, for the default trial limit
        self.held: tuple[Any, dict, int] | None = None  # claimed, waiting for its width in slots
        self.mps = Mps()                                # parallel.mps: the run's daemon, if any
        if started is not None:                         # workers started before the study opened
            self.objective, self.slots, self.mps = started.objective, started.slots, started.mps
            self.workers, started.workers, started.mps = started.workers, [], Mps()   # ours now

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> RunResult:
        restore_signals = self._install_signal_handlers()
        self.heartbeats.start()
        try:
            counts = store.count_trials(self.storage, study_id_of(self.study))
            self.progress.start(self.study.study_name,
                                [d.name.lower() for d in self.study.directions],
                                list(self.study.metric_names or []), self.budget.spec.trials,
                                counts.finished, self.budget.spec.timeout_s)
            _log.info("study %s: %d slot(s) %s", self.study.study_name, len(self.slots),
                      [s.gpu if s.gpu is not None else "cpu" for s in self.slots])
            with store.study_lock(self.storage, study_id_of(self.study)):   # also with the budget met
                fail_stale_trials(self.study, self.storage)
            if policies.trials_spent(counts.finished, self.budget.spec.trials):
                self.result.stopped_by = "trials"   # nothing to do: no worker is started
                return self.result
            if self.budget.spec.trial_timeout_s is None:   # read once; this run's own are added
                self.complete_slot_seconds = store.trial_user_attr_values(
                    self.storage, study_id_of(self.study), "slot_seconds", TrialState.COMPLETE)
            if not self.workers:            # none taken over from start_workers
                self.mps, self.slots = _mps_for(self.parallel, self.slots)
                self.workers = [start_worker(slot, self.objective) for slot in self.slots]
            self._loop()
        finally:
            self._shutdown()
            self.mps.stop()
            restore_signals()
            self.result.wall_s = round(time.monotonic() - self.budget.started, 3)
            try:
                self.result.finished_in_study = store.count_trials(
                    self.storage, study_id_of(self.study)).finished
            finally:
                self.progress.close()
        return self.result

    def _loop(self) -> None:
        while True:
            if self.interrupt is not None:
                self.result.interrupted, self.stop_reason = True, "interrupted"
                by = signal.Signals(self.interrupt).name
                _log.warning("%s: interrupting running trials", by)
                self._release_held(by)
                self._cancel_running(interrupted_by=by)
                break
            if self.stop_reason is None:
                self.stop_reason = self._budget_spent()
            if self.stop_reason is not None:
                self._release_held(self.stop_reason)
            if self.stop_reason is not None and self.hard_stop:
                self._cancel_running(interrupted_by=self.stop_reason)
            self._stop_overdue_trials()
            if self.stop_reason is None:
                self._hand_out()
            if self.stop_reason is not None and not self._running():
                break
            self._wait(POLL_S)
        self.result.stopped_by = self.stop_reason or ""

    def _running(self) -> list[Worker]:
        return [w for w in self.workers if w.running is not None]

    # --- budgets and claims ---------------------------------------------------------------
    def _budget_spent(self) -> str | None:
        spec = self.budget.spec
        return policies.budget_spent(self.budget.elapsed_s(), spec.timeout_s,
                                     self._gpu_seconds() if spec.gpu_hours is not None else 0.0,
                                     spec.gpu_hours)

    def _gpu_seconds(self) -> float:
        """The study's GPU-seconds: its finished trials' (read at most once a second) plus ours
        running now."""
        now = time.monotonic()
        total, read_at = self.gpu_seconds_used
        if now - read_at >= 1.0:
            total = store.sum_trial_user_attr(self.storage, study_id_of(self.study), "gpu_seconds")
            self.gpu_seconds_used = (total, now)
        return total + sum((now - w.running.started) * w.running.share for w in self._running())

    def _hand_out(self) -> None:
        """Claim trials while slots are free and place each on the slots its width needs. A trial
        that does not fit yet (a searched width above the free slots) is held, and nothing more is
        claimed until it starts, so that narrow trials never starve a wide one."""
        if time.monotonic() < self.next_claim:
            return
        while True:
            free = self._free_units()
            if self.held is None:
                if not free:
                    return
                tick = time.monotonic()
                trial = store.retrying(self._claim)
                if trial is None:
                    self.next_claim = time.monotonic() + 1.0
                    return
                self.held = self._sample(self._worker_of(free[0]), trial)
                self.result.handout_s += time.monotonic() - tick
            trial, params, width = self.held
            units = policies.place(width, free)
            if units is None:
                return   # held until enough slots are free
            self.held = None
            self._start_trial(trial, params, units)

    def _free_units(self) -> list[int]:
        held = {u for w in self._running() for u in w.running.units}
        return policies.free_slots(
            policies.SlotState(w.slot.index, busy=w.slot.index in held, ready=w.ready,
                               alive=w.process.is_alive() and not w.stopping) for w in self.workers)

    def _worker_of(self, index: int) -> Worker:
        return next(w for w in self.workers if w.slot.index == index)

    def _sample(self, worker: Worker, trial: optuna.trial.Trial) -> tuple[Any, dict, int]:
        """``(trial, params, slots it needs)``: its parameters sampled here (a failure fails the
        trial on ``worker``'s slot) and, with a searched width, its width."""
        worker.running = Running(trial, time.monotonic(), (worker.slot.index,), worker.slot.share)
        try:
            params = self.suggest(trial)
        except Exception as exc:
            self._finish(worker, TrialState.FAIL, reason=f"suggest failed: {_worker._reason(exc)}")
            raise
        worker.running = None
        searched = self.parallel.searched_width is not None
        return trial, params, policies.trial_width(params, self.parallel) if searched else 1

    def _release_held(self, interrupted_by: str) -> None:
        """A claimed trial that never started (the run stops while it waits for slots): stored
        as interrupted and re-queued, as a cut running trial is; no time is counted."""
        if self.held is None:
            return
        trial, self.held = self.held[0], None
        self.heartbeats.remove(trial_id_of(trial))
        store.retrying(self._record, trial, 0.0, 0.0, TrialState.FAIL, None, None, False,
                       policies.slot_time_split(None, 0.0), interrupted_by)

    def _claim(self) -> optuna.trial.Trial | None:
        """The next trial, created (or a waiting one popped) under the study's claim lock, so that
        processes on every machine together never run more than ``budget.trials``."""
        n_wanted = self.budget.spec.trials
        with store.study_lock(self.storage, study_id_of(self.study)):
            if time.monotonic() >= self.next_stale_check:
                fail_stale_trials(self.study, self.storage)
                self.next_stale_check = time.monotonic() + self.heartbeats.interval
            if n_wanted is not None:
                counts = store.count_trials(self.storage, study_id_of(self.study))
                decision = policies.claim_decision(counts.finished, counts.running, n_wanted)
                if decision == "trials":
                    self.stop_reason = "trials"
                if decision != "claim":
                    return None  # met; or the rest is running elsewhere: wait in case some fail
            trial = self._pop_rerun()
            if trial is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "heartbeat ... supposed to be used with optimize"
                    trial = self.study.ask()
            self.storage.set_trial_system_attr(trial_id_of(trial), GRACE_ATTR,
                                               self.storage.grace_period)
            self.storage.record_heartbeat(trial_id_of(trial))  # counted as running from now on
        self.heartbeats.add(trial_id_of(trial))
        return trial

    def _pop_rerun(self) -> optuna.trial.Trial | None:
        """The oldest waiting copy of an interrupted trial, set running (as ``ask`` pops a waiting
        trial, but ahead of the rest of the queue): stopped work resumes first."""
        for waiting in self.storage.get_all_trials(study_id_of(self.study), deepcopy=False,
                                                   states=(TrialState.WAITING,)):
            if RERUN_OF_ATTR not in waiting.system_attrs:
                continue
            try:
                if self.storage.set_trial_state_values(trial_id_of(waiting), state=TrialState.RUNNING):
                    return optuna.trial.Trial(self.study, trial_id_of(waiting))
            except optuna.exceptions.UpdateFinishedTrialError:
                continue   # another process took it first
        return None

    def _start_trial(self, trial: optuna.trial.Trial, params: dict, units: tuple[int, ...]) -> None:
        """Run ``trial`` on the slots ``units``: the first one's worker launches its ranks, on
        all of their GPUs; the others stay idle, held, until it ends."""
        worker = self._worker_of(units[0])
        slots = [self._worker_of(u).slot for u in units]
        worker.running = Running(trial, time.monotonic(), units, sum(s.share for s in slots))
        gpus = [s.gpu for s in slots if s.gpu is not None]
        devices = ",".join(gpus) if self.parallel.searched_width is not None and gpus else None
        trial.set_user_attr("slot", worker.slot.index)
        trial.set_user_attr("gpu", devices or worker.slot.gpu)
        if len(units) > 1:
            trial.set_user_attr("slots", list(units))
        trial.set_user_attr("host", HOST)
        self.progress.trial_started(trial.number, worker.slot.index, params)
        try:
            worker.conn.send(("run", trial_id_of(trial), params, devices))
        except OSError:
            pass  # the worker died; its exit is noticed in _wait and the trial retried

    def _stop_overdue_trials(self) -> None:
        """Fail each trial that ran past its limit (``policies``) with reason ``timeout ...``,
        killing its worker's process group; the slot gets a fresh worker (``_on_exit``). A timeout
        is the trial's own failure (it counts in the failure streak) and is not retried."""
        spec_limit = self.budget.spec.trial_timeout_s
        limit = policies.trial_limit_s(spec_limit, self.complete_slot_seconds)
        for worker in self._running():
            now = time.monotonic()
            if not policies.timed_out(worker.running.started, now, limit):
                continue
            self._drain(worker)            # it may have finished just now
            if worker.running is None:
                continue
            ran = now - worker.running.started
            kill_worker(worker)
            self._finish(worker, TrialState.FAIL,
                         reason=policies.timeout_reason(ran, limit, from_spec=spec_limit is not None))

    # --- results from workers -------------------------------------------------------------
    def _wait(self, timeout: float) -> None:
        by_handle: dict[Any, tuple[str, Worker]] = {}
        for w in self.workers:
            by_handle[w.conn] = ("conn", w)
            by_handle[w.process.sentinel] = ("exit", w)
        for handle in multiprocessing.connection.wait(list(by_handle), timeout):
            kind, worker = by_handle[handle]
            self._drain(worker)
            if kind == "exit":
                self._on_exit(worker)

    def _drain(self, worker: Worker) -> None:
        while True:
            try:
                if not worker.conn.poll():
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "ready":
                worker.ready = True
                self.result.startup_s += time.monotonic() - worker.started
                self.start_failures[worker.slot.index] = 0
                continue
            running = worker.running
            if running is None or message[1] != trial_id_of(running.trial):
                continue
            if message[0] == "notify":
                self.progress.trial_reported(running.trial.number, message[2], message[3])
            elif message[0] == "done":
                outcome, payload, parts, trace = message[2:6]
                if policies.worker_exits_after(outcome, payload):
                    worker.stopping = True    # it exits now: no trial for it; a fresh one follows
                if outcome == "complete":
                    self._finish(worker, TrialState.COMPLETE, values=payload, parts=parts)
                elif outcome == "pruned":
                    self._finish(worker, TrialState.PRUNED, parts=parts)
                else:       # a CUDA error beside others on a shared (MPS) context: retried
                    self._finish(worker, TrialState.FAIL, reason=payload, parts=parts, trace=trace,
                                 retry=policies.gpu_fault_retried(payload, self._shares_context(worker)))

    def _shares_context(self, worker: Worker) -> bool:
        """Whether the worker's trials run in one CUDA context with others (MPS on a shared GPU)."""
        return bool(self.mps.env) and worker.slot.share < 1.0

    def _on_exit(self, worker: Worker) -> None:
        worker.process.join(1.0)
        if worker.running is not None:
            self._finish(worker, TrialState.FAIL, reason=describe_exit(worker.process.exitcode),
                         retry=True)
        self.workers.remove(worker)
        worker.conn.close()
        if not worker.ready and not worker.stopping:
            failures = self.start_failures.get(worker.slot.index, 0) + 1
            self.start_failures[worker.slot.index] = failures
            if policies.slot_broken(failures):
                raise SchedulerError(
                    f"worker processes of slot {worker.slot.index} died {failures} times while "
                    f"starting ({describe_exit(worker.process.exitcode)}); see their errors above. "
                    "Is the objective importable (a module, not __main__ without a main guard)?")
        if self.stop_reason is None and self.interrupt is None:
            self.workers.append(start_worker(worker.slot, self.objective))
            self.workers.sort(key=lambda w: w.slot.index)

    def _finish(self, worker: Worker, state: TrialState, *, values: list[float] | None = None,
                reason: str | None = None, retry: bool = False,
                interrupted_by: str | None = None, parts: dict[str, float] | None = None,
                trace: str | None = None) -> None:
        running, worker.running = worker.running, None
        assert running is not None
        seconds = time.monotonic() - running.started
        self.heartbeats.remove(trial_id_of(running.trial))
        gpu_seconds = seconds * running.share   # all the GPUs the trial held
        self.result.slot_seconds += seconds
        self.result.gpu_seconds += gpu_seconds
        tick = time.monotonic()
        store.retrying(self._record, running.trial, seconds, gpu_seconds, state, values, reason,
                       retry, policies.slot_time_split(parts, seconds), interrupted_by, trace)
        self.result.record_s += time.monotonic() - tick

    def _record(self, trial: optuna.trial.Trial, seconds: float, gpu_seconds: float,
                state: TrialState, values: list[float] | None, reason: str | None,
                retry: bool, time_s: dict[str, float], interrupted_by: str | None = None,
                trace: str | None = None) -> None:
        if self.storage.get_trial(trial_id_of(trial)).state != TrialState.RUNNING:
            # Failed meanwhile by another process (our heartbeat lapsed); it did the retry.
            _log.warning("trial %d was finished elsewhere; dropping its result", trial.number)
            return
        try:
            trial.set_user_attr("slot_seconds", round(seconds, 3))
            trial.set_user_attr("gpu_seconds", round(gpu_seconds, 3))
            trial.set_user_attr("time_s", time_s)
            if reason is not None:
                trial.set_user_attr("fail_reason", reason[:2000])
            if trace is not None:
                trial.set_user_attr(TRACEBACK_ATTR, stored_traceback(trace))
            if interrupted_by is not None:
                trial.set_user_attr(STOP_ATTR, INTERRUPTED)
                trial.set_user_attr(INTERRUPTED_BY_ATTR, interrupted_by)
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        frozen = self.study.tell(trial, values=values, state=state, skip_if_finished=True)
        if interrupted_by is not None:   # neither a failure nor a retry: the same work, rerun first
            self.result.interrupted_trials += 1
            _requeue_interrupted(self.study, frozen)
            self.progress.trial_finished(frozen)
            return
        if frozen.state == TrialState.COMPLETE:
            self.result.completed += 1
            self.complete_slot_seconds.append(seconds)
        elif frozen.state == TrialState.PRUNED:
            self.result.pruned += 1
        else:
            self.result.failed += 1
            # One line: the progress view's own (its finished line carries the reason), else ours.
            level = logging.WARNING if isinstance(self.progress, _NoProgress) else logging.INFO
            _log.log(level, "trial %d failed: %s", frozen.number, reason)
            if trace is not None:
                _log.info("trial %d: %s", frozen.number, trace.rstrip())
            if retry and self._retry(frozen):
                self.result.retried += 1
        self._count_failure(frozen.state == TrialState.FAIL)
        self.progress.trial_finished(frozen)

    def _count_failure(self, failed: bool) -> None:
        """Stop handing out trials when every one fails (a broken objective or environment would
        otherwise turn the whole budget into failed trials within minutes)."""
        self.failure_streak = policies.failure_streak(self.failure_streak, failed)
        if policies.too_many_failures(self.failure_streak, len(self.slots)) and self.stop_reason is None:
            self.stop_reason = "failures"
            _log.error("the last %d trials all failed; no more are handed out. Fix the cause "
                       "(see each trial's fail_reason) and run again to resume",
                       policies.failure_limit(len(self.slots)))

    def _retry(self, frozen: optuna.trial.FrozenTrial) -> bool:
        history = frozen.system_attrs.get("retry_history", [])
        if not policies.may_retry(len(history), self.parallel.max_retries):
            return False
        self.retry(self.study, frozen)
        return True

    # --- stopping -------------------------------------------------------------------------
    def _cancel_running(self, *, interrupted_by: str | None = None) -> None:
        """Kill the running trials' workers. With ``interrupted_by`` (a signal's name, or the budget
        that ran out under --hard-stop) the trials are marked interrupted and re-queued; without,
        the scheduler itself failed and they are failed (and retried)."""
        running = self._running()
        for worker in running:    # all at once: their grace periods overlap
            terminate_worker(worker)
        for worker in running:
            kill_worker(worker)
            if interrupted_by is not None:
                self._finish(worker, TrialState.FAIL, interrupted_by=interrupted_by)
            else:
                self._finish(worker, TrialState.FAIL, reason="scheduler stopped by an error",
                             retry=True)

    def _shutdown(self) -> None:
        try:
            self._release_held("scheduler stopped")
        except Exception as exc:  # noqa: BLE001 - keep the first error; its heartbeat expires
            _log.error("could not re-queue the waiting trial: %s", store.first_error_line(exc))
        if self._running():  # only after an error in the loop itself
            try:
                self._cancel_running()
            except Exception as exc:  # noqa: BLE001 - keep the first error; heartbeats expire
                _log.error("could not mark the running trials failed: %s", store.first_error_line(exc))
        for worker in self.workers:
            worker.stopping = True
            try:
                worker.conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                kill_worker(worker)
        self.heartbeats.done.set()

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, _frame: Any) -> None:
            if self.interrupt is None:
                self.interrupt = signum

        saved = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(sig, handler) for sig, handler in saved.items()]


def _requeue_interrupted(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
    """A WAITING copy of an interrupted trial (same parameters, the attempt's own attrs dropped),
    marked for ``_pop_rerun``. Not a retry: it does not use up ``max_retries``."""
    system_attrs = {k: v for k, v in frozen.system_attrs.items() if k != GRACE_ATTR}
    system_attrs[RERUN_OF_ATTR] = frozen.number
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=frozen.params, distributions=frozen.distributions,
        user_attrs={k: v for k, v in frozen.user_attrs.items() if k not in SCHEDULER_ATTRS},
        system_attrs=system_attrs))
