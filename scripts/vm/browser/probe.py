#!/usr/bin/env python3
"""Drives a real headless browser for the browser VM test (scripts/vm/browser-guest-test.sh).

`puppetcam-browser-probe chromium|firefox URL` starts the browser on URL, then reads one command
a line on stdin and answers each with one JSON line on stdout, so the shell test can hold the
browser (and its camera stream) open while it restarts the daemon:

    call FN ARG...      window.probe.FN(ARG...) on the page (numbers stay numbers)
    reload              reload the page, wait until window.probe is there again
    screenshot PATH     PNG of the browser's view
    version             the browser's name and version
    quit

Chromium is driven over its DevTools protocol (a websocket), Firefox over Marionette (Debian has
no geckodriver); both are a few requests, so only the standard library is needed.
`puppetcam-browser-probe frame-mean DEVICE` prints the mean RGB of one frame read from DEVICE
with a plain read() (YUYV or YU12, BT.601 limited range, as the sink writes it), the reference
the canvas's mean colour is compared with.
"""
import base64
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

# The emulated CPU of the VM is slow: a page load or getUserMedia can take tens of seconds.
SCRIPT_TIMEOUT_S = 600
START_TIMEOUT_S = 900


def log(msg):
    print(f"probe: {msg}", file=sys.stderr, flush=True)


def wait_port(port, deadline, proc):
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing listens on port {port} after {START_TIMEOUT_S} s")


