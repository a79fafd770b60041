#!/bin/bash
# The training recipes side by side: ResNet-20 on real Fashion-MNIST (Debian's dataset-fashion-mnist:
# `apt-get install -y dataset-fashion-mnist`), the same epochs and seed, the plain recipe and each
# recipe added to it, all four started together so that they share the machine alike.
#   E=3 OUT=/tmp/fmnist bash benchmarks/recipes_fashion_mnist.sh   (from the repository root, venv active)
set -u
E=${E:-3}
OUT=${OUT:-runs/recipes-fashion-mnist}
mkdir -p "$OUT"
COMMON="--arch resnet20 --data fashion_mnist --data-dir /usr/share/datasets/fashion-mnist --batch-size 128 --optimizer sgd --lr 0.1 --momentum 0.9 --weight-decay 1e-4 --schedule cosine --val-split 0.1 --augment cifar --epochs $E --seed 0 --no-progress --workers 0"
declare -A EXTRA=(
  [plain]=""
  [ema]="--ema 0.999"
  [mix]="--mixup 0.2 --cutmix 1.0"
  [randaug]="--augment cifar,randaugment:2:9"
)
for name in plain ema mix randaug; do
  ( start=$SECONDS
    jaxcnn train $COMMON ${EXTRA[$name]} --out "$OUT/$name" --overwrite > "$OUT/$name.log" 2>&1
    echo "$((SECONDS - start)) s wall, exit $?" >> "$OUT/$name.log" ) &
done
wait
for name in plain ema mix randaug; do echo "$name: $(tail -n 1 "$OUT/$name.log")"; done
