#!/usr/bin/env bash
# What tests/test_docs.py needs beyond Python: curl, which the docs' examples use. Idempotent.
set -euo pipefail

source "$(dirname "$0")/apt.sh"

command -v curl >/dev/null || apt_install curl
