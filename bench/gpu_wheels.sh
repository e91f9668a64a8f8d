#!/usr/bin/env bash
# The wheels bench/gpu_check.py needs on the GPU image (Python 3.12, torch, transformers, triton;
# no DeepSpeed, datasets or pydantic), into .whl/ (git-ignored; a few MiB, far below the 64 MiB
# a device call carries). DeepSpeed ships as source: DS_BUILD_OPS=0 makes a pure-Python wheel.
#   bash bench/gpu_wheels.sh [python]       # then see docs/development.md, "The GPU check"
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
rm -rf .whl
mkdir -p .whl
DS_BUILD_OPS=0 "$python" -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
# The versions this project is tested with; the image lacks these (its own list: the device tool's KINDS.md).
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    hjson==3.1.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
du -sh .whl
