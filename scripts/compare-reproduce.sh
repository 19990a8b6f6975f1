#!/usr/bin/env bash
# Compares two `gradflow reproduce` output directories file by file, ignoring only what measures
# time: JSON keys matching seconds|gflops|wall|peak|machine, `timing.json`, and durations and
# machine-speed figures in the HTML/Markdown reports. Used to show that a refactor leaves the
# quick reproduction's outputs byte-identical. Needs jq.
# A feature commit that adds a JSON key on purpose can be compared around with IGNORE_KEYS (a regex
# of further keys to drop, e.g. IGNORE_KEYS='^solver$'); say so wherever the result is quoted.
#   scripts/compare-reproduce.sh runs/before runs/after
set -euo pipefail
a=$1
b=$2
bad=0
keys="seconds|gflops|wall|peak|machine${IGNORE_KEYS:+|$IGNORE_KEYS}"
norm_json() {
  jq -S --arg keys "$keys" 'walk(if type == "object" then with_entries(select(.key | test($keys) | not)) else . end)' "$1"
}
norm_text() {
  # Durations, then the work-versus-peak figures of the timing line.
  sed -E -e 's/[0-9.]+ ?(s|ms|seconds|machine-seconds)\b//g' \
    -e 's/peak [0-9.]+ GFLOP\/s/peak/g' -e 's/[0-9.]+× work ÷ peak//g' "$1"
}
while IFS= read -r f; do
  case $f in *timing.json) continue ;; esac
  if [ ! -f "$b/$f" ]; then
    echo "only in $a: $f"
    bad=1
    continue
  fi
  case $f in
    *.json) cmp -s <(norm_json "$a/$f") <(norm_json "$b/$f") || { echo "differs: $f"; bad=1; } ;;
    *.html | *.md) cmp -s <(norm_text "$a/$f") <(norm_text "$b/$f") || { echo "differs: $f"; bad=1; } ;;
    *) cmp -s "$a/$f" "$b/$f" || { echo "differs: $f"; bad=1; } ;;
  esac
done < <(cd "$a" && find . -type f | sort)
while IFS= read -r f; do
  [ -f "$a/$f" ] || { echo "only in $b: $f"; bad=1; }
done < <(cd "$b" && find . -type f | sort)
if [ $bad = 0 ]; then
  echo "identical (timings aside): $(cd "$a" && find . -type f | wc -l) files"
fi
exit $bad
