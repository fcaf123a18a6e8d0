#!/usr/bin/env bash
# End-to-end tests (root): placeholder until the lab lands.
set -euo pipefail
echo "e2e: not yet implemented"
