"""The starter study that ``autotune init`` writes.

Owns: its text (a commented study that validates and runs on a CPU in a few minutes) and writing it
without overwriting anything the user has.
Must not know about: click, torch.
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_FILE = "study.yaml"   # in the working folder, beside the autotune.db it will create

STARTER_STUDY = """\
# A starter study, written by `autotune init`: a small search over autotune's own MoE /
# sparse-attention transformer on the built-in associative-recall task (nothing to download).
# It runs on a laptop CPU in a few minutes; change anything below, then:
#   autotune validate {file}        # checks it, writes nothing
#   autotune run {file}             # runs it (again: resumes it)
#   autotune best {name}            # the best parameters found so far
#
# study: my-study                 # name in the store (default: this file's name)
# storage: sqlite:///autotune.db  # the default; postgresql://user@host/db to share across machines

space:                            # what the search varies; a misspelt name is an error with a suggestion
  lr: {type: float, low: 1e-3, high: 1e-2, log: true}
  top_k: {type: int, low: 1, high: 2}                  # experts each token is routed to
  num_experts: [2, 4]                                  # a list: categorical choices
  attention: [sparse, dense]
  keep_ratio: {type: float, low: 0.25, high: 1.0, step: 0.25, when: {attention: sparse}}

objectives:                       # one or more (several: a Pareto front, and no pruner)
  - {metric: val_loss, direction: minimize}
  # - {metric: latency_ms, direction: minimize}

optimizer: {kind: tpe, seed: 0}   # tpe | gp | cmaes | random | evolution | nsga2 | hybrid
pruner: {kind: median, min_steps: 100, startup_trials: 3}   # none | median | percentile | sha | hyperband
budget: {trials: 6, timeout: 15m} # whichever is spent first ends the run
parallel: {gpus: auto, workers: 2}  # every GPU found; else 2 CPU workers (never more than the cores)

# held constant in every trial: the task and its size (trainer), the rest of the model (fixed)
trainer: {task: mqar, seq_len: 64, num_pairs: 4, num_queries: 16, task_vocab: 32, steps: 200,
          eval_every: 50, batch_size: 32}
fixed: {d_model: 64, n_layers: 2, n_heads: 2, d_ff: 128, window: 16, block_size: 8}
"""


class StarterExists(Exception):
    """The target file exists and overwriting was not asked for."""


def write_starter(path: str | Path, force: bool = False) -> Path:
    """Write the starter study to ``path`` (creating its folder); refuse an existing file unless
    ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise StarterExists(f"{path} exists; pass --force to overwrite it, or name another file")
    if path.exists() and path.is_dir():
        raise StarterExists(f"{path} is a folder; name a file such as {path / DEFAULT_FILE}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STARTER_STUDY.replace("{file}", str(path)).replace("{name}", path.stem))
    return path
