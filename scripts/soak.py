#!/usr/bin/env python3
"""Soak test of the puppetcam daemon: run it for a while, poll /metrics and the process RSS, and
fail on memory growth, stalls, errors or an unclean exit.

    scripts/soak.sh --minutes 30 --config my-looping-video.toml
    scripts/soak.sh --seconds 20                      # CI: embedded driver (or --video F looped), null output
    scripts/soak.sh --seconds 20 -- target/debug/examples/service_demo --bind 127.0.0.1:{port}

Writes <out>/samples.csv (one row per poll), <out>/summary.json and prints a summary: frame-time
p50/p95/p99 from the end_to_end histogram (delta over the measured window), RSS start/max/end,
drops, errors, face lost. Exit status: 0 pass, 1 a check failed, 2 usage/start-up error.
Only the standard library is used so it runs with any python3.
"""
import argparse
import csv
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            raise ValueError(f'bad metrics line: {line!r}')
        labels = frozenset(LABEL_RE.findall(m.group(3) or ''))
        v = m.group(4)
        out[(m.group(1), labels)] = math.inf if v == '+Inf' else float(v)
    return out


def metric_sum(ms, name, **want):
    return sum(v for (n, l), v in ms.items() if n == name and all((k, w) in l for k, w in want.items()))


def buckets(ms, stage):
    """Cumulative (le, count) for one stage's latency histogram, sorted by le."""
    b = []
    for (n, l), v in ms.items():
        d = dict(l)
        if n == 'puppetcam_stage_latency_seconds_bucket' and d.get('stage') == stage:
            b.append((math.inf if d['le'] == '+Inf' else float(d['le']), v))
    return sorted(b)


def quantile(q, b0, b1):
    """histogram_quantile over the increase between two cumulative bucket sets (seconds)."""
    start = dict(b0)
    inc = [(le, c - start.get(le, 0.0)) for le, c in b1]
    if not inc or inc[-1][1] <= 0:
        return None
    total = inc[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in inc:
        if c >= rank:
            if math.isinf(le):
                return prev_le  # beyond the largest finite bound: report that bound
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1.0)
        prev_le, prev_c = le, c
    return None


