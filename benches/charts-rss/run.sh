#!/bin/sh
# Issue 10, case 8: peak RSS of the service holding 12,750 series x 1 h of
# 10 s points (4.59 M points) under 12 concurrent /api/charts?range=1h,
# with and without maxPoints. Needs python3 and curl; Linux (/proc).
#
#   cargo build --release && sh benches/charts-rss/run.sh
#
# EXTRA adds lines to the server's config, e.g.
#   EXTRA='server:\n  max_heavy_reads: 2\n' sh benches/charts-rss/run.sh
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
B=${B:-$HERE/../../target/release/pulse-metrics}
PORT=${PORT:-7699}
D=$(mktemp -d)
printf 'collectors:\n  host:\n    enabled: false\n%b' "${EXTRA:-}" > "$D/cfg.yaml"
"$B" --config "$D/cfg.yaml" --db "$D/metrics.db" serve --listen "127.0.0.1:$PORT" 2> "$D/serve.log" &
P=$!
trap 'kill $P 2>/dev/null || true; rm -rf "$D"' EXIT
sleep 1
python3 "$HERE/load.py" "http://127.0.0.1:$PORT"
echo "after loading: $(grep VmRSS /proc/$P/status), peak $(grep VmHWM /proc/$P/status)"
for q in "range=1h" "range=1h&maxPoints=150" "range=1h&maxPoints=60"; do
  # Resets the peak (VmHWM) so each line measures its own requests.
  echo 5 > /proc/$P/clear_refs
  before=$(grep VmRSS /proc/$P/status | awk '{print $2}')
  seq 12 | xargs -P 12 -I{} curl -s -o /dev/null -w "%{http_code} %{size_download}\n" \
    "http://127.0.0.1:$PORT/api/charts?$q" | sort | uniq -c
  echo "12 x /api/charts?$q: RSS before $before kB, peak $(grep VmHWM /proc/$P/status)"
done
