"""The ``autotune`` command: click wiring, exit codes and messages.

Owns: commands and their options, turning known errors into one-line messages and exit codes
(0 success, 1 failure at run time, 2 bad input, 130 interrupted). Business logic lives in the
modules it calls.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, NoReturn

import click
import yaml

from autotune._output import file_name_part, printable, refuse_existing, write_new

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130

_log = logging.getLogger("autotune")


def _die(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    from autotune.store import mask_secrets
    click.echo(f"error: {mask_secrets(message)}", err=True)   # a driver's text may quote the DSN
    sys.exit(code)


def _guarded(fn: Callable) -> Callable:
    """Known errors become a message and an exit code, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from autotune._output import OutputRefused
        from autotune.spec import SpecError
        from autotune.store import StoreError
        from autotune.study import StudyError
        from autotune.warmstart import WarmStartError
        bad_input = (SpecError, StoreError, OutputRefused, StudyError, WarmStartError)
        try:
            return fn(*args, **kwargs)
        except bad_input as exc:
            _die(str(exc))
        except KeyboardInterrupt:
            _die("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:  # output piped into head & co., which stopped reading
            sys.stderr.close()
            os._exit(0)
        except Exception as exc:  # a failure at run time: one line, the traceback only with -v
            if _log.isEnabledFor(logging.INFO):
                raise
            _die(f"{type(exc).__name__}: {exc} (run with autotune -v ... for the traceback)", EXIT_FAILED)
    return wrapper


def _storage_url(cli_url: str | None) -> str:
    from autotune.store import DEFAULT_STORAGE, ENV_STORAGE
    return cli_url or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE


def _open(url: str, **kwargs: Any):
    from autotune.store import open_storage
    return open_storage(url, **kwargs)


def _open_reader(url: str):
    """The store for commands that only read (status, best, export, report): on SQLite their
    reads never hold the lock that running workers write with."""
    from autotune.store import open_reader
    return open_reader(url)


def _load_existing(storage, name: str, url: str):
    import optuna

    from autotune.store import mask_url, study_exists
    if not study_exists(storage, name):
        import difflib
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no studies"
        _die(f"no study {name!r} in {mask_url(url)}{hint}{known}")
    return optuna.load_study(study_name=name, storage=storage)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="autotune")
@click.option("-v", "--verbose", is_flag=True, help="Log Optuna's own messages too.")
def main(verbose: bool) -> None:
    """Search hyperparameters and architectures of MoE / sparse-attention transformers.

    \b
    Example:
      autotune run studies/quickstart.yaml
      autotune status
      autotune best quickstart
    """
    import optuna
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if not verbose:  # heartbeats and metric names are "experimental" to Optuna; users needn't care
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# --- run / worker -------------------------------------------------------------------------------

def _run_options(fn: Callable) -> Callable:
    for option in reversed([
        click.option("--storage", metavar="URL", help="Study store URL (default: the file's storage, "
                     "then $AUTOTUNE_STORAGE, then sqlite:///autotune.db)."),
        click.option("--study", "study_name", metavar="NAME", help="Study name (default: the file's study)."),
        click.option("--trials", type=int, metavar="N", help="Total finished trials the study should reach."),
        click.option("--timeout", metavar="DURATION", help="Wall-time limit of this run, e.g. 90s, 30m, 2h."),
        click.option("--workers", type=int, metavar="N", help="Concurrent CPU workers (no GPU)."),
        click.option("--hard-stop", is_flag=True, help="When the budget runs out, cancel running trials "
                     "instead of letting them finish."),
        click.option("--live/--no-live", default=None, help="Live terminal view (default: when the "
                     "output is a terminal)."),
        click.option("--no-estimate", "no_estimate", is_flag=True, help="Skip the check (a model "
                     "built and one step timed, a few seconds) that warns when a trial looks too long "
                     "for this machine."),
    ]):
        fn = option(fn)
    return fn


def _spec_from(file: str, storage: str | None, study_name: str | None, trials: int | None,
               timeout: str | None, workers: int | None, warm_start: tuple[str, ...] = ()):
    from autotune.spec import load_spec
    return load_spec(file, storage=storage, study=study_name, trials=trials, timeout=timeout,
                     workers=workers, warm_start=warm_start or None)


