//! v4l2loopback round trip: writes numbered colour-block frames through `V4l2Sink` and reads them
//! back as a CAPTURE client (what Zoom/Chrome do), checking every frame decodes to the expected
//! counter and colours. Run inside the test VM by scripts/vm/run-v4l2-test.sh, or on a machine
//! with v4l2loopback loaded: `cargo run --example v4l2_roundtrip -- /dev/video10`.
//!
//! Usage: v4l2_roundtrip [DEVICE] [--frames N] [--size WxH]
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use puppetcam::core::types::Frame;
use puppetcam::sink::v4l2::{fourcc, PixFormat, V4l2Sink};
use puppetcam::sink::FrameSink;
use v4l::buffer::Type;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::Device;

/// 4x4 blocks: the first 8 hold the counter's base-8 digits, the last 8 their complement, so a
/// frame torn between two writes or with swapped chroma cannot decode to a valid counter.
const GRID: usize = 4;
const LO: u8 = 48;
const HI: u8 = 208;
/// Largest per-channel error we accept after RGB -> YUV (sink) -> RGB (here): rounding in both
/// directions stays within a few levels; a wrong matrix or swapped U/V is off by 50+.
const TOLERANCE: i32 = 12;
/// How long the writer waits for the reader to see a frame before writing it again. Generous:
/// the VM emulates the CPU, and a rewrite while the reader copies could tear a frame.
const ACK_WAIT: Duration = Duration::from_secs(3);
const FRAME_DEADLINE: Duration = Duration::from_secs(20);

fn palette(i: usize) -> [u8; 3] {
    let c = |bit: usize| if i & bit != 0 { HI } else { LO };
    [c(4), c(2), c(1)]
}

fn digits(counter: u32) -> [usize; GRID * GRID] {
    let mut d = [0; GRID * GRID];
    for b in 0..8 {
        d[b] = ((counter >> (3 * b)) & 7) as usize;
        d[b + 8] = 7 - d[b];
    }
    d
}

fn make_frame(w: u32, h: u32, counter: u32) -> Frame {
    let mut f = Frame::black(w, h);
    f.seq = counter as u64;
    let d = digits(counter);
    let (w, h) = (w as usize, h as usize);
    // One row per block row, copied down: this runs unoptimised under an emulated CPU.
    for (y, row) in f.data.chunks_exact_mut(3 * w).enumerate() {
        let by = y * GRID / h;
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            px.copy_from_slice(&palette(d[by * GRID + x * GRID / w]));
        }
    }
    f
}

/// What one captured frame turned out to be.
#[derive(Debug, PartialEq)]
enum Seen {
    /// The sink's initial black frame.
    Black,
    Counter(u32),
}

/// Reads pixel (x, y) of a captured YUYV or I420 frame back to RGB (BT.601 limited range).
fn pixel(fmt: PixFormat, buf: &[u8], w: usize, h: usize, x: usize, y: usize) -> [i32; 3] {
    let (yy, u, v) = match fmt {
        PixFormat::Yuyv => {
            let base = 2 * (y * w + (x & !1));
            (buf[2 * (y * w + x)], buf[base + 1], buf[base + 3])
        }
        PixFormat::I420 => {
            let c = (y / 2) * (w / 2) + x / 2;
            (buf[y * w + x], buf[w * h + c], buf[w * h + (w / 2) * (h / 2) + c])
        }
    };
    let (c, d, e) = (yy as f32 - 16.0, u as f32 - 128.0, v as f32 - 128.0);
    let r = 1.164 * c + 1.596 * e;
    let g = 1.164 * c - 0.392 * d - 0.813 * e;
    let b = 1.164 * c + 2.017 * d;
    [r, g, b].map(|v| v.round().clamp(0.0, 255.0) as i32)
}

