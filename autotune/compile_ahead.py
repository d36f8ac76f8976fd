"""Compile a model's repeated block in a helper process while the trial trains eager (issue 15).

Owns: ``CompileAhead``: capture the first block's inputs from one training forward pass (and from
one latency pass: eval mode, batch 1), save a copy of the block and those inputs, and hand them to
the process's helper, which compiles the copy through ``torch.compile`` with the backend and
``dynamic`` setting the trial will use: forward and backward (the training graph) and the eval-mode
forward (the latency pass's). Compiling fills the on-disk caches the trial's process reads
(Inductor's FX graph cache, AOTAutograd's cache and Triton's kernels, in ``TORCHINDUCTOR_CACHE_DIR``
and ``TRITON_CACHE_DIR``, which the helper inherits); when the helper is done, the caller compiles
its real blocks and their first calls load the graphs instead of building them (1.9 s against 18 s
measured on a CPU; a graph depends on the block's structure and its inputs' shapes, dtypes and grad
flags, not on the weights). Also owns the helper (``_Helper``, ``serve``): one process per trial
process, started at its first compile ahead and kept for the next trials, so that only the first
pays for its start (torch's import, the CUDA context, Inductor's first use: 8-13 s of 27-42 s on an
H100); it ends with the trial's process, or when a run ends before its compile does. Must not know
about: the training loop, Optuna, the model's classes.

The helper runs at a lower CPU priority (``HELPER_NICENESS``) than the trials. Why a process: a
thread would share the GIL with the trial's eager steps, which are launch-bound exactly where
compiling pays, and compile 2.5x slower while slowing the steps by a quarter (measured on an H100:
the trial took 20 % longer than compiling in the foreground; bench/RESULTS.md).

    ahead = CompileAhead(model.blocks[0], autocast=("cuda", torch.bfloat16))
    ahead.capture()                       # the next training forward records the block's inputs
    ahead.capture_eval(latency_forward)   # and the latency pass's, up to the first block
    loss = step(); ahead.start()
    ...
    if ahead.done: compile_blocks()       # the graphs load from the caches
    ahead.stop()                          # always: removes its files (and a helper still busy)
"""
from __future__ import annotations

import atexit
import copy
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autotune.cache_keys import stable_pickling

stable_pickling()   # here for both processes that compile: the helper (this module is its main) and the
                    # trial's (train.py imports this module), so that they key their graphs alike


# The helper runs at this lower CPU priority (``nice -n``), it and Inductor's compile workers: a trial's
# eager steps are launch-bound, and a compile that takes every core slowed them (and those of the
# trials beside it) while it ran; the trial's steps come first, the compile takes what is left.
HELPER_NICENESS = 10


class _Captured(Exception):
    """Stops ``capture_eval``'s forward pass once the first block's inputs are recorded."""


def _clone(value: Any) -> Any:
    """A tensor's detached copy with the same grad flag (guards check it); other values as they are."""
    if torch.is_tensor(value):
        return value.detach().clone().requires_grad_(value.requires_grad)
    return value


