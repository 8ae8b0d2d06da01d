#!/usr/bin/env bash
# The many-core tokenizer figure, for a lent machine with more cores than the development one (the GPU host
# has 16): whole-file encoding at 1, 2, 4, 8 and 16 threads by bpe-lm, gigatoken and fastokens, on one file of
# at least 1 GB (benches/encode_file.py: the shared corpora repeated; ids compared with bpe-lm's, peak RSS per
# process); then corpora in shards (benches/formats.py --shards-only: 64 .jsonl.gz, .jsonl.zst and parquet
# shards of 200 MB of documents against the same documents as one file, at the same thread counts: one
# compressed file inflates on one thread, shards side by side). About 6 minutes on 16 cores; no GPU needed.
# Output in OUT_DIR (default many_core/).
#
#   bash scripts/many_core.sh [OUT_DIR]
#
# THREADS, SCALE_MB (whole file) and SHARDS_MB (shards) override the sizes, for a dry run on a small machine
# before the lent one is used: THREADS=1,2 SCALE_MB=64 SHARDS_MB=8 bash scripts/many_core.sh /tmp/mc
#
# bpe_lm must be importable (pip install ".[bench]", or the abi3 wheel on PYTHONPATH). A machine without
# internet gets the peers from wheels carried to it, in PEER_WHEELS (default wheels/peers), made where
# there is internet for that machine's Python (3.12 on the GPU host):
#   pip download --no-deps -d wheels/peers --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
#     gigatoken==0.10.0 fastokens==0.3.5 awkward awkward-cpp fsspec packaging typing-extensions \
#     pyarrow zstandard
set -uo pipefail
out=${1:-many_core}
wheels=${PEER_WHEELS:-wheels/peers}
mkdir -p "$out"
if [ -d "$wheels" ] && ! python -c "import gigatoken, fastokens, awkward" 2>/dev/null; then
    site="$out/peer-site"
    pip install --quiet --no-index --no-deps --target "$site" "$wheels"/*.whl || exit 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
nproc >"$out/machine.txt"
python -c "import bpe_lm, gigatoken, fastokens, pyarrow, zstandard; print('peers importable')" >>"$out/machine.txt" 2>&1
cat "$out/machine.txt"
threads=${THREADS:-1,2,4,8,16}
timeout 330 python benches/encode_file.py --threads "$threads" --scale-mb "${SCALE_MB:-1024}" --skip-tiktoken 2>&1 |
    tee "$out/encode_file.txt"
whole_file=${PIPESTATUS[0]}
timeout 200 python benches/formats.py --shards-only --mb "${SHARDS_MB:-200}" --shards 64 --repeat 1 \
    --shard-threads "$threads" 2>&1 |
    tee "$out/shards.txt"
shards=${PIPESTATUS[0]}
[ "$whole_file" -eq 0 ] && [ "$shards" -eq 0 ]