/// Decodes a captured frame; Err says why it is not a valid test frame. Also returns the largest
/// colour error seen.
fn decode(fmt: PixFormat, buf: &[u8], w: usize, h: usize) -> Result<(Seen, i32), String> {
    if buf.len() < fmt.frame_size(w as u32, h as u32) {
        return Err(format!("short frame: {} bytes", buf.len()));
    }
    let near = |p: [i32; 3], q: [u8; 3]| (0..3).map(|i| (p[i] - q[i] as i32).abs()).max().unwrap();
    // Black frame: every sample close to (0, 0, 0).
    let mut black_err = 0;
    for y in (0..h).step_by(11) {
        for x in (0..w).step_by(13) {
            black_err = black_err.max(near(pixel(fmt, buf, w, h, x, y), [0, 0, 0]));
        }
    }
    if black_err <= TOLERANCE {
        return Ok((Seen::Black, black_err));
    }
    let (bw, bh) = (w / GRID, h / GRID);
    let mut d = [0usize; GRID * GRID];
    let mut max_err = 0;
    for (b, slot) in d.iter_mut().enumerate() {
        let (x0, y0) = ((b % GRID) * bw, (b / GRID) * bh);
        // Stay 4 px inside the block: chroma subsampling legitimately blends at the edges.
        let mut idx = None;
        for y in (y0 + 4..y0 + bh - 4).step_by(6) {
            for x in (x0 + 4..x0 + bw - 4).step_by(5) {
                let p = pixel(fmt, buf, w, h, x, y);
                let (best, err) = (0..8).map(|i| (i, near(p, palette(i)))).min_by_key(|&(_, e)| e).unwrap();
                if err > TOLERANCE {
                    return Err(format!("block {b} pixel ({x},{y}) = {p:?} is {err} off the nearest palette colour"));
                }
                if *idx.get_or_insert(best) != best {
                    return Err(format!("block {b} is not uniform: colours {} and {best}", idx.unwrap()));
                }
                max_err = max_err.max(err);
            }
        }
        *slot = idx.ok_or("empty block")?;
    }
    let counter = (0..8).fold(0u32, |acc, b| acc | (d[b] as u32) << (3 * b));
    if digits(counter) != d {
        return Err(format!("check digits do not match: {d:?}"));
    }
    Ok((Seen::Counter(counter), max_err))
}

struct Outcome {
    seen: Vec<u32>,
    black: usize,
    max_err: i32,
    fps_reported: Option<(u32, u32)>,
    /// Time spent copying + decoding frames (vs waiting in DQBUF), to see where a slow VM run goes.
    decode_time: Duration,
}

/// The CAPTURE side: what a browser or Zoom does, minus the UI.
fn reader(dev: PathBuf, fmt: PixFormat, w: u32, h: u32, last: u32, ack: mpsc::Sender<u32>) -> Result<Outcome, String> {
    let d = Device::with_path(&dev).map_err(|e| format!("reader open: {e}"))?;
    let caps = d.query_caps().map_err(|e| format!("reader QUERYCAP: {e}"))?;
    if !caps.capabilities.contains(v4l::capability::Flags::VIDEO_CAPTURE) {
        return Err(format!("device does not advertise CAPTURE after the producer wrote: {}", caps.capabilities));
    }
    let got = d.format().map_err(|e| format!("reader G_FMT: {e}"))?;
    if got.width != w || got.height != h || got.fourcc != fourcc(fmt) {
        return Err(format!("reader sees {}x{} {} instead of {w}x{h} {}", got.width, got.height, got.fourcc, fourcc(fmt)));
    }
    let fps_reported = d.params().ok().map(|p| (p.interval.numerator, p.interval.denominator));
    let mut stream = v4l::io::mmap::Stream::with_buffers(&d, Type::VideoCapture, 4).map_err(|e| format!("reader REQBUFS/mmap: {e}"))?;
    stream.set_timeout(Duration::from_secs(10));
    let mut out = Outcome { seen: Vec::new(), black: 0, max_err: 0, fps_reported, decode_time: Duration::ZERO };
    loop {
        let (buf, meta) = stream.next().map_err(|e| format!("reader DQBUF after {:?}: {e}", out.seen.last()))?;
        let t = Instant::now();
        // Copy first: with write() the producer owns no buffers, so a later write into this slot
        // would change the pixels under a slow decode.
        let frame = buf[..(meta.bytesused as usize).min(buf.len())].to_vec();
        let (what, err) = decode(fmt, &frame, w as usize, h as usize)
            .map_err(|e| format!("undecodable frame (after {:?}): {e}", out.seen.last()))?;
        out.max_err = out.max_err.max(err);
        out.decode_time += t.elapsed();
        match what {
            Seen::Black => out.black += 1,
            Seen::Counter(c) => {
                if let Some(&prev) = out.seen.last() {
                    if c < prev {
                        return Err(format!("frame {c} arrived after frame {prev}"));
                    }
                }
                if out.seen.last() != Some(&c) {
                    out.seen.push(c);
                }
                let _ = ack.send(c);
                if c == last {
                    return Ok(out);
                }
            }
        }
    }
}

