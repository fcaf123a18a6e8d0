#!/usr/bin/env bash
# Installs what the test suite and the demo need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
go mod download