class CompileAhead:
    """Compile ``block`` (the first of a model's alike blocks) in a helper process.

    ``autocast``: ``(device type, dtype)`` of the autocast the training forward runs under, or None
    (Dynamo guards on it). ``backend`` / ``dynamic``: as the caller's ``module.compile`` will use
    them (a cached graph serves only what built it)."""

    def __init__(self, block: nn.Module, *, autocast: tuple[str, torch.dtype] | None,
                 backend: str = "inductor", dynamic: bool | None = False) -> None:
        self.block = block
        self.autocast, self.backend, self.dynamic = autocast, backend, dynamic
        self.inputs: tuple[tuple, dict] | None = None          # the training forward's (args, kwargs)
        self.eval_inputs: tuple[tuple, dict, bool] | None = None   # an eval pass's, and its grad mode
        self.seconds = 0.0                                      # the helper's wall time, once done
        self.phases: dict[str, float] = {}                      # and where it went (``compile_payload``)
        self.reused = False                                     # the helper had compiled before
        self._hook = None
        self._helper: _Helper | None = None
        self._dir: str | None = None                            # the payload's and result's folder
        self._result: dict | None = None                        # the helper's result, once done
        self._started = 0.0
        self._start_error = ""                                  # why the helper could not start

    # --- capture -----------------------------------------------------------------------------
    def capture(self) -> None:
        """Record the block's inputs at its next training forward pass (autograd on, train mode)."""
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if module.training and torch.is_grad_enabled() and self.inputs is None:
                self.inputs = (tuple(_clone(a) for a in args), {k: _clone(v) for k, v in kwargs.items()})
                self._remove_hook()
        self._hook = self.block.register_forward_pre_hook(hook, with_kwargs=True)

    def capture_eval(self, forward: Callable[[], Any]) -> None:
        """Record the block's inputs and the grad mode in ``forward()`` (an eval-mode pass, e.g. the
        latency pass's), stopping it there: nothing after the first block runs."""
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.eval_inputs = (tuple(_clone(a) for a in args), {k: _clone(v) for k, v in kwargs.items()},
                                torch.is_grad_enabled())
            raise _Captured
        handle = self.block.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            forward()
        except _Captured:
            pass
        finally:
            handle.remove()

    @property
    def captured(self) -> bool:
        return self.inputs is not None

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # --- the helper process --------------------------------------------------------------------
    def start(self) -> None:
        """Save the block's copy and its inputs, and hand them to the helper, starting one if this
        process has none (after ``captured``). If that fails (a full disk, a block that does not
        pickle), ``done`` at once and not ``ok``."""
        self._started = time.perf_counter()
        try:
            self._start()
        except Exception as exc:
            self._start_error = f"helper not started: {exc!r}"
        finally:
            self.inputs = self.eval_inputs = None             # memory back

    def _start(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="autotune-compile-ahead-")
        payload = Path(self._dir) / "payload.pt"
        device = next((p.device for p in self.block.parameters()), torch.device("cpu"))
        torch.save({"module": copy.deepcopy(self.block).cpu(), "device": str(device),
                    "inputs": _moved(self.inputs, "cpu"), "eval_inputs": _moved(self.eval_inputs, "cpu"),
                    "autocast": self.autocast, "backend": self.backend, "dynamic": self.dynamic,
                    "settings": global_settings()}, payload)
        self._helper, self.reused = _helper(self.backend)
        self._helper.submit(payload)

    @property
    def _result_path(self) -> Path | None:
        return Path(self._dir) / RESULT if self._dir is not None else None

    @property
    def started(self) -> bool:
        return self._helper is not None or bool(self._start_error)

    @property
    def done(self) -> bool:
        """The helper has compiled the block (or failed to), or has died, or could not start
        (``ok`` says how)."""
        if self._result is None and not self._start_error:
            if self._helper is None:
                return False
            if self._result_path.exists():
                self._result = json.loads(self._result_path.read_text())
            elif self._helper.alive:
                return False
            else:
                self._result = {"ok": False, "error": self._helper.exit_message()}
        if not self.seconds:
            self.seconds = time.perf_counter() - self._started
            self.phases = {k: round(float(v), 3) for k, v in (self._result or {}).get("seconds", {}).items()}
        return True

    def wait(self) -> None:
        """Block until ``done`` (the helper's result or its end, not a clock)."""
        while not self.done:
            time.sleep(0.05)

    @property
    def ok(self) -> bool:
        return self.done and not self._start_error and bool(self._result.get("ok"))

    @property
    def error(self) -> str:
        """Why the helper failed: its error, or its exit status and the last lines it printed
        ('' while ok)."""
        if not self.done or self.ok:
            return ""
        return (self._start_error or self._result.get("error", ""))[:400]

    def stop(self) -> None:
        """End the helper if it still compiles this block (a run that ends first has no use for its
        graphs; the next trial starts a fresh helper) and remove this block's files. A helper that
        is done stays, for the process's next trial."""
        self._remove_hook()
        if self._helper is not None and not self.done:
            _stop_helper()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


RESULT = "result.json"     # what the helper writes beside a payload: {"ok", "seconds"} or {"ok", "error"}


