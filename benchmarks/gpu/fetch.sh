#!/usr/bin/env bash
# Run once on the CPU machine, from the repo root: the wheels the GPU machine's image lacks
# (Python 3.12; it has torch, lightning, torchmetrics, pandas, pyarrow, onnx, onnxruntime, onnxscript,
# scikit-learn, pytest, but no hydra-core / omegaconf / faiss) into .gpu/wheels, and the ML-1M file the
# check trains on into .gpu/data. Both folders are git-ignored and travel with `carry: [".gpu"]`.
#   bash benchmarks/gpu/fetch.sh        then see README.md "GPU" for the one command
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${SHOPFORMER_DATA:-../shared/data}
version() { grep -i "^$1==" constraints.txt | cut -d= -f3; }
mkdir -p .gpu/wheels .gpu/data/ml-1m
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for name in hydra-core omegaconf faiss-cpu; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .gpu/wheels "$name==$(version "$name")"
done
# antlr4-python3-runtime (omegaconf's parser) is published as an sdist only: build its pure-Python wheel here.
python3 -m pip wheel --quiet --no-deps -w .gpu/wheels "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
cp "$DATA/ml-1m/ml-1m.txt" .gpu/data/ml-1m/
du -sh .gpu/wheels .gpu/data
ls .gpu/wheels
