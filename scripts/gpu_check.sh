#!/usr/bin/env bash
# The GPU checks and figures in one go: scripts/gpu_check.sh [tests] [gen] [train] [speech]
# (default: all four). Writes JSON lines and logs under ${OUT:-gpu_check}/; about 8 minutes
# on one H100/H200 for tests + gen + train; speech adds 8 minutes of training.
#
#   tests   the sampler tests on the GPU: compiled Triton kernels, CUDA graphs, bf16
#   gen     generation samples/s against batch size (1 to 4096), fp32 and bf16 weights, the
#           triton backend (also persistent=true at batch 1 and 8) and the torch one at
#           batch 1, paper two_tier and three_tier
#   train   training samples/s and peak memory, batch 128 x 1024, fp32/bf16 x compile,
#           paper two_tier, three_tier and the older port's config
#   speech  three_tier on ../shared/data/speech_en_allison for 8 minutes (bf16)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(tests gen train speech)
bench() { $PY scripts/benchmark.py device=cuda threads=null out="$OUT/bench.jsonl" "$@"; }

for section in "${sections[@]}"; do
  echo "== $section: $(date +%T)"
  case $section in
    tests)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
      SAMPLERNN_TEST_DEVICE=cuda $PY -m pytest -x -q tests/test_sampler.py 2>&1 | tee "$OUT/tests.log"
      ;;
    gen)
      for model in two_tier three_tier; do
        for precision in fp32 bf16; do
          bench model=$model precision=$precision train_steps=0 gen_seconds=0.5 repeats=3 \
            batch_sizes=[1,16,64,256,1024,4096]
        done
        for precision in fp32 bf16; do  # one kernel per bottom frame, against the rows above
          bench model=$model precision=$precision persistent=true train_steps=0 \
            gen_seconds=0.5 repeats=3 batch_sizes=[1,8]
        done
        bench model=$model backend=torch train_steps=0 gen_seconds=0.25 repeats=3 batch_sizes=[1]
      done
      ;;
    train)
      for model in "model=two_tier" "model=three_tier" \
                   "model=two_tier model.frame_sizes=[16,64] model.n_rnn=2 preset=older_port"; do
        for precision in fp32 bf16; do
          for compile in false true; do
            bench $model precision=$precision compile=$compile gen_seconds=0 batch_sizes=[128] \
              train_seq_len=1024 train_steps=5 warmup_steps=3
          done
        done
      done
      ;;
    speech)
      [ -d data/speech_allison ] || $PY datasets/prepare.py \
        source=../shared/data/speech_en_allison name=speech_allison
      $PY scripts/train.py experiment=paper_three_tier dataset=speech_allison precision=bf16 \
        train.max_minutes=8 eval.every=1000 eval.n_samples=2 eval.sample_seconds=4 \
        hydra.run.dir="$OUT/speech_run" 2>&1 | tail -n 40 | tee "$OUT/speech.log"
      ;;
    *) echo "error: unknown section '$section': give tests, gen, train or speech" >&2; exit 2 ;;
  esac
done
echo "== done: $(date +%T); figures in $OUT/bench.jsonl"