def rss_kb(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def fetch(url, timeout=3.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ap.add_mutually_exclusive_group()
    d.add_argument('--minutes', type=float, help='duration in minutes (default 10)')
    d.add_argument('--seconds', type=float, help='duration in seconds (CI: 20)')
    ap.add_argument('--config', help='config file for `puppetcam run`')
    ap.add_argument('--video', help='video file looped as the driver (default: $PUPPETCAM_SOAK_VIDEO, else the embedded driver)')
    ap.add_argument('--binary', default=os.environ.get('PUPPETCAM_BIN', str(ROOT / 'target/debug/puppetcam')))
    ap.add_argument('--port', type=int, help='HTTP port of the daemon (default: a free one, substituted for {port} in the command)')
    ap.add_argument('--interval', type=float, help='seconds between polls (default 5, 1 for runs under a minute)')
    ap.add_argument('--warmup', type=float, help='seconds excluded from RSS/latency baselines (default 10%% of the run, 3..60)')
    ap.add_argument('--rss-growth-mb', type=float, default=64.0, help='fail when RSS grows more than this after warm-up')
    ap.add_argument('--stall-seconds', type=float, default=10.0, help='fail when no frame is delivered for this long')
    ap.add_argument('--max-errors', type=int, default=0, help='fail when the error counters grow by more than this')
    ap.add_argument('--startup-timeout', type=float, default=120.0)
    ap.add_argument('--out', help='output directory (default soak-<time>/ under target/)')
    ap.add_argument('cmd', nargs=argparse.REMAINDER, help='-- command to run instead of puppetcam run')
    a = ap.parse_args()

    duration = a.seconds if a.seconds is not None else 60.0 * (a.minutes if a.minutes is not None else 10.0)
    interval = a.interval or (1.0 if duration < 60 else 5.0)
    warmup = a.warmup if a.warmup is not None else min(60.0, max(3.0, 0.1 * duration))
    port = a.port or free_port()
    out = Path(a.out or ROOT / 'target' / time.strftime('soak-%Y%m%d-%H%M%S'))
    out.mkdir(parents=True, exist_ok=True)

    cmd = [c for c in a.cmd if c != '--'] if a.cmd else None
    if cmd:
        cmd = [c.replace('{port}', str(port)) for c in cmd]
    else:
        if not os.access(a.binary, os.X_OK):
            print(f'soak: {a.binary} is not executable (cargo build first, or set PUPPETCAM_BIN)', file=sys.stderr)
            return 2
        cmd = [a.binary, 'run', '--http', f'127.0.0.1:{port}']
        if a.config:
            cmd += ['--config', a.config]
        video = a.video or os.environ.get('PUPPETCAM_SOAK_VIDEO')
        if video:
            cmd += ['--source', f'loop:{Path(video).resolve()}']
        elif not a.config:
            cmd += ['--source', 'embedded']
        if not a.config:
            # Without a config, write nowhere: the soak measures the daemon, not a device; at the
            # demo geometry (`run` without a config defaults to a camera's 1280x720 at 30 fps).
            cmd += ['--output', 'null', '--size', '640x480', '--fps', '25']
    metrics_url = f'http://127.0.0.1:{port}/metrics'

    print(f'soak: {" ".join(cmd)}\nsoak: {duration:.0f} s, polling {metrics_url} every {interval:g} s, output in {out}')
    log = open(out / 'daemon.log', 'wb')
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    failures = []
    rows = []

    def stop_daemon():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                failures.append('daemon did not exit within 30 s of SIGTERM')
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    try:
        t_start = time.monotonic()
        while True:
            if proc.poll() is not None:
                print(f'soak: daemon exited during start-up with {proc.returncode}; see {out / "daemon.log"}', file=sys.stderr)
                return 2
            try:
                fetch(metrics_url)
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() - t_start > a.startup_timeout:
                    print(f'soak: {metrics_url} not reachable after {a.startup_timeout:.0f} s', file=sys.stderr)
                    stop_daemon()
                    return 2
                time.sleep(0.5)

        t0 = time.monotonic()
        last_progress_t, last_frames = t0, None
        base = None  # metrics at the end of warm-up
        while time.monotonic() - t0 < duration:
            time.sleep(interval)
            now = time.monotonic() - t0
            if proc.poll() is not None:
                failures.append(f'daemon exited with {proc.returncode} after {now:.0f} s')
                break
            try:
                ms = parse_metrics(fetch(metrics_url))
            except (urllib.error.URLError, OSError, ValueError) as e:
                failures.append(f'metrics unavailable at {now:.0f} s: {e}')
                break
            frames = metric_sum(ms, 'puppetcam_frames_total')
            if last_frames is None or frames > last_frames:
                last_progress_t, last_frames = time.monotonic(), frames
            elif time.monotonic() - last_progress_t > a.stall_seconds:
                failures.append(f'stalled: no frame for {time.monotonic() - last_progress_t:.0f} s at {now:.0f} s (frames_total {frames:.0f})')
                break
            row = {
                't_s': round(now, 2),
                'rss_kb': rss_kb(proc.pid),
                'frames_total': frames,
                'fps': metric_sum(ms, 'puppetcam_fps'),
                'dropped_total': metric_sum(ms, 'puppetcam_dropped_frames_total'),
                'errors_total': metric_sum(ms, 'puppetcam_errors_total'),
                'face_lost_total': metric_sum(ms, 'puppetcam_face_lost_total'),
                'healthy': metric_sum(ms, 'puppetcam_healthy'),
            }
            if base is None and now >= warmup:
                base = (row, ms)
            rows.append((row, ms))
            print(f'soak: {now:6.0f} s  fps {row["fps"]:5.1f}  frames {frames:8.0f}  rss {row["rss_kb"] or 0:8d} kB  '
                  f'drops {row["dropped_total"]:.0f}  errors {row["errors_total"]:.0f}', flush=True)
    finally:
        rc = stop_daemon()
        log.close()
    if rc not in (0, None):
        failures.append(f'daemon exit status {rc} after SIGTERM (expected 0)')

    summary = {'duration_s': duration, 'samples': len(rows), 'command': cmd}
    if rows:
        base_row, base_ms = base if base else rows[0]
        last_row, last_ms = rows[-1]
        rss = [r['rss_kb'] for r, _ in rows if r['rss_kb'] is not None]
        after = [r['rss_kb'] for r, _ in rows if r['t_s'] >= base_row['t_s'] and r['rss_kb'] is not None]
        # End RSS: median of the last three samples, so one transient spike does not decide.
        tail = sorted(after[-3:]) if after else [0]
        rss_end = tail[len(tail) // 2]
        summary['rss_kb'] = {'start': base_row['rss_kb'], 'max': max(rss) if rss else None, 'end': rss_end}
        summary['frames'] = last_row['frames_total'] - base_row['frames_total']
        summary['dropped'] = last_row['dropped_total'] - base_row['dropped_total']
        summary['errors'] = last_row['errors_total'] - base_row['errors_total']
        summary['face_lost'] = last_row['face_lost_total'] - base_row['face_lost_total']
        summary['mean_fps'] = summary['frames'] / max(1e-9, last_row['t_s'] - base_row['t_s']) if last_row is not base_row else None
        lat = {}
        for stage in ('end_to_end', 'capture', 'face', 'generator', 'output'):
            b0, b1 = buckets(base_ms, stage), buckets(last_ms, stage)
            if last_row is base_row:
                b0 = []
            lat[stage] = {f'p{int(q * 100)}_ms': (None if (v := quantile(q, b0, b1)) is None else round(v * 1000, 2))
                          for q in (0.5, 0.95, 0.99)}
        summary['latency'] = lat
        growth_mb = ((rss_end or 0) - (base_row['rss_kb'] or 0)) / 1024.0
        summary['rss_growth_mb'] = round(growth_mb, 1)
        if base is None:
            failures.append(f'run ended before the {warmup:.0f} s warm-up: no baseline')
        if growth_mb > a.rss_growth_mb:
            failures.append(f'RSS grew {growth_mb:.1f} MB after warm-up (limit {a.rss_growth_mb:g} MB)')
        if summary['errors'] > a.max_errors:
            failures.append(f'{summary["errors"]:.0f} errors during the run (limit {a.max_errors})')
    else:
        failures.append('no samples taken')

    with open(out / 'samples.csv', 'w', newline='') as f:
        cols = ['t_s', 'rss_kb', 'frames_total', 'fps', 'dropped_total', 'errors_total', 'face_lost_total', 'healthy']
        w = csv.DictWriter(f, fieldnames=cols, extrasaction='ignore')
        w.writeheader()
        for r, _ in rows:
            w.writerow(r)
    summary['failures'] = failures
    summary['passed'] = not failures
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))

    print('\nsoak summary')
    if 'latency' in summary:
        e = summary['latency']['end_to_end']
        print(f'  frame time (end_to_end) p50 {e["p50_ms"]} ms  p95 {e["p95_ms"]} ms  p99 {e["p99_ms"]} ms')
        g = summary['latency']['generator']
        print(f'  generator               p50 {g["p50_ms"]} ms  p95 {g["p95_ms"]} ms  p99 {g["p99_ms"]} ms')
        r = summary['rss_kb']
        print(f'  RSS start {r["start"]} kB  max {r["max"]} kB  end {r["end"]} kB  (growth {summary["rss_growth_mb"]} MB)')
        print(f'  frames {summary["frames"]:.0f}  mean fps {summary["mean_fps"] or 0:.1f}  dropped {summary["dropped"]:.0f}  '
              f'errors {summary["errors"]:.0f}  face lost {summary["face_lost"]:.0f}')
    for fl in failures:
        print(f'  FAIL: {fl}')
    print(f'  {"PASS" if not failures else "FAIL"}  ({out})')
    return 0 if not failures else 1


if __name__ == '__main__':
    sys.exit(main())
