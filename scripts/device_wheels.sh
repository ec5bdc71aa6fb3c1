#!/usr/bin/env bash
# Build .whl/ here (a machine with PyPI) for the device machine, which has torch, transformers,
# peft and triton but no jupyter stack and no internet (the device tool's README): the jupyter
# stack with its needs, plotly, anywidget, ipywidgets, bitsandbytes cut to the one CUDA 13
# library (its wheel is ~43 MB; the device call carries at most 64 MiB) and deepspeed (pure
# Python, built here) with hjson and pydantic. About 35 MB; ~1 min. Then carry ".whl".
#   bash scripts/device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qs '^/.whl/' .git/info/exclude || { mkdir -p .git/info; echo /.whl/ >> .git/info/exclude; }
rm -rf .whl && mkdir -p .whl
P=(--only-binary=:all: --python-version 3.12 --implementation cp)
for n in 1 2014; do P+=(--platform "manylinux${n}_x86_64"); done
for n in 17 24 27 28 31 34; do P+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q "${P[@]}" -d .whl nbclient ipykernel plotly ipywidgets anywidget \
  hjson pydantic pytest   # pytest: the GPU tests (tests/ -k on_the_gpu)
# what the device image already holds (KINDS.md's list): one version of each, the image's
rm -f .whl/packaging-* .whl/psutil-* .whl/pygments-* .whl/python_dateutil-* \
  .whl/typing_extensions-* .whl/attrs-* .whl/tzdata-*
python3 -m pip download -q --no-deps "${P[@]}" -d .whl bitsandbytes
tmp=$(mktemp -d)
wheel=$(ls .whl/bitsandbytes-*.whl)
(cd "$tmp" && unzip -q "$OLDPWD/$wheel" \
  && find bitsandbytes -name '*.so' ! -name libbitsandbytes_cuda130.so -delete \
  && rm "$OLDPWD/$wheel" && zip -q -r "$OLDPWD/$wheel" .)
rm -rf "$tmp"
python3 -m pip wheel -q --no-deps deepspeed -w .whl
du -sh .whl
