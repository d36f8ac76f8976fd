"""Compile-cache keys do not depend on what a process imported first (autotune/cache_keys.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from autotune.cache_keys import memory_format, stable_pickling

# The keys Inductor's FX graph cache gives a tensor's metadata (memory format included), printed by
# a fresh interpreter that imports ``first`` before torch: as torch pickles it, then with
# ``stable_pickling`` applied.
KEY = """
import sys
for name in sys.argv[1:]:
    __import__(name)
import torch
from torch._inductor.codecache import FxGraphCachePickler, extract_tensor_metadata_for_cache_key
def key():
    pickler = FxGraphCachePickler(torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph()))
    return pickler.get_hash(extract_tensor_metadata_for_cache_key(torch.zeros(4, 16, 32)))
plain = key()
from autotune.cache_keys import stable_pickling
stable_pickling()
print(plain, key())
"""


def _keys(first: list[str]) -> dict[bool, str]:
    """``{stable: key}`` from one fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", KEY, *first], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    plain, stable = out.stdout.split()[-2:]
    return {False: plain, True: stable}


@pytest.mark.slow
def test_a_trial_process_that_imported_optuna_first_keys_graphs_as_the_helper_does():
    # A worker unpickles its objective (Optuna) before torch; the helper imports torch first.
    optuna_first, torch_first = _keys(["optuna"]), _keys([])
    assert optuna_first[True] == torch_first[True]
    # what stable_pickling fixes: without it the two processes disagree (torch 2.13: the memory
    # format pickles under the first module that reaches torch; if torch fixes that, drop this line)
    assert optuna_first[False] != torch_first[False]


def test_a_memory_format_round_trips_by_name():
    import pickle
    stable_pickling()
    for fmt in (torch.contiguous_format, torch.channels_last, torch.preserve_format):
        assert pickle.loads(pickle.dumps(fmt)) is fmt
    assert b"autotune.cache_keys" in pickle.dumps(torch.channels_last)
    with pytest.raises(ValueError, match="not a memory format"):
        memory_format("float32")
