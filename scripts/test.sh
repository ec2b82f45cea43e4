#!/usr/bin/env bash
# The one command that runs every test: installs what they need, type-checks,
# runs all jest projects against real QEMU, and prints "N passed, N failed".
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VMSNAP_ROOT"

bash scripts/setup.sh
# SeaweedFS for the repository suites: built once per version before jest starts, so a cold
# build (long on a fresh machine) is never cut short by a suite's start-up timeout.
bash cluster/ensure-seaweedfs.sh >/dev/null
log "type-checking"
npx tsc -p tsconfig.json --noEmit
log "running tests"
results="$(mktemp)"
status=0
node --experimental-vm-modules node_modules/jest/bin/jest.js --json --outputFile="$results" "$@" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' "$results" || true
rm -f "$results"
exit "$status"