fn run_format(dev: &Path, fmt: PixFormat, w: u32, h: u32, n: u32) -> Result<String, String> {
    let t0 = Instant::now();
    let mut sink = V4l2Sink::open(dev, w, h, 30, fmt).map_err(|e| format!("V4l2Sink::open: {e}"))?;

    // While we write, a second producer must be refused with a clear error, not corrupt the stream.
    let other = if fmt == PixFormat::Yuyv { PixFormat::I420 } else { PixFormat::Yuyv };
    match V4l2Sink::open(dev, w, h, 30, other) {
        Ok(_) => return Err("a second producer could open the device while the first was writing".into()),
        Err(e) => println!("roundtrip: second producer refused as expected: {e}"),
    }

    let (tx, rx) = mpsc::channel();
    let dev2 = dev.to_path_buf();
    let reader = thread::spawn(move || reader(dev2, fmt, w, h, n + 7, tx));
    let mut writes = 0u64;
    let mut write_time = Duration::ZERO;
    // Counters start at 7 so that no frame is all one colour.
    for c in 7..n + 8 {
        let t = Instant::now();
        let frame = make_frame(w, h, c);
        write_time += t.elapsed();
        let deadline = Instant::now() + FRAME_DEADLINE;
        'frame: loop {
            let t = Instant::now();
            sink.write(&frame).map_err(|e| format!("write frame {c}: {e}"))?;
            write_time += t.elapsed();
            writes += 1;
            let wait_until = Instant::now() + ACK_WAIT;
            while let Some(left) = wait_until.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(seen) if seen >= c => break 'frame,
                    Ok(_) => {}
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    // The reader stopped; its own error explains why.
                    Err(mpsc::RecvTimeoutError::Disconnected) => break 'frame,
                }
            }
            if Instant::now() > deadline {
                return Err(format!("reader never saw frame {c}"));
            }
        }
    }
    let out = reader.join().map_err(|_| "reader panicked".to_string())??;
    sink.finish().map_err(|e| e.to_string())?;
    if out.seen.len() != n as usize + 1 {
        return Err(format!("reader saw {} distinct frames, expected {}: {:?}", out.seen.len(), n + 1, out.seen));
    }
    if out.fps_reported != Some((1, 30)) {
        return Err(format!("consumer sees frame interval {:?}, expected 1/30", out.fps_reported));
    }
    Ok(format!(
        "{fmt} {w}x{h}: {} frames verified ({} writes, {} black, max colour error {}) in {:.1} s \
         (make+convert+write {:.1} s, reader copy+decode {:.1} s)",
        out.seen.len(),
        writes,
        out.black,
        out.max_err,
        t0.elapsed().as_secs_f32(),
        write_time.as_secs_f32(),
        out.decode_time.as_secs_f32()
    ))
}

