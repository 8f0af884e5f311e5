#!/usr/bin/env bash
# Eight students at once on a lent GPU (session 14): four origin families x two recipes.
#
# Run on the device machine from the repository root, after earlier calls have copied there the
# three parts of `scripts/pack_faces.py` (to /tmp/parts/part1..3: one part per call, since a call
# carries at most 64 MiB), the shipped models to start from with their cards (to /tmp/init), and
# Keras with its two missing dependencies (wheels installed to /tmp/site). Each student writes its
# .keras and card to /tmp/outs/FAMILY; $OUT gets one tar per family and the logs.
#   MAXMIN=5.5 bash scripts/train_students_on_gpu.sh
set -u
export PYTHONPATH=/tmp/site KERAS_BACKEND=torch PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
P=/tmp/parts
COMMON="--faces $P/part1 $P/part2 $P/part3 --framing 0.58 --epoch-faces 6400 --batch 32
  --lr-schedule cosine --val-faces 300 --sbi-fraction 0.3 --augment everyday --class-weights balanced
  --max-dataset-share 0.3 --select last --workers 2 --no-progress --max-minutes ${MAXMIN:-6}"
declare -A CUT=(
  [resnet50]="conv3_block4_out 128 resnet50_conv3_block4_out_128"
  [vgg16]="block3_pool 96 vgg16_block3_pool_96"
  [inceptionv3]="mixed2 128 inceptionv3_mixed2_128"
  [inceptionresnetv2]="block35_10_ac 128 inceptionresnetv2_block35_10_ac_128")
mkdir -p /tmp/runs /tmp/outs
for fam in resnet50 vgg16 inceptionv3 inceptionresnetv2; do
  set -- ${CUT[$fam]}
  mkdir -p /tmp/outs/$fam
  # A: the recipe of the CPU students (lr 5e-4); B: a gentler one (lr 2e-4, fewer epochs).
  for recipe in "A 5e-4 12" "B 2e-4 8"; do
    read -r name lr epochs <<< "$recipe"
    python3 -m core train --backbone $fam --depth $1 --input-size $2 --init /tmp/init/$3.keras \
      $COMMON --lr $lr --epochs $epochs --run-dir /tmp/runs/${fam}_$name \
      --out /tmp/outs/$fam/${fam}_$1_gpu$name.keras > /tmp/runs/${fam}_$name.log 2>&1 &
  done
done
sleep 75; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; uptime
wait
for f in /tmp/runs/*.log; do echo "== $f"; grep -v -i "warning\|absl\|oneDNN\|cudart" "$f" | tail -16; done
for fam in resnet50 vgg16 inceptionv3 inceptionresnetv2; do tar cf "$OUT/$fam.tar" -C /tmp/outs $fam; done
tar czf "$OUT/logs.tgz" -C /tmp/runs $(cd /tmp/runs && ls *.log */state.json); ls -la "$OUT"
