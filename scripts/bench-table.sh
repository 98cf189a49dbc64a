#!/usr/bin/env bash
# Prints the runs in a chorus-bench results file as Markdown table rows
# (for BENCHMARKS.md): date, row, the numbers the bar looks at, machine
# load during the run, PASS/FAIL.
#   bash scripts/bench-table.sh [bench/results/results.jsonl]
set -euo pipefail
FILE=${1:-$(dirname "$0")/../bench/results/results.jsonl}
echo "| date (UTC) | row | measured | CPU client / server / rest of machine | result |"
echo "|---|---|---|---|---|"
jq -r '
  def ms: if . == null then "?" else ((. / 100 | floor) / 10 | tostring) + " ms" end;
  def pct: if . == null then "?" else (. | tostring) + "%" end;
  def cpu: "\(.metrics.client_cpu_pct | pct) / \(.metrics.server_cpu_pct | pct) / \(.metrics.other_cpu_pct | pct)";
  (.metrics) as $m
  | (if .scenario == "idle" then
       "\($m.kib_per_connection) KiB/conn, \($m.opened) held (RSS \($m.rss_before_kib) → \($m.rss_after_kib) KiB)"
     elif .scenario == "connect-rate" then
       "\($m.rate_per_s)/s, \($m.connected) connected, \($m.failed) failed, listen overflows \($m.listen_overflows // "?")"
     elif .scenario == "fanout" then
       "p99 \($m.latency.p99_us | ms) (p50 \($m.latency.p50_us | ms), max \($m.latency.max_us | ms)), \($m.deliveries_per_s) deliveries/s, lost \($m.totals.lost), dup \($m.totals.duplicated), ooo \($m.totals.out_of_order)"
     elif .scenario == "agent-streams" then
       "p99 \($m.latency.p99_us | ms) (p50 \($m.latency.p50_us | ms)), lost \($m.totals.lost), dup \($m.totals.duplicated), ooo \($m.totals.out_of_order), wrong user \($m.wrong_user)"
     elif .scenario == "recovery-storm" then
       "lost \($m.totals.lost), dup \($m.totals.duplicated), ooo \($m.totals.out_of_order), recovery_failed \($m.recovery_failed), live again max \($m.live_again_max_us | ms), listen overflows \($m.listen_overflows // "?")"
     elif .scenario == "sse" then
       "p99 \($m.latency.p99_us | ms); storm: lost \($m.totals.lost), dup \($m.totals.duplicated), ooo \($m.totals.out_of_order), recovery_failed \($m.recovery_failed // 0), live again max \($m.live_again_max_us | ms)"
     elif .scenario == "churn" then
       "\($m.ok) ok / \($m.failed) failed at \($m.cycles_per_s)/s; end: conns \($m.end.connections), subs \($m.end.subscriptions), tasks \($m.end.tasks), presence \($m.end.presence_channels); RSS \($m.checkpoint.rss_kib) → \($m.end.rss_kib) KiB"
     elif .scenario == "message-rtt" then
       "ack p99 \($m.ack_latency.p99_us | ms) (p50 \($m.ack_latency.p50_us | ms), max \($m.ack_latency.max_us | ms)), \($m.acked)/\($m.sent) acked, delivered \($m.delivered)/\($m.deliveries_expected), lost \($m.lost), dup \($m.duplicated)"
     elif .scenario == "soak" then
       "RSS \($m.baseline.rss_kib) → \($m.end.rss_kib) KiB, tasks \($m.baseline.tasks) → \($m.end.tasks), /health \($m.baseline.health_us) → \($m.end.health_us) µs, p99 \($m.latency.p99_us | ms)"
     else "" end) as $text
  | "| \(.time[0:16] | sub("T"; " ")) | \(.row) | \($text) | \(cpu) | \(if .pass then "PASS" else "**FAIL**" end) |"
' "$FILE"