fn main() -> ExitCode {
    let mut dev = PathBuf::from("/dev/video10");
    let (mut w, mut h, mut n) = (640u32, 480u32, 12u32);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--frames" => n = args.next().and_then(|v| v.parse().ok()).unwrap_or(n),
            "--size" => {
                if let Some((a, b)) = args.next().as_deref().and_then(|v| v.split_once('x')) {
                    w = a.parse().unwrap_or(w);
                    h = b.parse().unwrap_or(h);
                }
            }
            other => dev = PathBuf::from(other),
        }
    }

    // exclusive_caps=1: before any producer, the node must not look like a camera to consumers.
    match Device::with_path(&dev).and_then(|d| d.query_caps()) {
        Ok(c) if c.driver == "v4l2 loopback" => {
            println!("roundtrip: {} is `{}`, idle caps {}", dev.display(), c.card, c.capabilities);
            if c.capabilities.contains(v4l::capability::Flags::VIDEO_CAPTURE) {
                println!("roundtrip: FAIL idle device already advertises CAPTURE (exclusive_caps=1 not in effect?)");
                return ExitCode::FAILURE;
            }
        }
        Ok(c) => {
            println!("roundtrip: FAIL {} is driver `{}`, not v4l2loopback", dev.display(), c.driver);
            return ExitCode::FAILURE;
        }
        Err(e) => {
            println!("roundtrip: FAIL cannot open {}: {e}", dev.display());
            return ExitCode::FAILURE;
        }
    }
    println!("roundtrip: listed loopback devices: {:?}", puppetcam::sink::v4l2::list_loopback_devices());

    let mut ok = true;
    for fmt in [PixFormat::Yuyv, PixFormat::I420] {
        match run_format(&dev, fmt, w, h, n) {
            Ok(msg) => println!("roundtrip: ok {msg}"),
            Err(e) => {
                println!("roundtrip: FAIL {fmt}: {e}");
                ok = false;
            }
        }
    }
    if ok {
        println!("roundtrip: PASS");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_round_trip() {
        for c in [7u32, 8, 100, 0xabcdef] {
            let d = digits(c);
            assert_eq!((0..8).fold(0u32, |a, b| a | (d[b] as u32) << (3 * b)), c & 0xff_ffff);
        }
    }

    /// The checker must accept what the sink's converter produces and reject damaged frames,
    /// otherwise a PASS in the VM means nothing. Run with `cargo test --example v4l2_roundtrip`.
    #[test]
    fn decoder_accepts_good_and_rejects_bad_frames() {
        let (w, h) = (64u32, 48u32);
        for fmt in [PixFormat::Yuyv, PixFormat::I420] {
            let f = make_frame(w, h, 1234);
            let mut yuv = vec![0; fmt.frame_size(w, h)];
            puppetcam::core::colour::rgb_to_yuv_into(fmt, &f.data, w, h, &mut yuv).unwrap();
            let (seen, err) = decode(fmt, &yuv, w as usize, h as usize).unwrap();
            assert_eq!(seen, Seen::Counter(1234), "{fmt}");
            assert!(err <= 3, "{fmt}: {err}");

            let black = make_frame(w, h, 0);
            let mut b = vec![0; fmt.frame_size(w, h)];
            puppetcam::core::colour::rgb_to_yuv_into(fmt, &vec![0; black.data.len()], w, h, &mut b).unwrap();
            assert_eq!(decode(fmt, &b, w as usize, h as usize).unwrap().0, Seen::Black);

            // Swapped chroma (a U/V mix-up in the sink) must not pass.
            let mut swapped = yuv.clone();
            match fmt {
                PixFormat::Yuyv => swapped.chunks_exact_mut(4).for_each(|p| p.swap(1, 3)),
                PixFormat::I420 => {
                    let (y, c) = ((w * h) as usize, (w * h / 4) as usize);
                    let (u, v) = swapped[y..].split_at_mut(c);
                    u.swap_with_slice(v);
                }
            }
            assert!(decode(fmt, &swapped, w as usize, h as usize).is_err(), "{fmt}: swapped chroma accepted");
            // A frame torn between two counters fails the check digits or uniformity.
            let other = make_frame(w, h, 1235);
            let mut torn_rgb = f.data.clone();
            let half = torn_rgb.len() / 2;
            torn_rgb[half..].copy_from_slice(&other.data[half..]);
            let mut torn = vec![0; fmt.frame_size(w, h)];
            puppetcam::core::colour::rgb_to_yuv_into(fmt, &torn_rgb, w, h, &mut torn).unwrap();
            assert!(decode(fmt, &torn, w as usize, h as usize).is_err(), "{fmt}: torn frame accepted");
        }
    }
}