def _check_store(spec, file: str) -> bool:
    """What ``run`` needs of the store, checked read-only before anything is written: it opens,
    a study of that name has the same directions, the warm-start sources exist and fit (the
    store's and the warm start's own checks). Errors name FILE. True when the study exists."""
    from autotune.store import StoreError, check_existing_study, open_checker, study_exists
    from autotune.warmstart import WarmStartError, check
    try:
        storage = open_checker(spec.storage)
        check_existing_study(storage, spec.study, spec.directions)
        check(spec, storage)
        return study_exists(storage, spec.study)
    except (StoreError, WarmStartError) as exc:
        _die(f"{file}: {exc}")


def _announce(spec) -> None:
    """The lines printed once before the first trial: the flat form's defaults and the parallel plan."""
    from autotune.scheduler.gpus import describe_slots, gpus_for, plan_slots, usable_cores
    from autotune.spec import check_gpus_per_trial
    check_gpus_per_trial(spec, len(gpus_for(spec.parallel)), usable_cores())   # before plan_slots
    if spec.flat_defaults:
        size = ("GPU (middle of studies/moe_sparse.yaml)" if spec.flat_defaults_for == "gpu"
                else "CPU, no GPU found (quickstart size)")
        settings = " ".join(f"{k}={v}" for k, v in spec.flat_defaults)
        click.echo(f"flat study: model/trainer defaults for {size}: {settings} "
                   "(set any under trainer: or fixed: to change it)")
    click.echo(describe_slots(spec.parallel, plan_slots(spec.parallel)))


def _estimate_meanwhile(spec, progress) -> threading.Thread:
    """The warning when a trial looks too long for this machine, worked out on a thread while the
    run starts its workers: it imports torch and the model and, on a CPU, times a step, seconds
    that would otherwise come before the first trial."""
    from autotune.estimate import warning_for

    def work() -> None:
        try:
            text = warning_for(spec)
        except Exception:  # noqa: BLE001 - only a warning: the trials say what is wrong
            _log.debug("estimate failed", exc_info=True)
            return
        if text:
            progress.notice(text)

    thread = threading.Thread(target=work, name="autotune-estimate", daemon=True)
    thread.start()
    return thread


def _execute(spec, *, join_only: bool, hard_stop: bool, live: bool | None,
             estimate: bool = True, create: bool = False) -> None:
    from autotune import study as study_mod
    from autotune.progress import make_progress, print_summary
    from autotune.scheduler import SchedulerError
    from autotune.store import is_disk_full, mask_url

    _announce(spec)
    try:
        # the workers start first: their imports and CUDA start overlap the opening of the study
        started = study_mod.start_workers(spec)
        estimating = None
        try:
            study = study_mod.prepare(spec, join_only=join_only, create=create)
            progress = make_progress(live, steps={**spec.trainer_dict, **spec.fixed_dict}.get("steps"))
            estimating = _estimate_meanwhile(spec, progress) if estimate else None
            result = study_mod.run(spec, study, hard_stop=hard_stop, progress=progress, started=started)
        finally:
            started.stop()                 # nothing left to stop once the run took them over
            if estimating is not None:     # not left importing torch while the interpreter exits
                estimating.join()
    except SchedulerError as exc:
        _die(f"the study could not run: {exc}", EXIT_FAILED)
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        _die(f"storage {mask_url(spec.storage)}: database or disk is full; the trials finished "
             "so far are stored; free space there, then run again to resume", EXIT_FAILED)
    print_summary(study, mask_url(spec.storage))
    code, message = run_outcome(result, spec.study)
    if code:
        _die(message, code)
    if message:
        click.echo(message, err=True)


def run_outcome(result, study_name: str) -> tuple[int, str]:
    """The exit code of a run and what to say: 130 when Ctrl-C / SIGTERM stopped it, 1 only when
    its trials failed on their own (trial after trial, or every one it ran), else 0 (the budget or
    timeout ended it, --hard-stop included: trials it cut are re-queued, not failed)."""
    export = f"see each trial's fail_reason (autotune export {study_name} --format json)"
    if result.interrupted:
        return EXIT_INTERRUPTED, (f"interrupted: {result.interrupted_trials} running trial(s) were "
                                  "stopped and re-queued; run the same command to resume")
    if result.stopped_by == "failures":
        return EXIT_FAILED, f"stopped: trial after trial failed; {export}"
    if result.failed and not (result.completed or result.pruned):
        return EXIT_FAILED, f"every trial of this run failed; {export}"
    if result.interrupted_trials:
        by = {"timeout": "the timeout", "trials": "the trial budget",
              "gpu_hours": "the GPU-hours budget"}.get(result.stopped_by, result.stopped_by)
        return 0, (f"stopped by {by}: {result.interrupted_trials} running trial(s) were cut and "
                   "re-queued; the next run reruns them first")
    return 0, ""


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_run_options
@click.option("--warm-start", "warm_start", multiple=True, metavar="STUDY",
              help="Warm-start from this earlier study (repeatable); overrides the file's warm_start.from.")
