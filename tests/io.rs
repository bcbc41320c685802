//! I/O integration tests: file, image and synthetic sources on real and broken inputs; y4m and
//! PNG sinks read back (and checked with ffprobe when it is installed).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use puppetcam::core::types::Frame;
use puppetcam::sink::{open_sink, y4m, FrameSink, SinkSpec};
use puppetcam::source::file::FileSource;
use puppetcam::source::synthetic::SyntheticSource;
use puppetcam::source::{open_source, FrameSource, SourceSpec};
use puppetcam::Error;

mod common;

/// Shared, read-only developer data (its MANIFEST.md; found as `tests/common` says): tests that
/// need it skip with a message where it is absent, and fail under CI=true.
fn shared(rel: &str) -> Option<PathBuf> {
    common::data(rel)
}

fn have_ffprobe() -> bool {
    Command::new("ffprobe").arg("-version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn file_source_real_video_counts_and_timestamps() {
    // lp_d0.mp4: 512x512, 25 fps, 78 frames (MANIFEST.md, counted by decoding).
    let Some(p) = shared("videos/lp_d0.mp4") else { return };
    let mut s = FileSource::open(&p, false, false).unwrap();
    assert!(s.describe().contains("512x512"), "{}", s.describe());
    let mut n = 0u64;
    let mut last: Option<Duration> = None;
    while let Some(f) = s.next_frame().unwrap() {
        assert_eq!((f.width, f.height), (512, 512));
        assert!(f.len_ok());
        assert_eq!(f.seq, n);
        if let Some(prev) = last {
            assert!(f.pts > prev, "timestamps must increase: {prev:?} then {:?} at frame {n}", f.pts);
            let step = f.pts - prev;
            assert!((step.as_secs_f64() - 0.04).abs() < 0.005, "25 fps file, step {step:?} at frame {n}");
        }
        last = Some(f.pts);
        n += 1;
    }
    assert_eq!(n, 78);
    let end = last.unwrap().as_secs_f64();
    assert!((end - 77.0 / 25.0).abs() < 0.01, "last pts {end}");
    assert!(s.next_frame().unwrap().is_none(), "stays at the end");
}

#[test]
fn file_source_loops_with_increasing_timestamps() {
    let Some(p) = shared("videos/lp_d0.mp4") else { return };
    let mut s = open_source(&SourceSpec::File { path: p, looping: true, realtime: false }).unwrap();
    let mut last = None;
    for i in 0..(78 + 10) {
        let f = s.next_frame().unwrap().expect("looping never ends");
        if let Some(prev) = last {
            assert!(f.pts > prev, "frame {i}");
        }
        if i == 78 {
            // First frame of the second pass: one frame step after the last of the first.
            assert!((f.pts.as_secs_f64() - 78.0 / 25.0).abs() < 0.01, "{:?}", f.pts);
        }
        last = Some(f.pts);
    }
}

#[test]
fn file_source_realtime_paces_by_timestamps() {
    let Some(p) = shared("videos/lp_d0.mp4") else { return };
    let mut s = FileSource::open(&p, false, true).unwrap();
    let t0 = std::time::Instant::now();
    for _ in 0..6 {
        s.next_frame().unwrap().unwrap();
    }
    // 6 frames span 5 steps of 40 ms.
    assert!(t0.elapsed() >= Duration::from_millis(190), "{:?}", t0.elapsed());
}

#[test]
fn corrupt_video_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("garbage.mp4");
    let mut f = std::fs::File::create(&p).unwrap();
    // Deterministic garbage, plus an MP4-looking start so the demuxer actually tries.
    let mut bytes: Vec<u8> = b"\x00\x00\x00\x18ftypisom".to_vec();
    bytes.extend((0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    f.write_all(&bytes).unwrap();
    drop(f);
    let e = FileSource::open(&p, false, false).err().expect("garbage must not open");
    assert!(matches!(e, Error::Source(_)), "{e:?}");
    assert!(e.to_string().contains("garbage.mp4"), "{e}");
    // Empty file too.
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(FileSource::open(&empty, false, false), Err(Error::Source(_))));
}

#[test]
fn missing_files_are_io_errors() {
    let e = FileSource::open(Path::new("/nonexistent/clip.mp4"), false, false).err().unwrap();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/clip.mp4"));
    let e = open_source(&SourceSpec::Image { path: "/nonexistent/p.jpg".into(), fps: 30 }).err().unwrap();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    let dir = tempfile::tempdir().unwrap();
    assert!(FileSource::open(dir.path(), false, false).is_err(), "a directory is not a video");
}

#[test]
fn image_source_repeats_a_portrait() {
    let Some(p) = shared("portraits/lp_s12.jpg") else { return };
    // lp_s12.jpg is 375x500 (MANIFEST.md).
    let mut s = puppetcam::source::image::ImageSource::unpaced(&p, 25).unwrap();
    let a = s.next_frame().unwrap().unwrap();
    let b = s.next_frame().unwrap().unwrap();
    assert_eq!((a.width, a.height), (375, 500));
    assert_eq!(a.data, b.data);
    assert_eq!((a.seq, b.seq), (0, 1));
    assert_eq!(b.pts, Duration::from_millis(40));
    // Garbage bytes with an image name are an error, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"not a jpeg at all").unwrap();
    let e = open_source(&SourceSpec::Image { path: bad, fps: 30 }).err().unwrap();
    assert!(e.to_string().contains("bad.jpg"), "{e}");
}

#[test]
fn image_colour_order_is_rgb() {
    // Write a known BGR PNG with OpenCV, read it through the source: bytes must come out RGB.
    use opencv::core::{Mat, Scalar, Vector, CV_8UC3};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("red.png");
    let red_bgr = Mat::new_rows_cols_with_default(4, 6, CV_8UC3, Scalar::new(0.0, 0.0, 255.0, 0.0)).unwrap();
    assert!(opencv::imgcodecs::imwrite(&p, &red_bgr, &Vector::new()).unwrap());
    let f = open_source(&SourceSpec::Image { path: p, fps: 240 }).unwrap().next_frame().unwrap().unwrap();
    assert_eq!((f.width, f.height), (6, 4));
    assert_eq!(&f.data[..3], &[255, 0, 0]);
}

/// Parses a y4m stream: header fields and frame payloads.
fn parse_y4m(bytes: &[u8]) -> (String, Vec<&[u8]>) {
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let header = String::from_utf8(bytes[..nl].to_vec()).unwrap();
    let w: usize = header.split(' ').find_map(|t| t.strip_prefix('W')).unwrap().parse().unwrap();
    let h: usize = header.split(' ').find_map(|t| t.strip_prefix('H')).unwrap().parse().unwrap();
    let size = w * h * 3 / 2;
    let mut frames = Vec::new();
    let mut rest = &bytes[nl + 1..];
    while !rest.is_empty() {
        assert!(rest.starts_with(b"FRAME\n"), "frame marker");
        frames.push(&rest[6..6 + size]);
        rest = &rest[6 + size..];
    }
    (header, frames)
}

#[test]
fn y4m_sink_round_trip_and_ffprobe() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.y4m");
    let (w, h) = (160u32, 120u32);
    let mut src = SyntheticSource::unpaced(w, h, 25).unwrap();
    let mut sink = open_sink(&SinkSpec::Y4m { path: p.clone() }, w, h, 25).unwrap();
    let mut sent = Vec::new();
    for _ in 0..5 {
        let f = src.next_frame().unwrap().unwrap();
        sink.write(&f).unwrap();
        sent.push(f);
    }
    sink.finish().unwrap();
    drop(sink);
    let bytes = std::fs::read(&p).unwrap();
    let (header, frames) = parse_y4m(&bytes);
    assert_eq!(format!("{header}\n"), y4m::header(w, h, 25));
    assert!(header.contains("C420jpeg") && header.contains("XCOLORRANGE=LIMITED"));
    assert_eq!(frames.len(), 5);
    // Decoded back, each frame is close to what was sent (chroma subsampling blurs edges).
    for (f, payload) in sent.iter().zip(&frames) {
        let rgb = puppetcam::core::colour::i420_to_rgb(payload, w, h).unwrap();
        let mean_err: f64 = rgb.iter().zip(&f.data).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / rgb.len() as f64;
        assert!(mean_err < 4.0, "mean abs error {mean_err}");
    }
    if have_ffprobe() {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-show_entries", "stream=width,height,pix_fmt,nb_read_frames,color_range,r_frame_rate", "-of", "default=nw=1"])
            .arg(&p)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
        for want in ["width=160", "height=120", "pix_fmt=yuv420p", "nb_read_frames=5", "color_range=tv", "r_frame_rate=25/1"] {
            assert!(text.contains(want), "ffprobe says:\n{text}\nmissing {want}");
        }
    } else {
        eprintln!("ffprobe not installed: skipped the external check");
    }
}

