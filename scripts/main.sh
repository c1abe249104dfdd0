#!/usr/bin/env bash
# The main job: train a VAE on the embedded binarised digits and print its test
# log-likelihood.  Extra arguments go to `ppl-dgm train`.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec .venv/bin/ppl-dgm train --model vae --estimator elbo --data digits --steps 3000 \
  --run-dir runs/main --overwrite "$@"
