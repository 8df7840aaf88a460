#!/usr/bin/env bash
# nnd against PyTorch (CPU) on the same recipe and cores, rounds alternated:
#   scripts/compare-pytorch.sh [ROUNDS] [EPOCHS]        (defaults 5 and 5; `make compare`)
# See scripts/compare-peer.sh.
exec "$(dirname "$0")/compare-peer.sh" pytorch "$@"
