#!/usr/bin/env bash
# FlexAttention's FLASH backend (flash-attn-4's CuTe DSL kernels, torch 2.11's BACKEND="FLASH") for the
# device machine, whose image lacks it, in two carried parts: the CuTe DSL's MLIR library alone is a
# 184 MB .so (88 MiB as its wheel), over the 64 MiB one device call carries. Builds, here (network):
#   .flash/a/cutlass_ir.so.xz   that .so, xz -9e (48 MiB; ~2.5 min to compress on 2 cores)
#   .flash/b/*.whl              the other wheels (flash-attn-4, cutlass-dsl stub, libs-base, libs-core,
#                               quack-kernels, apache-tvm-ffi, torch-c-dlpack-ext, einops, protobuf,
#                               cuda-bindings, cuda-pathfinder) and libs_cu13_rest.zip (the cu13 wheel without that .so)
# Then two calls on ONE warm machine (the second within its 30 s idle window), bench/device_flash.sh:
#   run(carry=[".flash/a"]): bash bench/device_flash.sh a      # parks the .so in /tmp/flash_a
#   run(carry=[".flash/b"]): bash bench/device_flash.sh b      # installs, checks, times
#   bash bench/flash_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FA4=${FA4:-4.0.0b40}; DSL=${DSL:-4.8.1}
rm -rf .flash/b; mkdir -p .flash/a .flash/b .flash/dl
get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$1" "$2"; }
for p in "flash-attn-4==$FA4" "nvidia-cutlass-dsl==$DSL" "nvidia-cutlass-dsl-libs-base==$DSL" \
         "nvidia-cutlass-dsl-libs-core==$DSL" quack-kernels "apache-tvm-ffi<0.2" torch-c-dlpack-ext einops \
         protobuf cuda-bindings cuda-pathfinder; do
  get .flash/b "$p"
done
get .flash/dl "nvidia-cutlass-dsl-libs-cu13==$DSL"
python3 - <<'PY'
import glob, lzma, os, zipfile
big = "nvidia_cutlass_dsl/dsl_packages/cutlass/_mlir/_mlir_libs/_cutlass_ir.cu13.cpython-312-x86_64-linux-gnu.so"
src = zipfile.ZipFile(glob.glob(".flash/dl/nvidia_cutlass_dsl_libs_cu13-*.whl")[0])
with zipfile.ZipFile(".flash/b/libs_cu13_rest.zip", "w", zipfile.ZIP_DEFLATED) as rest:
    for info in src.infolist():
        if info.filename != big:
            rest.writestr(info, src.read(info))
if not os.path.exists(".flash/a/cutlass_ir.so.xz"):          # made once (minutes)
    with src.open(big) as f, lzma.open(".flash/a/cutlass_ir.so.xz.part", "wb", preset=9 | lzma.PRESET_EXTREME) as out:
        while chunk := f.read(1 << 24):
            out.write(chunk)
    os.replace(".flash/a/cutlass_ir.so.xz.part", ".flash/a/cutlass_ir.so.xz")
PY
du -sh .flash/a .flash/b
