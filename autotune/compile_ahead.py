"""Compile a model's repeated blocks on a side thread while the trial keeps training eager (issue 15).

Owns: ``CompileAhead``: capture each block's inputs from one training step (forward pre-hooks),
then, on a daemon thread, compile a copy of each block through ``torch.compile`` with the same
backend and ``dynamic`` setting that ``nn.Module.compile`` will use, run it forward and backward on
those inputs (the training graph), and forward on the first block's inputs in an eval-mode pass
if one was captured (the latency pass's graph). Dynamo keeps its graphs on the code object the blocks share (``Module._call_impl``),
guarded on the inputs' shapes, dtypes and grad flags and the module's structure, not on which
instance ran; so when the caller then compiles the real blocks, their first calls find those graphs
and the switch costs no stall. Must not know about: the training loop, Optuna, the model's classes.

Why a copy of each block: the real blocks' parameters change under the optimizer while the
backward graph compiles, and autograd refuses to run a backward over saved tensors that changed
(version counters). The copies' gradients go nowhere (``torch.autograd.grad`` to the input only).

While the thread compiles, the trial trains eager: compiling is mostly Python (Dynamo, AOTAutograd,
Inductor's lowering) and holds the GIL in turns with the training loop, whose steps mostly wait on
the GPU; Triton's kernels build in Inductor's own worker processes. The cost left to the trial is
the eager steps' slow-down while the thread runs, which the caller measures.

    ahead = CompileAhead(model.blocks, autocast=lambda: torch.autocast("cuda", dtype=torch.bfloat16))
    ahead.capture()                       # the next training forward records each block's inputs
    ahead.capture_eval(latency_forward)   # and the latency pass's, up to the first block
    loss = step(); ahead.start()
    ...
    if ahead.done: ahead.join(); compile_blocks()   # graphs found: no stall
"""
from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


class _Captured(Exception):
    """Stops ``capture_eval``'s forward pass once the first block's inputs are recorded."""


def _clone(value: Any) -> Any:
    """A tensor's detached copy with the same grad flag (guards check it); other values as they are."""
    if torch.is_tensor(value):
        return value.detach().clone().requires_grad_(value.requires_grad)
    return value


class CompileAhead:
    """Compile ``blocks`` on a side thread from inputs captured in one training step.

    ``autocast()``: the context the training forward runs under (its state is thread-local, and
    Dynamo guards on it). ``backend`` / ``dynamic``: as the caller's
    ``module.compile`` will use them (a graph serves only the backend that built it)."""

    def __init__(self, blocks: Sequence[nn.Module], *, autocast: Callable[[], Any],
                 backend: str = "inductor", dynamic: bool | None = False) -> None:
        self.blocks = list(blocks)
        self.autocast = autocast
        self.backend, self.dynamic = backend, dynamic
        self.inputs: dict[int, tuple[tuple, dict]] = {}       # id(block) -> its training (args, kwargs)
        self.eval_inputs: dict[int, tuple[tuple, dict]] = {}  # 0 -> the first block's eval-mode ones
        self.eval_grad = False                                # and the grad mode they ran under
        self.error: BaseException | None = None
        self.seconds = 0.0                  # the thread's wall time, once done
        self._hooks: list = []
        self._thread: threading.Thread | None = None

    # --- capture -----------------------------------------------------------------------------
    def capture(self) -> None:
        """Record each block's inputs at its next training forward pass (once each)."""
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if module.training and torch.is_grad_enabled() and id(module) not in self.inputs:
                self.inputs[id(module)] = (tuple(_clone(a) for a in args), {k: _clone(v) for k, v in kwargs.items()})
        self._hooks = [b.register_forward_pre_hook(hook, with_kwargs=True) for b in self.blocks]

    def capture_eval(self, forward: Callable[[], Any]) -> None:
        """Record the first block's inputs and the grad mode in ``forward()`` (an eval-mode pass,
        e.g. the latency pass's), stopping it there: the blocks are alike, so those inputs stand for every block's
        (the graph depends on their shapes, dtypes and flags, not their values), and nothing after
        the first block runs on this thread eagerly."""
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.eval_inputs[0] = (tuple(_clone(a) for a in args), {k: _clone(v) for k, v in kwargs.items()})
            self.eval_grad = torch.is_grad_enabled()
            raise _Captured
        handle = self.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            forward()
        except _Captured:
            pass
        finally:
            handle.remove()

    @property
    def captured(self) -> bool:
        return len(self.inputs) == len(self.blocks)

    # --- the thread ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start compiling on the side thread (after ``captured``)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        device = next((p.device for b in self.blocks for p in b.parameters()), torch.device("cpu"))
        self._thread = threading.Thread(target=self._run, args=(device,), name="autotune-compile-ahead",
                                        daemon=True)
        self._started = time.perf_counter()
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def join(self) -> float:
        """Wait for the thread (if started); the seconds waited."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        if self._thread is None:
            return 0.0
        tick = time.perf_counter()
        self._thread.join()
        return time.perf_counter() - tick

    def _run(self, device: torch.device) -> None:
        try:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            for block in self.blocks:
                self._compile_one(block, *self.inputs[id(block)])
                self.inputs.pop(id(block))                              # memory back
        except BaseException as exc:        # recorded for the caller, who trains on eager
            self.error = exc
        finally:
            self.inputs.clear()
            self.eval_inputs.clear()
            self.seconds = time.perf_counter() - self._started

    def _compile_one(self, block: nn.Module, args: tuple, kwargs: dict) -> None:
        twin = copy.deepcopy(block)
        fn = torch.compile(twin._call_impl, backend=self.backend, dynamic=self.dynamic)
        with torch.enable_grad(), self.autocast():                      # the training graph
            out = fn(*args, **kwargs)
            outs = [o for o in (out if isinstance(out, (tuple, list)) else [out])
                    if torch.is_tensor(o) and o.requires_grad]
            wrt = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a) and a.requires_grad]
            if outs and wrt:
                torch.autograd.grad(sum(o.float().sum() for o in outs), wrt, allow_unused=True)
        del out, outs
        if self.eval_inputs:                                            # the latency pass's graph
            eval_args, eval_kwargs = self.eval_inputs[0]
            twin.eval()
            with torch.set_grad_enabled(self.eval_grad), self.autocast():
                fn(*eval_args, **eval_kwargs)
        del twin, fn
