"""The experts' SwiGLU over the first n rows of a buffer, n read on the device (every grouped
dispatch on CUDA: fixed top-k, and adaptive top-k in either layout, ``MoE.adaptive_layout``).

Owns: ``swiglu(gu, rows)``: ``silu(gate) * up`` of ``gu = [M, 2 d_ff]`` (gate | up), and its
gradient, computed for the first ``rows`` rows only, ``rows`` a one-element int tensor on the
device (no host sync): the experts pass their last segment end, the rows some expert owns. Adaptive
top-k's static layout keeps [tokens x top_k] rows so that no shape depends on the data; the used
assignments are its first n rows, and the grouped matmuls already stop at n.
On CUDA two Triton kernels, custom ops (``torch.library``: Inductor calls them as they are), read n
and skip every row block past it, so the elementwise work follows the experts used instead of
``top_k``; rows past n are left undefined, as the grouped matmul leaves them. They also beat
Inductor's fused SwiGLU where every row is used (fixed top-k; bench/RESULTS.md, "The SwiGLU kernels
as custom ops"). Elsewhere (CPU, no Triton) plain torch ops compute every row and zero the tail.
Must not know about: routing, attention, training, Optuna.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK_ROWS, BLOCK_COLS = 32, 128      # a program's tile: 32 rows x 128 columns of d_ff


def swiglu(gu: Tensor, rows: Tensor | None = None) -> Tensor:
    """``silu(gate) * up`` for ``gu = [M, 2 d_ff]`` -> [M, d_ff]. With ``rows`` (int32 [1], gu's device),
    rows from ``rows[0]`` on are skipped: undefined on CUDA, zero elsewhere."""
    if rows is not None and _triton_ready(gu):
        return _swiglu_rows(gu, rows)
    gate, up = gu.chunk(2, dim=-1)
    out = F.silu(gate) * up
    if rows is None:
        return out
    keep = (torch.arange(gu.shape[0], device=gu.device) < rows).unsqueeze(-1)
    return torch.where(keep, out, 0)


def _triton_ready(x: Tensor) -> bool:
    return x.is_cuda and triton is not None


try:                                  # defined at import: Dynamo traces a launch of a module-level kernel
    import triton
    import triton.language as tl
except ImportError:                   # a CPU build of torch without Triton: the plain path
    triton = None

if triton is not None:
    @triton.jit
    def _tile(gu, n, d_ff, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
        """This program's rows and columns, their mask (rows before n), and gate and up there (fp32)."""
        r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        c = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
        mask = (r[:, None] < n) & (c[None, :] < d_ff)
        at = gu + r[:, None] * (2 * d_ff) + c[None, :]
        g = tl.load(at, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(at + d_ff, mask=mask, other=0.0).to(tl.float32)
        return r, c, mask, g, u

    @triton.jit
    def _forward_kernel(gu, h, rows, d_ff, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
        n = tl.load(rows)
        if tl.program_id(0) * BLOCK_R < n:              # row blocks past the used rows do nothing
            r, c, mask, g, u = _tile(gu, n, d_ff, BLOCK_R, BLOCK_F)
            out = g * tl.sigmoid(g) * u
            tl.store(h + r[:, None] * d_ff + c[None, :], out.to(h.dtype.element_ty), mask=mask)

    @triton.jit
    def _backward_kernel(gu, dh, dgu, rows, d_ff, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
        n = tl.load(rows)
        if tl.program_id(0) * BLOCK_R < n:
            r, c, mask, g, u = _tile(gu, n, d_ff, BLOCK_R, BLOCK_F)
            d = tl.load(dh + r[:, None] * d_ff + c[None, :], mask=mask, other=0.0).to(tl.float32)
            s = tl.sigmoid(g)
            dg = d * u * s * (1.0 + g * (1.0 - s))      # d silu(g) / dg = s (1 + g (1 - s))
            du = d * g * s
            out = dgu + r[:, None] * (2 * d_ff) + c[None, :]
            tl.store(out, dg.to(dgu.dtype.element_ty), mask=mask)
            tl.store(out + d_ff, du.to(dgu.dtype.element_ty), mask=mask)


def _grid(M: int, d_ff: int) -> tuple[int, int]:
    return (M + BLOCK_ROWS - 1) // BLOCK_ROWS, (d_ff + BLOCK_COLS - 1) // BLOCK_COLS


# The kernels as custom ops: opaque to torch.compile, which calls them as they are. Launched from an
# autograd.Function instead, Inductor functionalizes the launch and copies the buffer the kernel
# writes (a [rows, 2 d_ff] clone a layer, measured on an H100: 0.71 ms each, bench/RESULTS.md).
@torch.library.custom_op("autotune::swiglu_rows", mutates_args=())
def _swiglu_rows(gu: Tensor, rows: Tensor) -> Tensor:
    gu = gu.contiguous()
    M, d_ff = gu.shape[0], gu.shape[1] // 2
    h = gu.new_empty(M, d_ff)
    _forward_kernel[_grid(M, d_ff)](gu, h, rows, d_ff, BLOCK_R=BLOCK_ROWS, BLOCK_F=BLOCK_COLS)
    return h


@_swiglu_rows.register_fake
def _(gu: Tensor, rows: Tensor) -> Tensor:
    return gu.new_empty(gu.shape[0], gu.shape[1] // 2)


@torch.library.custom_op("autotune::swiglu_rows_backward", mutates_args=())
def _swiglu_rows_backward(gu: Tensor, dh: Tensor, rows: Tensor) -> Tensor:
    gu = gu.contiguous()
    M, d_ff = gu.shape[0], gu.shape[1] // 2
    dgu = torch.empty_like(gu)
    _backward_kernel[_grid(M, d_ff)](gu, dh.contiguous(), dgu, rows, d_ff, BLOCK_R=BLOCK_ROWS, BLOCK_F=BLOCK_COLS)
    return dgu


@_swiglu_rows_backward.register_fake
def _(gu: Tensor, dh: Tensor, rows: Tensor) -> Tensor:
    return torch.empty_like(gu, memory_format=torch.contiguous_format)


def _save_inputs(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _swiglu_rows_grad(ctx, dh: Tensor):
    gu, rows = ctx.saved_tensors
    return _swiglu_rows_backward(gu, dh, rows), None


_swiglu_rows.register_autograd(_swiglu_rows_grad, setup_context=_save_inputs)