#[test]
fn y4m_to_closed_pipe_is_reader_gone() {
    // `head -c 10` reads 10 bytes and exits; the next writes hit EPIPE.
    let mut child = Command::new("head").args(["-c", "10"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut sink = y4m::Y4mSink::from_writer(Box::new(stdin), Path::new("head"), 64, 64, 30);
    let f = Frame::black(64, 64);
    // The first write feeds `head` its 10 bytes (it then exits); later writes find no reader.
    let first = sink.write(&f);
    child.wait().unwrap();
    let mut got = first.err();
    for _ in 0..50 {
        if got.is_some() {
            break;
        }
        got = sink.write(&f).err();
    }
    let e = got.expect("writing into a closed pipe must fail");
    assert!(matches!(e, Error::SinkReaderGone(_)), "{e:?}");
}

#[test]
fn png_sink_writes_every_nth_frame() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    let (w, h) = (96u32, 64u32);
    let mut src = SyntheticSource::unpaced(w, h, 30).unwrap();
    let mut sink = open_sink(&SinkSpec::Png { dir: out.clone(), every: 3 }, w, h, 30).unwrap();
    let mut kept = Vec::new();
    for i in 0..7 {
        let f = src.next_frame().unwrap().unwrap();
        if i % 3 == 0 {
            kept.push(f.clone());
        }
        sink.write(&f).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["frame_000000.png", "frame_000001.png", "frame_000002.png"]);
    // PNG is lossless: reading back through the image source gives the exact RGB bytes.
    for (i, f) in kept.iter().enumerate() {
        let p = out.join(format!("frame_{i:06}.png"));
        let back = open_source(&SourceSpec::Image { path: p, fps: 30 }).unwrap().next_frame().unwrap().unwrap();
        assert_eq!(back.data, f.data, "frame {i}");
    }
    assert!(open_sink(&SinkSpec::Png { dir: out, every: 0 }, w, h, 30).is_err());
}

#[test]
fn synthetic_source_through_open_source() {
    let mut s = open_source(&SourceSpec::Synthetic { width: 320, height: 240, fps: 120 }).unwrap();
    let f = s.next_frame().unwrap().unwrap();
    assert_eq!((f.width, f.height), (320, 240));
    assert!(s.describe().contains("synthetic"));
}
