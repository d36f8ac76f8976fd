#!/usr/bin/env bash
# FlexAttention's FLASH backend on the device machine (issue 20: the sparse layer at 16k tokens,
# 3.37x dense with the Triton kernels against the 3.5x target). Two parts, one warm machine; the
# files come from bench/flash_carry.sh (see there):
#   (device, carry .flash/a) bash bench/device_flash.sh a   # parks the CuTe DSL's big .so in /tmp/flash_a
#   (device, carry .flash/b) bash bench/device_flash.sh b   # installs into /tmp/flashsite, checks the
#       import, then bench/attention_options.py: the layer with BACKEND FLASH against the Triton
#       default (output and gradients compared) and dense flash SDPA, at LENGTHS (1024 16384); the
#       GPU test of the FLASH backend against the fp32 reference; the moe_sparse training step with
#       and without it, profiled, as part c runs it (SKIP_TRAIN=1: not). BENCH_S, TRAIN_S: those stages' limits.
#   (device, after b on the same machine) bash bench/device_flash.sh c   # the training step only, from
#       b's install: TRAIN_CONFIGS (sparse sparse_flash sparse_cg sparse_flash_cg; without a flash one
#       it needs neither a nor b), profiled (where its time goes), TRAIN_S (400) its limit
set -uo pipefail
S=/tmp/flashsite
# the install after the image's packages (its torch wins); the cutlass-dsl .pth's path by hand (PYTHONPATH runs no .pth)
flash_path() { export PYTHONPATH="$PYTHONPATH:$S:$S/nvidia_cutlass_dsl/dsl_packages"; }
train() {   # the moe_sparse training step under TRAIN_CONFIGS, profiled, within TRAIN_S
  timeout "${TRAIN_S:-400}" python3 bench/model_speed.py --only train --profile --train-configs $TRAIN_CONFIGS \
    --json "$OUT/train.json" > "$OUT/train.log" 2>&1
  echo "== train rc=$?"; grep -vE '^\{' "$OUT/train.log" | tail -150
}
case "${1:-}" in
  a) mkdir -p /tmp/flash_a && cp .flash/a/cutlass_ir.so.xz /tmp/flash_a/ && ls -la /tmp/flash_a
     nvidia-smi --query-gpu=name --format=csv,noheader; exit ;;
  b) ;;
  c) TRAIN_CONFIGS=${TRAIN_CONFIGS:-sparse sparse_flash sparse_cg sparse_flash_cg}
     case "$TRAIN_CONFIGS" in *flash*) [ -d $S/flash_attn ] ||
       { echo "no $S: run part b on this machine first (or TRAIN_CONFIGS without flash)" >&2; exit 3; } ;; esac
     . bench/device_env.sh /tmp/flash_out
     flash_path; train; exit ;;
  *) echo "usage: bash bench/device_flash.sh a|b|c" >&2; exit 2 ;;
esac
[ -f /tmp/flash_a/cutlass_ir.so.xz ] || { echo "no /tmp/flash_a: run part a on this machine first" >&2; exit 3; }
. bench/device_env.sh /tmp/flash_out
rm -rf "$S"; mkdir -p "$S"
cb=(); python3 -c 'import cuda.bindings.driver' 2>/dev/null || cb=(.flash/b/cuda_*.whl)   # the image's if it has them
python3 -m pip install -q --no-index --no-deps --no-compile --target "$S" \
  $(ls .flash/b/*.whl | grep -v '/cuda_') "${cb[@]}" || exit 4
python3 - "$S" <<'PY' || exit 5
import lzma, shutil, sys, zipfile
site = sys.argv[1]
zipfile.ZipFile(".flash/b/libs_cu13_rest.zip").extractall(site)
so = f"{site}/nvidia_cutlass_dsl/dsl_packages/cutlass/_mlir/_mlir_libs/_cutlass_ir.cu13.cpython-312-x86_64-linux-gnu.so"
with lzma.open("/tmp/flash_a/cutlass_ir.so.xz") as f, open(so, "wb") as out:
    shutil.copyfileobj(f, out, 1 << 24)
PY
flash_path
python3 -c 'import flash_attn.cute, cutlass; from flash_attn.cute.interface import _flash_attn_fwd; print("flash_attn.cute", flash_attn.cute.__file__)' \
  > "$OUT/import.log" 2>&1; rc=$?; tail -3 "$OUT/import.log"; [ $rc = 0 ] || exit 6
timeout "${BENCH_S:-200}" python3 bench/attention_options.py --lengths ${LENGTHS:-1024 16384} \
  --variants default flash --out "$OUT/flash.json" > "$OUT/flash.log" 2>&1
echo "== attention_options rc=$?"; grep -E '^\|' "$OUT/flash.log" || tail -20 "$OUT/flash.log"
# the FLASH backend against the fp32 reference, forward and gradients (the model's pattern, 2 shapes)
timeout 120 python3 -m pytest -q -m gpu tests/model_tests/test_attention.py -k flash_backend \
  -p no:cacheprovider -o addopts= > "$OUT/flash_test.log" 2>&1; echo "== flash test rc=$?"; tail -3 "$OUT/flash_test.log"
[ -n "${SKIP_TRAIN:-}" ] || { TRAIN_CONFIGS="sparse sparse_flash" TRAIN_S=${TRAIN_S:-200} train; }