class _Helper:
    """The helper process: compiles the payloads handed to it one after another (torch imported,
    its CUDA context and Inductor warm after the first), as long as the trial's process lives.
    Started at a lower CPU priority (``HELPER_NICENESS``)."""

    def __init__(self, backend: str = "inductor") -> None:
        self.env = _helper_env()
        self.dir = tempfile.mkdtemp(prefix="autotune-compile-helper-")
        self.log = open(Path(self.dir) / "log.txt", "w+")
        command = [sys.executable, "-m", "autotune.compile_ahead", "--serve", str(os.getpid()), backend]
        nice = shutil.which("nice") if HELPER_NICENESS else None
        self.proc = subprocess.Popen([nice, "-n", str(HELPER_NICENESS), *command] if nice else command,
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                                     env=os.environ.copy(), text=True)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def submit(self, payload: Path) -> None:
        """Hand it ``payload``; it writes ``RESULT`` beside it when done."""
        self.proc.stdin.write(f"{payload}\t{time.time()!r}\n")
        self.proc.stdin.flush()

    def exit_message(self) -> str:
        self.log.seek(0)
        tail = [ln for ln in self.log.read().splitlines() if ln.strip()][-3:]
        return f"helper exited {self.proc.returncode}: " + " | ".join(tail)[-400:]

    def close(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.log):
            try:
                stream.close()
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


_current: _Helper | None = None


def _helper_env() -> tuple[str | None, ...]:
    """What a helper keeps from the environment it started in: where it writes the caches (the
    trial's caches must be the ones it fills) and which GPU it sees."""
    return tuple(os.environ.get(name) for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
                                                   "CUDA_VISIBLE_DEVICES"))


def _helper(backend: str = "inductor") -> tuple[_Helper, bool]:
    """This process's helper (started now if it has none, it died, or the environment it started
    in has changed; a new one warms ``backend`` up), and whether it was running already."""
    global _current
    if _current is not None and _current.alive and _current.env == _helper_env():
        return _current, True
    _stop_helper()
    _current = _Helper(backend)
    return _current, False


def prestart() -> None:
    """Start this process's helper now, before a trial needs it, so that it is warm by then."""
    _helper()


def _stop_helper() -> None:
    global _current
    if _current is not None:
        _current.close()
        _current = None


atexit.register(_stop_helper)


# The process-wide settings a cached graph's key holds (AOTAutograd's and Inductor's: matmul
# precision, threads, determinism, default dtype); the helper must match the trial's, or its graphs
# are cached under another key and the trial misses them (seen: fp32_precision 'none' vs 'ieee').
# (``allow_tf32`` before ``fp32_precision``: setting the older flag rewrites the newer one)
_BACKEND_FLAGS = (("cuda.matmul", ("allow_tf32", "fp32_precision", "allow_fp16_reduced_precision_reduction",
                                   "allow_bf16_reduced_precision_reduction")),
                  ("cudnn", ("allow_tf32", "fp32_precision")))


# Dynamo's settings that change what a trial's graphs are (adaptive top-k captures ``.item()``)
_DYNAMO_FLAGS = ("capture_scalar_outputs",)


def _backend(where: str) -> Any:
    """``torch.backends`` + ``where`` (e.g. ``cuda.matmul``)."""
    module = torch.backends
    for part in where.split("."):
        module = getattr(module, part)
    return module


def global_settings() -> dict[str, Any]:
    """This process's settings that a cached graph's key holds."""
    flags = {}
    for where, names in _BACKEND_FLAGS:
        module = _backend(where)
        for name in names:
            if hasattr(module, name):
                flags[f"{where}.{name}"] = getattr(module, name)
    return {"flags": flags, "dynamo": {name: getattr(torch._dynamo.config, name) for name in _DYNAMO_FLAGS},
            "threads": torch.get_num_threads(), "default_dtype": torch.get_default_dtype(),
            "deterministic": (torch.are_deterministic_algorithms_enabled(),
                              torch.is_deterministic_algorithms_warn_only_enabled())}


def apply_settings(settings: dict[str, Any]) -> None:
    """Make this process's settings ``settings`` (``global_settings()`` of another)."""
    for key, value in settings["flags"].items():
        where, name = key.rsplit(".", 1)
        module = _backend(where)
        if hasattr(module, name):
            setattr(module, name, value)
    for name, value in settings.get("dynamo", {}).items():
        setattr(torch._dynamo.config, name, value)
    torch.set_num_threads(settings["threads"])
    torch.set_default_dtype(settings["default_dtype"])
    on, warn_only = settings["deterministic"]
    torch.use_deterministic_algorithms(on, warn_only=warn_only)


