"""The compile helper's start against its reuse (issue 15): blocks of growing width handed one
after another to one process's helper, each compiled from empty caches (a fresh cache dir, and a
new width each time, so that nothing is loaded), with the helper started at the first block
(``--cold``, as in a study's first compiled trial) or ``--prestart`` seconds before it (as a worker
of a study that compiled ahead before starts it). Prints each block's helper wall time and its
phases (start: from hand-over to the helper taking it, load, training graph, eval graph), and
writes JSON.

  python bench/compile_helper.py --out out/compile_helper.json             # CPU or GPU
  python bench/compile_helper.py --prestart 40 --blocks 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--prestart", type=float, default=0.0, help="start the helper this many seconds before the first block")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--backend", default="inductor",
                        help="torch.compile backend of the blocks (the trainer's: inductor; aot_eager checks the "
                             "script's own logic in seconds)")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "compile_helper.json"))
    args = parser.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="compile-helper-bench-")
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(os.environ["TORCHINDUCTOR_CACHE_DIR"], "triton"))
    import torch

    from autotune import compile_ahead
    from autotune.model import ModelConfig, Transformer

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    autocast = (device.type, torch.bfloat16)
    torch.set_num_threads(1 if not cuda else torch.get_num_threads())
    if args.prestart:
        compile_ahead.prestart()
        time.sleep(args.prestart)
    rows = []
    for i in range(args.blocks):
        d = 32 * (i + 2)
        model = Transformer(ModelConfig(vocab_size=64, d_model=d, n_heads=2, d_ff=2 * d, n_layers=args.layers,
                                        num_experts=1, top_k=1, attention="dense", max_seq_len=args.seq_len)).to(device)
        ahead = compile_ahead.CompileAhead(model.blocks[0], autocast=autocast, backend=args.backend)
        ahead.capture()
        with torch.autocast(*autocast):
            logits, _ = model(torch.randint(0, 64, (2, args.seq_len), device=device))
        logits.float().sum().backward()
        ahead.start()
        ahead.wait()
        rows.append({"block": i, "d_model": d, "ok": ahead.ok, "reused": ahead.reused,
                     "wall_s": round(ahead.seconds, 3), **ahead.phases, "error": ahead.error})
        ahead.stop()
        print(rows[-1], flush=True)
    header = ["block", "d_model", "helper", "wall s", "start s", "load s", "train graph s", "eval graph s"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['block']} | {r['d_model']} | {'reused' if r['reused'] else 'started'} | {r['wall_s']:.2f} | "
              f"{r.get('start_s', float('nan')):.2f} | {r.get('load_s', float('nan')):.2f} | "
              f"{r.get('train_graph_s', float('nan')):.2f} | {r.get('eval_graph_s', float('nan')):.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "device": str(device), "rows": rows}, indent=2))
    if not all(r["ok"] for r in rows):
        raise SystemExit("a block failed: " + "; ".join(r["error"] for r in rows if not r["ok"]))


if __name__ == "__main__":
    main()
