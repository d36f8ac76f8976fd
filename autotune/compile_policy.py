"""Whether and how compiling a trial pays for itself (issue 15): the figures and the rule.

Owns: ``CompileCosts`` (what compiling is expected to cost and save) and ``compile_costs_from``
(those figures from a study's earlier trials' ``compile`` attrs, or a prior), ``compile_choice``
(compile the rest of a run or not, and why), ``auto_compiles`` (where ``compile: auto`` may
compile), ``PROBE_STEPS`` (the timed eager steps it decides after), and where compiled graphs are
cached for a study (``compile_cache_dir``, ``use_compile_cache``). No torch here: the objective
bridge reads the figures before a trial's process imports it.
Must not know about: Optuna, the model, the training loop (which calls ``compile_choice``).

    costs = compile_costs_from([t.user_attrs["compile"] for t in finished], attention="sparse")
    go, reason = compile_choice("auto", remaining_steps=1992, eager_step_s=0.145, costs=costs, ahead=True)
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class CompileCosts:
    """What compiling is expected to cost and save, from the study's earlier compiled trials or a
    prior: ``speedup`` = eager step time / compiled step time, ``compile_s`` = seconds the compile
    adds to a trial (its first compiled steps and its first evaluation, less their steady time).
    ``ahead_s`` = wall seconds the helper process compiling ahead takes while the trial trains
    eager (``CompileAhead``), and ``ahead_compile_s`` what compiling then costs the trial itself
    (loading the helper's graphs; ``compile_s`` is the cost without a helper).
    ``trials``: how many measured trials the figures come from (0: the prior)."""

    speedup: float = 1.3        # prior: compiled train steps of the moe_sparse model (bench/RESULTS.md)
    compile_s: float = 30.0     # prior: regional compile, forward + backward, caches cold (H100/H200)
    ahead_s: float = 40.0       # prior: the same compile in a helper process, with its start
    ahead_compile_s: float = 30.0   # prior: as without a helper, until a study has measured one
    trials: int = 0


PROBE_STEPS = 6             # eager steps after the warm-up that time a trial before ``compile: auto`` decides


def auto_compiles(device: Any) -> bool:
    """Whether ``compile: auto`` may compile on ``device`` (CUDA only; on other devices it runs eager)."""
    return device.type == "cuda"


def compile_choice(mode: str | bool, remaining_steps: int, eager_step_s: float,
                   costs: CompileCosts, ahead: bool = False) -> tuple[bool, str]:
    """Whether to compile the rest of a run, and why. ``auto``: when the time the remaining steps
    would save (``remaining_steps x eager_step_s x (1 - 1 / speedup)``) exceeds the compile cost.
    ``ahead``: compiled in a helper process, so the steps of its ``ahead_s`` still run eager and
    save nothing: ``(remaining_steps x eager_step_s - ahead_s) x (1 - 1 / speedup)``, against
    ``ahead_compile_s``."""
    if mode is True or mode is False:
        return mode, f"compile: {str(mode).lower()} in the study"
    eager_s = remaining_steps * eager_step_s
    saving = max(0.0, eager_s - (costs.ahead_s if ahead else 0.0)) * (1.0 - 1.0 / max(costs.speedup, 1e-9))
    source = f"from {costs.trials} compiled trial(s)" if costs.trials else "prior"
    cost = costs.ahead_compile_s if ahead else costs.compile_s
    verdict = ">" if saving > cost else "<="
    run = (f"({remaining_steps} steps x {eager_step_s * 1e3:.1f} ms - {costs.ahead_s:.1f} s compiling ahead)"
           if ahead else f"{remaining_steps} steps x {eager_step_s * 1e3:.1f} ms")
    reason = (f"auto: {run} x (1 - 1/{costs.speedup:.2f}) = "
              f"{saving:.1f} s saved {verdict} {cost:.1f} s to compile ({source})")
    return saving > cost, reason


COMPILE_CACHE_ENV = "AUTOTUNE_COMPILE_CACHE"


def compile_cache_dir(storage_url: str) -> Path:
    """Where compiled graphs and kernels are cached for a study store, shared by all its trials and
    workers and kept across runs: ``$AUTOTUNE_COMPILE_CACHE``, else beside a SQLite store
    (``autotune.db`` -> ``autotune.db-compile-cache/``), else ``~/.cache/autotune/compile``."""
    if os.environ.get(COMPILE_CACHE_ENV):
        return Path(os.environ[COMPILE_CACHE_ENV])
    if storage_url.startswith("sqlite:///"):
        path = storage_url[len("sqlite:///"):].split("?", 1)[0]
        if path and path != ":memory:":
            db = Path(path).expanduser().absolute()
            return db.with_name(db.name + "-compile-cache")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "autotune" / "compile"


def use_compile_cache(directory: Path) -> None:
    """Point Inductor's (FX graph, AOTAutograd) and Triton's on-disk caches at ``directory``;
    before torch compiles anything in this process. Settings the user made win."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(directory / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(directory / "triton"))


def compile_costs_from(records: list[Mapping[str, Any]], attention: str | None = None):
    """``CompileCosts`` from earlier trials' ``compile`` user attrs: the median eager/compiled step
    ratio of those that compiled, and their compile seconds: of those that compiled in the foreground
    (``compile_s``) and of those that had a helper compile ahead (``ahead_compile_s``, and the
    helper's own ``ahead_s``); the prior where none did. With
    ``attention`` (``sparse`` / ``dense``), only trials of that attention count when any compiled:
    what compiling saves differs between them (e.g. 2.1x sparse, 1.1x dense on moe_sparse)."""
    compiled = [r for r in records if r.get("compiled") and r.get("compiled_step_ms")]
    alike = [r for r in compiled if attention is not None and r.get("attention") == attention]
    compiled = alike or compiled
    ratios = [r["eager_step_ms"] / r["compiled_step_ms"] for r in compiled if r.get("eager_step_ms")]

    def median_of(key: str, rows: list, default: float) -> float:
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return statistics.median(values) if values else default

    prior = CompileCosts()
    if not compiled:
        return prior
    with_helper = [r for r in compiled if r.get("ahead") is True]
    alone = [r for r in compiled if r.get("ahead") is not True]
    return CompileCosts(speedup=statistics.median(ratios) if ratios else prior.speedup,
                        compile_s=median_of("compile_s", alone, prior.compile_s),
                        ahead_s=median_of("ahead_s", with_helper, prior.ahead_s),
                        ahead_compile_s=median_of("compile_s", with_helper, prior.ahead_compile_s),
                        trials=len(compiled))
