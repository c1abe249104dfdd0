#!/usr/bin/env bash
# The main job, on the embedded binarised digits:
#  1. train a VAE and print its test log-likelihood (runs/main);
#  2. compare the discrete-latent estimators on a sigmoid belief net: table, CSV/JSON
#     and plots in runs/cmp; the 15 (estimator, seed) runs go to one worker process per
#     available core (--jobs auto; the table is the same as with --jobs 1).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
.venv/bin/ppl-dgm train --model vae --estimator elbo --data digits --steps 3000 \
  --run-dir runs/main --overwrite --no-progress
exec .venv/bin/ppl-dgm compare --model sbn --estimators reinforce,nvil,vimco,rws,ws \
  --data digits --steps 2000 --seeds 3 --jobs auto --out runs/cmp --overwrite