@_guarded
def run(file: str, storage: str | None, study_name: str | None, trials: int | None,
        timeout: str | None, workers: int | None, hard_stop: bool, live: bool | None,
        no_estimate: bool, warm_start: tuple[str, ...]) -> None:
    """Run (or resume) the study described by FILE.

    Trials run in parallel on the GPUs found (CPU workers where there is none) until the budget
    is spent; running it again resumes where it stopped.

    \b
    Example:
      autotune run studies/quickstart.yaml
      autotune run studies/moe_sparse.yaml --trials 80 --timeout 2h
    """
    spec = _spec_from(file, storage, study_name, trials, timeout, workers, warm_start)
    _check_store(spec, file)
    _execute(spec, join_only=False, hard_stop=hard_stop, live=live, estimate=not no_estimate)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_run_options
@click.option("--create", is_flag=True, help="Start the study, as `autotune run` would, when the store "
              "has none of that name (workers started at once, e.g. the pods of `autotune k8s`: "
              "exactly one of them creates it).")
@_guarded
def worker(file: str, storage: str | None, study_name: str | None, trials: int | None,
           timeout: str | None, workers: int | None, hard_stop: bool, live: bool | None,
           no_estimate: bool, create: bool) -> None:
    """Join a running study from another machine (or another process on this one).

    The study must exist in the shared store (unless --create); the worker takes its share of the
    same budget.

    \b
    Example:
      autotune worker studies/moe_sparse.yaml --storage postgresql://tuner@db-host/autotune
    """
    spec = _spec_from(file, storage, study_name, trials, timeout, workers)
    _execute(spec, join_only=True, hard_stop=hard_stop, live=live, estimate=not no_estimate,
             create=create)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--offline", is_flag=True, help="Check the files only: skip opening the store (and "
              "the warm-start sources in it).")
@_guarded
def validate(file: str, offline: bool) -> None:
    """Check a study file (and its search space) without running or writing anything.

    Checks what `autotune run` checks before its first trial: the file and its search space, the
    optimizer's options, and (unless --offline) the store, opened read-only: that it can be
    opened, that a study of that name has the same directions, that the warm-start sources exist.

    \b
    Example:
      autotune validate studies/moe_sparse.yaml
      autotune validate studies/moe_sparse.yaml --offline
    """
    from autotune.spec import load_spec
    from autotune.store import mask_url
    from autotune.study import StudyError, sampler_for
    spec = load_spec(file)
    try:
        sampler_for(spec)
    except StudyError as exc:
        _die(f"{file}: optimizer: {exc.__cause__}")
    b = spec.budget
    budget = ", ".join(x for x in (f"{b.trials} trials" if b.trials else "",
                                    f"{b.timeout_s:g} s" if b.timeout_s else "",
                                    f"{b.gpu_hours:g} GPU-hours" if b.gpu_hours else "",
                                    f"at most {b.trial_timeout_s:g} s a trial" if b.trial_timeout_s else "")
                       if x)
    where = "not opened (--offline)"
    if not offline:
        where = "exists; run resumes it" if _check_store(spec, file) else "new; run creates it"
    click.echo(f"{file}: OK")
    click.echo(f"  study      {spec.study} in {mask_url(spec.storage)} ({where})")
    click.echo(f"  objectives {', '.join(f'{o.direction} {o.metric}' for o in spec.objectives)}")
    click.echo(f"  space      {len(spec.space.params)} parameters: {', '.join(spec.space.names)}")
    click.echo(f"  optimizer  {spec.optimizer.kind}; pruner {spec.pruner.kind}; budget {budget}")
    if spec.constraints:
        click.echo(f"  constraints {'; '.join(str(c) for c in spec.constraints)}")
    p = spec.parallel
    cpu = f"{p.workers or 1} CPU worker(s)"
    gpus = ("every GPU found" if p.gpus == "auto" else f"the first {p.gpus} GPU(s)"
            if isinstance(p.gpus, int) else "GPUs " + ",".join(map(str, p.gpus)))
    if p.gpus_per_trial > 1:        # issue 21: a trial's ranks
        click.echo(f"  parallel   {gpus}, {p.gpus_per_trial} GPUs per trial (NCCL ranks)")
    elif p.procs_per_trial > 1:
        click.echo(f"  parallel   {cpu}, {p.procs_per_trial} processes per trial (gloo ranks), no GPU")
    elif p.gpus == 0:
        click.echo(f"  parallel   {cpu}, no GPU")
    else:
        mps = " through MPS" if p.mps and p.trials_per_gpu > 1 else ""
        click.echo(f"  parallel   {gpus}, {p.trials_per_gpu} trial(s) per GPU{mps}; {cpu} where there is none")
    ws = spec.warm_start
    if ws is not None:
        detail = {"enqueue": f", best {ws.best_k} of each", "local": f", {ws.local_trials} local trials"}
        where = f" in {mask_url(ws.storage)}" if ws.storage else ""
        click.echo(f"  warm start {ws.strategy} from {', '.join(ws.sources)}{where}"
                   f"{detail.get(ws.strategy, '')}; out of range: {ws.out_of_range}")