def _moved(captured: tuple | None, device: torch.device | str) -> tuple | None:
    """Captured ``(args, kwargs, ...)`` with their tensors on ``device`` (the CPU to be saved, the
    GPU in the helper), grad flags kept."""
    if captured is None:
        return None
    move = lambda v: v.detach().to(device).requires_grad_(v.requires_grad) if torch.is_tensor(v) else v
    args, kwargs, *rest = captured
    return (tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}, *rest)


def compile_payload(path: str, started: float | None = None) -> dict[str, float]:
    """The helper's work: compile the saved block's training graph (forward and backward) and, if
    captured, its eval-mode forward; seconds of each, of loading the payload, and (given
    ``started``, the ``time.time()`` at which the trial launched the helper) of the process's start."""
    seconds = {"start_s": time.time() - started} if started is not None else {}
    tick = time.perf_counter()
    payload = torch.load(path, weights_only=False)
    os.unlink(path)                 # the block's copy and a batch of activations: gone even if killed
    device = torch.device(payload["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    apply_settings(payload["settings"])
    block = payload["module"].to(device)
    block.train()
    kind = payload["autocast"]
    autocast = (lambda: torch.autocast(kind[0], dtype=kind[1])) if kind else nullcontext
    fn = torch.compile(block._call_impl, backend=payload["backend"], dynamic=payload["dynamic"])
    seconds["load_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    args, kwargs = _moved(payload["inputs"], device)
    with torch.enable_grad(), autocast():
        out = fn(*args, **kwargs)
        outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if torch.is_tensor(o) and o.requires_grad]
        wrt = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a) and a.requires_grad]
        if outs and wrt:
            torch.autograd.grad(sum(o.float().sum() for o in outs), wrt, allow_unused=True)
    seconds["train_graph_s"] = time.perf_counter() - tick
    if payload["eval_inputs"] is not None:
        tick = time.perf_counter()
        args, kwargs, grad = _moved(payload["eval_inputs"], device)
        block.eval()
        with torch.set_grad_enabled(grad), autocast():
            fn(*args, **kwargs)
        seconds["eval_graph_s"] = time.perf_counter() - tick
    return seconds


def _exit_with(parent: int) -> None:
    """Exit as soon as ``parent`` (the trial's process) is gone: a killed trial's helper has no one
    to compile for, and should not hold the GPU until its compile ends."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)
    threading.Thread(target=watch, daemon=True).start()


def _warm(backend: str) -> None:
    """What every compile needs, done before the first payload comes: the CUDA context open, and
    Dynamo, AOTAutograd and ``backend`` (Inductor: its kernel compiler) through their first use
    (imports, code caches) on a function of two ops, forward and backward, under autocast. A backend
    that fails here says why at the payload's compile, which the trial reads."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.ones(8, 8, device=device, requires_grad=True)
    try:
        with torch.autocast(device, dtype=torch.bfloat16):
            y = torch.compile(lambda t: torch.nn.functional.gelu(t @ t), backend=backend, dynamic=False)(x)
        y.float().sum().backward()
    except Exception:  # noqa: BLE001 - reported with the payload
        traceback.print_exc()
    torch._dynamo.reset()


def serve(parent: int, backend: str = "inductor") -> None:
    """The helper's loop: warm ``backend`` up, then for each ``PAYLOAD\tLAUNCHED_AT`` line on stdin,
    compile the payload and write ``RESULT`` beside it (atomically); exit at the end of stdin or
    with ``parent``."""
    _exit_with(parent)
    _warm(backend)
    for line in sys.stdin:
        path, launched = line.rstrip("\n").split("\t")
        try:
            result = {"ok": True, "seconds": compile_payload(path, float(launched))}
        except Exception as exc:  # noqa: BLE001 - the trial compiles itself instead, and says why
            traceback.print_exc()
            result = {"ok": False, "error": f"helper failed: {type(exc).__name__}: {exc}"[:400]}
        finally:
            torch._dynamo.reset()               # the next block is another trial's
            gc.collect()
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()
        done = Path(path).with_name(RESULT)
        partial = done.with_suffix(".partial")
        partial.write_text(json.dumps(result))
        os.replace(partial, done)
        sys.stdout.flush()


if __name__ == "__main__":           # python -m autotune.compile_ahead --serve TRIAL_PID [BACKEND]
    serve(int(sys.argv[2]), *sys.argv[3:4])