def free_port():
    """A port nothing listens on: a browser that has not quite exited yet may still hold the
    previous one, and the next driver would talk to it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc):
    """Ends a browser and every process it started (its own session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def call_script(fn, args):
    # The result travels as a JSON string: both protocols then hand it back untouched.
    return (
        "const done = arguments[arguments.length - 1];"
        "if (!window.probe) { done(JSON.stringify({ok: false, error: 'page not loaded: ' + document.title})); return; }"
        f"window.probe[{json.dumps(fn)}](...{json.dumps(args)})"
        ".then(r => done(JSON.stringify(r)), e => done(JSON.stringify({ok: false, error: String(e)})));"
    )


class WebSocket:
    """The least of RFC 6455 a DevTools client needs: text frames, fragmentation, ping."""

    def __init__(self, url):
        rest = url.split("://", 1)[1]
        hostport, path = rest.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=START_TIMEOUT_S)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("DevTools closed the connection during the handshake")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"DevTools refused the websocket: {head[:200]!r}")

    def read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("DevTools closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text, opcode=0x1):
        data = text.encode() if isinstance(text, str) else text
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self):
        message = b""
        while True:
            b0, b1 = self.read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self.read(2), "big")
            elif n == 127:
                n = int.from_bytes(self.read(8), "big")
            payload = self.read(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self.send(payload, opcode=0xA)
                continue
            if opcode == 0x8:
                raise RuntimeError("DevTools closed the websocket")
            message += payload
            if b0 & 0x80:
                return message.decode()


class Chromium:
    """The DevTools protocol of `chromium --remote-debugging-port`. (chromedriver gave up with
    "unable to connect to renderer" while Chromium was still starting on the emulated CPU.)"""

    def __init__(self, url, profile):
        self.PORT = free_port()
        args = [
            shutil.which("chromium") or "/usr/bin/chromium",
            "--headless=new",
            # The VM's root is a tmpfs without the set-up the sandbox wants; not what is tested.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            # Answers the camera permission prompt with yes; the camera itself is the real one.
            "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--no-first-run",
            # Less start-up work on the emulated CPU: no background services, updaters, crash
            # reporter or audio (none of them is what is tested).
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-breakpad",
            "--disable-features=Translate,MediaRouter,OptimizationHints,DialMediaRouteProvider",
            "--mute-audio",
            "--password-store=basic",
            "--disable-extensions",
            "--window-size=820,440",  # headless Chromium showed 157 px of 300: taller window
            f"--user-data-dir={profile}",
            # One process instead of a browser, a zygote, a renderer, a network and a GPU
            # process: on the emulated CPU each of them takes minutes to start, and the network
            # service was restarted for being too slow.
            "--single-process",
            "--no-zygote",
            f"--remote-debugging-port={self.PORT}",
            "--enable-logging=stderr",
            url,
        ]
        self.proc = subprocess.Popen(args, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True)
        deadline = time.time() + START_TIMEOUT_S
        wait_port(self.PORT, deadline, self.proc)
        self.version = "Chromium " + self.http("/json/version")["Browser"].split("/", 1)[-1]
        while True:
            pages = [t for t in self.http("/json/list") if t.get("type") == "page"]
            if pages:
                break
            if time.time() > deadline:
                raise RuntimeError("Chromium opened no page")
            time.sleep(1)
        self.ws = WebSocket(pages[0]["webSocketDebuggerUrl"])
        self.msgid = 0

    def http(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.PORT}{path}", timeout=60) as resp:
            return json.load(resp)

    def cmd(self, method, params):
        self.msgid += 1
        self.ws.sock.settimeout(SCRIPT_TIMEOUT_S + 30)
        self.ws.send(json.dumps({"id": self.msgid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.msgid:
                break
        if "error" in msg:
            raise RuntimeError(f"devtools {method}: {msg['error'].get('message')}")
        return msg["result"]

    def call(self, fn, args):
        expr = (
            "window.probe ? "
            f"window.probe[{json.dumps(fn)}](...{json.dumps(args)})"
            ".then(r => JSON.stringify(r), e => JSON.stringify({ok: false, error: String(e)}))"
            " : JSON.stringify({ok: false, error: 'page not loaded: ' + document.title})"
        )
        r = self.cmd("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script: {r['exceptionDetails'].get('text')}")
        return r["result"]["value"]

    def reload(self):
        self.cmd("Page.reload", {})

    def screenshot(self):
        return base64.b64decode(self.cmd("Page.captureScreenshot", {"format": "png"})["data"])

    def quit(self):
        stop(self.proc)


class Firefox:
    """Marionette: length-prefixed JSON over TCP, [0, id, command, params] -> [1, id, error, result]."""

    def __init__(self, url, profile):
        self.PORT = free_port()
        prefs = {
            "marionette.port": self.PORT,
            # No prompt for the camera; the real camera, not Firefox's fake one.
            "media.navigator.permission.disabled": True,
            "media.navigator.streams.fake": False,
            # The V4L2 camera directly, as on a desktop without the camera portal.
            "media.webrtc.camera.allow-pipewire": False,
            "media.autoplay.default": 0,
            "browser.shell.checkDefaultBrowser": False,
            "browser.startup.homepage_override.mstone": "ignore",
            "datareporting.policy.dataSubmissionEnabled": False,
            "toolkit.telemetry.reportingpolicy.firstRun": False,
            "app.update.disabledForTesting": True,
            "browser.aboutwelcome.enabled": False,
            # Fewer processes and no background services: each costs minutes on the emulated
            # CPU, and none is what is tested.
            "fission.autostart": False,
            "dom.ipc.processCount": 1,
            "dom.ipc.processPrelaunch.enabled": False,
            "network.process.enabled": False,
            "browser.safebrowsing.malware.enabled": False,
            "browser.safebrowsing.phishing.enabled": False,
            "browser.safebrowsing.downloads.enabled": False,
            "extensions.update.enabled": False,
            "app.normandy.enabled": False,
            "browser.newtabpage.enabled": False,
            "browser.startup.page": 0,
            "network.captive-portal-service.enabled": False,
            "network.connectivity-service.enabled": False,
            "toolkit.telemetry.enabled": False,
            "datareporting.healthreport.uploadEnabled": False,
            "browser.search.update": False,
            "browser.discovery.enabled": False,
        }
        with open(os.path.join(profile, "user.js"), "w") as f:
            for k, v in prefs.items():
                f.write(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n")
        self.proc = subprocess.Popen(
            ["firefox-esr", "--headless", "--marionette", "--no-remote", "--profile", profile,
             "--width", "820", "--height", "300", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=sys.stderr, start_new_session=True,
        )
        wait_port(self.PORT, time.time() + START_TIMEOUT_S, self.proc)
        self.sock = socket.create_connection(("127.0.0.1", self.PORT), timeout=START_TIMEOUT_S)
        self.buf = b""
        self.msgid = 0
        hello = self.recv()
        if hello.get("marionetteProtocol") != 3:
            raise RuntimeError(f"unexpected Marionette hello {hello}")
        r = self.cmd("WebDriver:NewSession", {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": True}}})
        self.version = "Firefox " + r["capabilities"].get("browserVersion", "?")
        self.cmd("WebDriver:SetTimeouts", {"script": SCRIPT_TIMEOUT_S * 1000, "pageLoad": START_TIMEOUT_S * 1000})
        self.cmd("WebDriver:Navigate", {"url": url})

    def recv(self):
        while True:
            if b":" in self.buf:
                n, rest = self.buf.split(b":", 1)
                if len(rest) >= int(n):
                    self.buf = rest[int(n):]
                    return json.loads(rest[:int(n)])
            self.more()

    def more(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise RuntimeError("Marionette closed the connection")
        self.buf += chunk

    def cmd(self, name, params):
        self.msgid += 1
        body = json.dumps([0, self.msgid, name, params]).encode()
        self.sock.settimeout(SCRIPT_TIMEOUT_S + 30)
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        while True:
            msg = self.recv()
            if msg[0] == 1 and msg[1] == self.msgid:
                break
        if msg[2]:
            raise RuntimeError(f"marionette {name}: {msg[2].get('error')}: {str(msg[2].get('message', ''))[:300]}")
        return msg[3]

    def call(self, fn, args):
        return self.cmd("WebDriver:ExecuteAsyncScript", {"script": call_script(fn, args), "args": []})["value"]

    def reload(self):
        self.cmd("WebDriver:Refresh", {})

    def screenshot(self):
        return base64.b64decode(self.cmd("WebDriver:TakeScreenshot", {"full": False, "hash": False})["value"])

    def quit(self):
        stop(self.proc)


def wait_page(b):
    """After a (re)load: until window.probe answers."""
    deadline = time.time() + START_TIMEOUT_S
    while True:
        try:
            r = json.loads(b.call("list", []))
            if isinstance(r, list):
                return
        except RuntimeError:
            pass
        if time.time() > deadline:
            raise RuntimeError("the page did not load")
        time.sleep(1)


def serve(kind, url):
    profile = tempfile.mkdtemp(prefix=f"probe-{kind}-")
    t = time.time()
    b = (Chromium if kind == "chromium" else Firefox)(url, profile)
    wait_page(b)
    log(f"{b.version} up with the page in {time.time() - t:.0f} s")
    print(json.dumps({"ok": True, "browser": b.version, "startup_s": round(time.time() - t, 1)}), flush=True)
    for line in sys.stdin:
        words = shlex.split(line)
        if not words:
            continue
        t = time.time()
        try:
            if words[0] == "call":
                args = [int(a) if a.lstrip("-").isdigit() else a for a in words[2:]]
                res = json.loads(b.call(words[1], args))
            elif words[0] == "reload":
                b.reload()
                wait_page(b)
                res = {"ok": True}
            elif words[0] == "screenshot":
                png = b.screenshot()
                with open(words[1], "wb") as f:
                    f.write(png)
                res = {"ok": True, "bytes": len(png)}
            elif words[0] == "version":
                res = {"ok": True, "browser": b.version}
            elif words[0] == "quit":
                b.quit()
                print(json.dumps({"ok": True}), flush=True)
                return
            else:
                res = {"ok": False, "error": f"unknown command {words[0]}"}
        except Exception as e:  # noqa: BLE001 - every failure is one answer line, the test goes on
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        if isinstance(res, dict):
            res.setdefault("took_s", round(time.time() - t, 1))
        print(json.dumps(res), flush=True)
    b.quit()


def clamp(x):
    return 0 if x < 0 else 255 if x > 255 else x


def frame_mean(device):
    """Mean RGB of one frame of `device`, subsampled every 8th pixel in both directions."""
    fmt = subprocess.run(["v4l2-ctl", "-d", device, "--get-fmt-video"], capture_output=True, text=True, check=True).stdout
    info = {}
    for line in fmt.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    w, h = (int(x) for x in info["Width/Height"].split("/"))
    fourcc = info["Pixel Format"].split("'")[1]
    # read(), not v4l2-ctl's mmap streaming: v4l2loopback 0.12.7 resets the buffer state of every
    # opener on a REQBUFS, and a v4l2-ctl stream run between a Chromium stream's stop and the next
    # getUserMedia left Chromium without an answer (twice in a row in the browser test); read()
    # copies the latest frame without negotiating buffers. The caller puts a deadline on it.
    fd = os.open(device, os.O_RDONLY)
    try:
        raw = os.read(fd, w * h * 2)
    finally:
        os.close(fd)
    if fourcc == "YUYV":
        ys = lambda x, y: raw[2 * (y * w + x)]
        us = lambda x, y: raw[2 * (y * w + (x & ~1)) + 1]
        vs = lambda x, y: raw[2 * (y * w + (x & ~1)) + 3]
    elif fourcc == "YU12":
        cw = w // 2
        u0, v0 = w * h, w * h + cw * (h // 2)
        ys = lambda x, y: raw[y * w + x]
        us = lambda x, y: raw[u0 + (y // 2) * cw + x // 2]
        vs = lambda x, y: raw[v0 + (y // 2) * cw + x // 2]
    else:
        raise SystemExit(f"frame-mean: unsupported pixel format {fourcc}")
    need = w * h * 2 if fourcc == "YUYV" else w * h * 3 // 2
    if len(raw) < need:
        raise SystemExit(f"frame-mean: {len(raw)} bytes, a {w}x{h} {fourcc} frame needs {need}")
    sums, n = [0.0, 0.0, 0.0], 0
    for y in range(0, h, 8):
        for x in range(0, w, 8):
            c, d, e = ys(x, y) - 16, us(x, y) - 128, vs(x, y) - 128
            sums[0] += clamp(1.164 * c + 1.596 * e)
            sums[1] += clamp(1.164 * c - 0.392 * d - 0.813 * e)
            sums[2] += clamp(1.164 * c + 2.017 * d)
            n += 1
    print(json.dumps({"size": [w, h], "fourcc": fourcc, "mean": [round(s / n, 1) for s in sums]}))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "frame-mean":
        frame_mean(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] in ("chromium", "firefox"):
        try:
            serve(sys.argv[1], sys.argv[2])
        except Exception as e:  # noqa: BLE001 - the test reads why from the one line
            print(json.dumps({"ok": False, "error": f"browser start: {type(e).__name__}: {e}"}), flush=True)
            sys.exit(1)
    else:
        sys.exit("usage: puppetcam-browser-probe chromium|firefox URL  |  frame-mean /dev/videoN")


if __name__ == "__main__":
    main()