@main.command()
@click.argument("file", required=False, type=click.Path(), metavar="[FILE]")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@_guarded
def init(file: str | None, force: bool) -> None:
    """Write a commented starter study to FILE (default: study.yaml here) that runs on a CPU in minutes.

    \b
    Example:
      autotune init                      # writes study.yaml
      autotune init studies/mine.yaml && autotune run studies/mine.yaml
    """
    from autotune.starter import DEFAULT_FILE, StarterExists, write_starter
    try:
        path = write_starter(file or DEFAULT_FILE, force=force)
    except StarterExists as exc:
        _die(str(exc))
    except OSError as exc:
        _die(f"{file or DEFAULT_FILE}: cannot be written ({exc.strerror or exc})")
    click.echo(f"wrote {path}; next: autotune validate {path} && autotune run {path}")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write the schema to FILE instead of printing it.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@_guarded
def schema(out: str | None, force: bool) -> None:
    """Print the JSON Schema (draft 2020-12) of study files, for editors that complete and check keys.

    \b
    Example (VS Code's YAML extension reads the first line of a study file):
      autotune schema --out study.schema.json
      # yaml-language-server: $schema=../study.schema.json
    """
    from autotune.spec_schema import study_schema
    text = json.dumps(study_schema(), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        path = write_new(Path(out), lambda p: p.write_text(text, encoding="utf-8"), force)
    except OSError as exc:
        _die(f"{out}: cannot be written ({exc.strerror or exc})")
    click.echo(f"wrote {path}; point an editor at it, e.g. # yaml-language-server: $schema={path}")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--storage", metavar="URL", help="The PostgreSQL the pods share (default: "
              "$AUTOTUNE_STORAGE, then the file's storage); it goes into a Secret.")
@click.option("--pods", type=int, default=1, show_default=True, metavar="N", help="Worker pods.")
@click.option("--gpus-per-pod", type=int, default=1, show_default=True, metavar="G",
              help="nvidia.com/gpu of each pod (0: CPU pods); CPU and memory are sized from it.")
@click.option("--image", metavar="IMAGE", help="Container image with autotune installed "
              "(default autotune:VERSION).")
@click.option("--namespace", metavar="NS", help="Namespace of the objects (default: kubectl's).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Manifest file to write.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@_guarded
def k8s(file: str, storage: str | None, pods: int, gpus_per_pod: int, image: str | None,
        namespace: str | None, out: str, force: bool) -> None:
    """Write Kubernetes manifests that run the study on a cluster: a ConfigMap with the study
    file, a Secret with the store URL and an Indexed Job of pods running `autotune worker`.

    \b
    Example:
      export AUTOTUNE_STORAGE=postgresql://tuner:PASSWORD@db-host/autotune
      autotune k8s studies/moe_sparse.yaml --pods 4 --gpus-per-pod 2 \\
          --image registry.example.com/autotune:0.1.0 --out study.yaml
      kubectl apply -f study.yaml
    """
    from autotune import k8s as k8s_mod
    from autotune.spec import load_spec
    from autotune.store import ENV_STORAGE, mask_url
    spec = load_spec(file, storage=storage or os.environ.get(ENV_STORAGE))   # the cluster's store, not a laptop's
    try:
        plan = k8s_mod.plan(spec, pods=pods, gpus_per_pod=gpus_per_pod, image=image, namespace=namespace)
        text = k8s_mod.to_yaml(k8s_mod.manifests(plan), header=k8s_mod.header(plan))
    except k8s_mod.K8sError as exc:
        _die(str(exc))
    write_new(Path(out), lambda tmp: tmp.write_text(text), force, mode=0o600)
    for note in k8s_mod.notes(spec, plan):
        click.echo(f"note: {note}", err=True)
    click.echo(printable(f"wrote {out}: Job {plan.name}, {pods} pod(s) x {gpus_per_pod} GPU(s), "
                         f"study {spec.study} in {mask_url(plan.storage_url)}"))
    click.echo(f"{out} holds the store URL (a Secret): it is readable by you only (mode 0600); "
               f"keep it out of version control. Next: kubectl apply -f {out}")


# --- inspecting studies -------------------------------------------------------------------------

@main.command()
@click.argument("study_name", metavar="[STUDY]", required=False)
@click.option("--storage", metavar="URL", help="Study store URL (default $AUTOTUNE_STORAGE or sqlite:///autotune.db).")
@_guarded
def status(study_name: str | None, storage: str | None) -> None:
    """List the studies in a store with trials by outcome and best values; with STUDY, its detail.

    \b
    Example:
      autotune status --storage sqlite:///autotune.db
      autotune status quickstart
    """
    from autotune.store import mask_url, sqlite_path, summarize_studies
    url = _storage_url(storage)
    if study_name is not None:
        _status_of(_load_existing(_open_reader(url), study_name, url), url)
        return
    path = sqlite_path(url)
    summaries = [] if path is not None and not path.exists() else summarize_studies(_open_reader(url))
    click.echo(f"store: {mask_url(url)}")
    if not summaries:
        click.echo("no studies yet; start one with: autotune run studies/quickstart.yaml")
        return
    from autotune import outcomes
    for s in summaries:
        counts = outcomes.describe(s.outcomes)
        metrics = [printable(m) for m in (s.user_attrs.get("autotune") or {}).get("metrics") or []]
        best = ""
        if s.best_values is not None:
            label = metrics[0] if metrics else "value"
            best = f"; best {label} {s.best_values[0]:.6g}"
        elif len(s.directions) > 1:
            best = f"; {len(s.directions)} objectives ({', '.join(metrics)})"
        click.echo(f"  {printable(s.name)}: {s.n_trials} trials ({counts}){best}")
        if s.stale:   # read-only: the next `autotune run` or `worker` fails them
            click.echo(f"    {len(s.stale)} running stale (no heartbeat for {max(s.stale.values()):.0f} s; "
                       "the next run fails them)")
        ws = s.user_attrs.get("warm_start")
        if isinstance(ws, dict) and ws.get("sources"):
            src = ", ".join(f"{k} ({v} trials)" for k, v in ws["sources"].items())
            click.echo(printable(f"    warm-started ({ws.get('strategy', '?')}) from {src}"))
        time_line = outcomes.time_line(s.time_shares)
        if time_line:
            click.echo(f"    {time_line}")


def _status_of(study, url: str) -> None:
    """One study: objectives, trials by outcome, best, running trials, where time went, failures."""
    from collections import Counter

    from autotune import outcomes
    from autotune.progress import format_value, objective_names
    from autotune.store import mask_url, pareto_front, study_trials
    trials = study_trials(study)   # read once: every line below comes from them
    names = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    click.echo(printable(f"study {study.study_name} in {mask_url(url)}"))
    click.echo(f"  objectives  {', '.join(f'{n} ({d})' for n, d in zip(names, directions))}")
    click.echo(f"  trials      {len(trials)}: {outcomes.describe(outcomes.outcome_counts(trials))}")
    reruns = [t for t in trials if t.state.name == "WAITING" and outcomes.RERUN_OF_ATTR in t.system_attrs]
    if reruns:
        click.echo(f"              {len(reruns)} interrupted trial(s) re-queued: the next run starts with them")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if complete and len(directions) == 1 and not _feasible(study):
        click.echo("  best        no complete trial is feasible (constraints, out of memory)")
    elif complete and len(directions) == 1:
        b = study.best_trial
        click.echo(printable(f"  best        #{b.number}: {names[0]}={format_value(b.value)}; "
                             + " ".join(f"{k}={format_value(v)}" for k, v in b.params.items())))
    elif complete:
        click.echo(f"  pareto      {len(pareto_front(trials, study.directions))} trials "
                   f"(autotune best {study.study_name})")
    from autotune.edges import edge_notes
    for line in edge_notes(trials, study.directions):
        click.echo(printable(f"  range       {line}"))
    for t in (t for t in trials if t.state.name == "RUNNING"):
        where = t.user_attrs.get("host", "?"), t.user_attrs.get("slot", "?")
        started = t.datetime_start.strftime("%Y-%m-%d %H:%M:%S") if t.datetime_start else "?"
        click.echo(f"  running     #{t.number} on {where[0]} slot {where[1]} since {started}")
    shares = outcomes.time_shares(trials)
    if shares:
        click.echo(f"  {outcomes.time_line(shares)}")
        click.echo("  time split  " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in shares.items()))
    failed = outcomes.failed_on_their_own(trials)
    for reason, n in Counter(" ".join(str(t.user_attrs.get("fail_reason", "no reason stored")).split())[:120]
                             for t in failed).most_common(3):
        click.echo(printable(f"  failed      {n} x {reason}"))


@main.command()
@click.argument("study_name", metavar="STUDY")
@click.option("--storage", metavar="URL", help="Study store URL.")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking (needed when not on a terminal).")
@_guarded
def delete(study_name: str, storage: str | None, yes: bool) -> None:
    """Delete a study and all its trials from the store (asks first).

    \b
    Example:
      autotune delete quickstart
      autotune delete old-study --storage postgresql://tuner@db-host/autotune --yes
    """
    import optuna

    from autotune.store import mask_url
    url = _storage_url(storage)
    study = _load_existing(_open_reader(url), study_name, url)
    trials = study.get_trials(deepcopy=False)
    running = sum(t.state.name == "RUNNING" for t in trials)
    if not yes:
        if not _stdin_is_tty():
            _die(f"not deleting study {study_name!r} without --yes (standard input is not a terminal)")
        note = f", {running} of them running" if running else ""
        if not click.confirm(f"delete study {study_name!r} and its {len(trials)} trials{note} "
                             f"from {mask_url(url)}?", default=False):
            _die("nothing deleted", EXIT_FAILED)
    optuna.delete_study(study_name=study_name, storage=_open(url))
    click.echo(f"deleted study {study_name!r} ({len(trials)} trials) from {mask_url(url)}")


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def _feasible(study) -> bool:
    """Whether a complete trial satisfies its constraints and did not run out of memory."""
    from autotune.outcomes import is_feasible
    return any(t.state.name == "COMPLETE" and is_feasible(t) for t in study.get_trials(deepcopy=False))


def _best_trials(study) -> list:
    """Optuna's best-trial query for one objective (no read of every trial); the Pareto front
    of the complete trials for several. Infeasible trials (constraints, out of memory) never count."""
    from optuna.trial import TrialState

    from autotune.outcomes import is_feasible
    from autotune.store import pareto_front, study_trials
    best = []
    if len(study.directions) == 1:
        try:
            best = [study.best_trial]
        except ValueError:   # no complete trial (or none feasible)
            best = []
    if not best or not all(is_feasible(t) for t in best):   # several objectives, or an infeasible best
        complete = study_trials(study, (TrialState.COMPLETE,))
        if not complete:
            _die(f"study {study.study_name!r} has no complete trial yet", EXIT_FAILED)
        feasible = [t for t in complete if is_feasible(t)]
        if not feasible:
            _die(f"study {study.study_name!r} has no feasible complete trial (constraints, out of memory)",
                 EXIT_FAILED)
        best = pareto_front(feasible, study.directions)
    return best


@main.command()
@click.argument("study_name", metavar="STUDY")
@click.option("--storage", metavar="URL", help="Study store URL.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
@_guarded
def best(study_name: str, storage: str | None, as_json: bool) -> None:
    """Print the best parameters (the Pareto front for several objectives), ready to paste.

    \b
    Example:
      autotune best quickstart > best.yaml
      autotune best quickstart --json
    """
    url = _storage_url(storage)
    study = _load_existing(_open_reader(url), study_name, url)
    metrics = ((study.user_attrs.get("autotune") or {}).get("metrics")
               or [f"value_{i}" for i in range(len(study.directions))])
    rows = [{"trial": t.number, "values": dict(zip(metrics, t.values)), "params": dict(t.params)}
            for t in _best_trials(study)]
    if as_json:
        click.echo(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return
    for row in rows:
        values = ", ".join(f"{k}={v:.6g}" for k, v in row["values"].items())
        click.echo(printable(f"# study {study_name}, trial {row['trial']}: {values}"))
        click.echo(yaml.safe_dump(row["params"], sort_keys=False).rstrip())
        if len(rows) > 1:
            click.echo("---")


@main.command()
@click.argument("study_name", metavar="STUDY")
@click.option("--storage", metavar="URL", help="Study store URL.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of standard output.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@_guarded
def export(study_name: str, storage: str | None, fmt: str, out: str | None, force: bool) -> None:
    """Dump every trial: number, state, values, parameters and user attributes.

    \b
    Example:
      autotune export quickstart --format csv --out trials.csv
    """
    from autotune.export import csv_chunks, json_chunks, trial_rows
    url = _storage_url(storage)
    rows = trial_rows(_load_existing(_open_reader(url), study_name, url))
    chunks = json_chunks(rows) if fmt == "json" else csv_chunks(rows)
    if out:
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                f.writelines(chunks)
        write_new(Path(out), write, force)
        click.echo(f"wrote {len(rows)} trials to {out}", err=True)
    else:
        for chunk in chunks:
            click.echo(chunk, nl=False)


@main.command()
@click.argument("study_name", metavar="STUDY")
@click.option("--storage", metavar="URL", help="Study store URL.")
@click.option("--out", type=click.Path(dir_okay=False), help="Output file (default STUDY-report.html / .png).")
@click.option("--format", "fmt", type=click.Choice(["html", "png"]), default="html", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
@_guarded
def report(study_name: str, storage: str | None, out: str | None, fmt: str, force: bool) -> None:
    """Write a self-contained plotly report (HTML, works offline) of a study.

    \b
    Example:
      autotune report quickstart --out quickstart.html
    """
    from autotune import report as report_mod
    from autotune.store import study_trials
    url = _storage_url(storage)
    study = _load_existing(_open_reader(url), study_name, url)
    trials = study_trials(study)
    target = Path(out or f"{file_name_part(study_name)}-report.{fmt}")
    try:
        if fmt == "html":
            written = write_new(target, lambda tmp: report_mod.write_report(study, tmp, fmt, trials), force)
        else:   # a folder of images
            refuse_existing(target.with_suffix("") if target.suffix else target, force)
            written = report_mod.write_report(study, target, fmt, trials)
    except report_mod.ReportError as exc:
        _die(str(exc), EXIT_FAILED)
    click.echo(f"wrote {written}")


@main.command()
@click.option("--storage", metavar="URL", help="Study store URL.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes it "
              "to anyone who can reach this machine (with a warning).")
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--allow-writes", is_flag=True, help="Let the dashboard change the store (delete or "
              "rename studies, tell trials, notes); by default it only reads.")
@click.option("--token", envvar="AUTOTUNE_DASHBOARD_TOKEN", metavar="TOKEN", help="Require this "
              "token (Authorization: Bearer TOKEN, or ?token=TOKEN once in the browser); default "
              "$AUTOTUNE_DASHBOARD_TOKEN.")
@_guarded
def dashboard(storage: str | None, host: str, port: int, allow_writes: bool, token: str | None) -> None:
    """Serve optuna-dashboard on the study store: read-only, on 127.0.0.1, unless asked otherwise.

    \b
    Example:
      autotune dashboard --port 8080   # then open http://127.0.0.1:8080/dashboard/
      AUTOTUNE_DASHBOARD_TOKEN=s3cret autotune dashboard --host 0.0.0.0
    """
    from autotune import dashboard as dashboard_mod
    url = _storage_url(storage)
    _open_reader(url)  # a clear error for a store that is missing or cannot be opened
    try:
        dashboard_mod.serve(url, host=host, port=port, allow_writes=allow_writes, token=token or None)
    except dashboard_mod.DashboardError as exc:
        _die(str(exc), EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
