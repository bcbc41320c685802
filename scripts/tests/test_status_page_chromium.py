"""Browser check of the status page: a real headless Chromium loads the page served by
examples/service_demo.rs (fake pipeline stats, real HTTP service), runs its JS, and the DOM must
show the fps, execution provider and the loud fallback warning; a screenshot is saved for a human
look (target/test-artifacts/status_page.png).

Skips with the reason when chromium (Debian: `apt-get install -y chromium`) or the demo binary
(`cargo build --example service_demo`) is missing. Runs under pytest or as a plain script.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get('PUPPETCAM_SERVICE_DEMO', ROOT / 'target/debug/examples/service_demo'))
ARTIFACTS = Path(os.environ.get('PUPPETCAM_TEST_ARTIFACTS', ROOT / 'target/test-artifacts'))
FALLBACK = 'TensorRT: libnvinfer.so.10 not found; CUDA: no device'


class Skip(Exception):
    pass


def skip(reason):
    try:
        import pytest
        pytest.skip(reason)
    except ImportError:
        raise Skip(reason)


def chromium():
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        p = shutil.which(name)
        if p:
            return p
    skip('chromium not installed (apt-get install -y chromium)')


def start_demo(*extra):
    if not os.access(DEMO, os.X_OK):
        skip(f'{DEMO} missing (cargo build --example service_demo)')
    p = subprocess.Popen([str(DEMO), '--bind', '127.0.0.1:0', '--seconds', '60', *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    m = re.match(r'listening on (http://\S+/)', line)
    if not m:
        p.kill()
        raise AssertionError(f'demo did not report its address: {line!r}')
    return p, m.group(1)


def run_chromium(url, *mode):
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync',
               f'--user-data-dir={profile}', '--hide-scrollbars', '--window-size=1280,800',
               # Lets the page's fetch('/status.json') + render run before the DOM is dumped.
               '--virtual-time-budget=3000', *mode, url]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout


def element_text(dom, el_id):
    m = re.search(rf'<(\w+)[^>]*\bid="{el_id}"[^>]*>(.*?)</\1>', dom, re.S)
    assert m, f'#{el_id} not in the DOM'
    return m.group(0), re.sub(r'<[^>]+>', '', m.group(2)).strip()


def test_status_page_shows_live_values_and_fallback():
    demo, url = start_demo('--ep', 'CPU', '--fallback', FALLBACK, '--avatar', 'mona-lisa', '--fps', '25')
    try:
        dom = run_chromium(url, '--dump-dom')
        _, fps = element_text(dom, 'fps')
        assert re.fullmatch(r'\d+\.\d', fps) and float(fps) > 0, f'fps shows {fps!r}'
        assert element_text(dom, 'ep')[1] == 'CPU'
        tag, text = element_text(dom, 'fallback')
        assert 'display: block' in tag, f'fallback warning hidden: {tag}'
        assert FALLBACK in text and 'running on CPU' in text
        assert element_text(dom, 'health')[1] == 'healthy'
        assert element_text(dom, 'avatar')[1] == 'avatar: mona-lisa'
        _, stages = element_text(dom, 'stages')
        for stage in ('capture', 'face', 'generator', 'output', 'end_to_end'):
            assert stage in stages, stages
        assert 'src="/preview"' in dom, 'live preview not attached'

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / 'status_page.png'
        if shot.exists():
            shot.unlink()
        run_chromium(url, f'--screenshot={shot}')
        data = shot.read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n', 'screenshot is not a PNG'
        # A blank page compresses to a few kB; the rendered page with preview is far larger.
        assert len(data) > 30_000, f'screenshot suspiciously small ({len(data)} bytes)'
    finally:
        demo.terminate()
        demo.wait(timeout=30)
    assert demo.returncode == 0, f'demo exit status {demo.returncode} on SIGTERM'


def test_no_fallback_warning_without_fallback():
    demo, url = start_demo('--ep', 'CUDA')
    try:
        dom = run_chromium(url, '--dump-dom')
        assert element_text(dom, 'ep')[1] == 'CUDA'
        tag, _ = element_text(dom, 'fallback')
        assert 'display: block' not in tag, tag
    finally:
        demo.terminate()
        demo.wait(timeout=30)


if __name__ == '__main__':
    failed = 0
    for name, fn in list(globals().items()):
        if name.startswith('test_') and callable(fn):
            try:
                fn()
                print(f'{name}: ok')
            except Skip as s:
                print(f'{name}: SKIPPED: {s}')
            except AssertionError as e:
                failed += 1
                print(f'{name}: FAILED: {e}')
    sys.exit(1 if failed else 0)
