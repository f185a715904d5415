#!/usr/bin/env bash
# test_s3_ops_lock.sh - test_ops_lock.sh against an S3 repository (a throwaway s3rver on loopback):
# operations must hold on both backends.
set -euo pipefail
export KB_OPS_S3=1
exec bash "$(dirname "$0")/test_ops_lock.sh"
