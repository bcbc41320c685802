//! `puppetcam bench`: runs the real pipeline stages (source, face tracker, generator, paste-back)
//! into the null sink and prints per-stage latency (median, p99), the most frames per second each
//! stage could sustain alone, and the pipeline's throughput. Flat-out mode (default) processes
//! every frame, so its end-to-end figure includes queueing; `--live` paces the driver like a camera
//! and keeps only the latest frame, so end-to-end is the latency a viewer sees, and it counts the
//! generated frames against those written; `--load` keeps one core busy with another process;
//! `--camera-fps N` delivers a video's frames at N fps like a webcam at that rate
//! (`source::camera_rate`). The face stage's parts (detector, crops, models) are printed too.
use anyhow::Context;
use puppetcam::pipeline::{Driver, DriverSpec, Pacing, Pipeline, Plan};
use puppetcam::sink::SinkSpec;
use puppetcam::source::camera_rate::CameraRate;
use puppetcam::source::SourceSpec;
use puppetcam::stats::PipelineStats;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frames run before measuring: session warm-up, caches, the face tracker's first detection.
const WARMUP: u64 = 10;

/// A process that keeps one core busy until dropped (`--load`).
struct BusyCore(std::process::Child);

impl BusyCore {
    fn start() -> anyhow::Result<BusyCore> {
        let c = std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().context("bench --load: cannot start the load process")?;
        Ok(BusyCore(c))
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn cmd_bench(mut plan: Plan, frames: u64, as_json: bool, live: bool, load: bool, camera_fps: Option<u32>) -> anyhow::Result<u8> {
    if frames == 0 {
        return Err(puppetcam::Error::Config { key: "bench.frames".into(), msg: "--frames must be at least 1".into() }.into());
    }
    let total = WARMUP + frames;
    plan.sink = SinkSpec::Null;
    plan.pacing = Some(if live { Pacing::Realtime } else { Pacing::EveryFrame });
    // Flat out: files decode as fast as the stages go. Live: at their own timestamps. Both loop.
    match &mut plan.driver {
        // Slack: the warm-up may overshoot by a frame or two on a fast pipeline.
        DriverSpec::Embedded { frames } => *frames = Some(total + WARMUP),
        DriverSpec::Source(SourceSpec::File { looping, realtime, .. }) => {
            *looping = true;
            *realtime = live;
        }
        DriverSpec::Source(_) => {}
    }
    let mut driver = describe_driver(&plan.driver);
    let mut spec = plan.clone().into_spec().context("bench: cannot build the pipeline")?;
    if let Some(fps) = camera_fps {
        let file = match &plan.driver {
            DriverSpec::Source(SourceSpec::File { path, .. }) if live => SourceSpec::File { path: path.clone(), looping: true, realtime: false },
            _ => {
                return Err(puppetcam::Error::Config {
                    key: "bench.camera_fps".into(),
                    msg: "--camera-fps needs --live and a video file source (--source loop:CLIP)".into(),
                }
                .into())
            }
        };
        // Probe the rate now, so a bad value is an error here and not in the capture thread.
        drop(CameraRate::new(Box::new(NoFrames), f64::from(fps))?);
        if let Driver::Video { source, .. } = &mut spec.driver {
            *source = Arc::new(move || {
                let inner = puppetcam::source::open_source(&file)?;
                Ok(Box::new(CameraRate::new(inner, f64::from(fps))?) as Box<dyn puppetcam::source::FrameSource>)
            });
        }
        driver = format!("{driver}, delivered at {fps} fps like a camera");
    }
    let _busy = if load { Some(BusyCore::start()?) } else { None };
    let stats = Arc::new(PipelineStats::default());
    let handle = Pipeline::start_spec(spec, stats.clone()).context("bench: cannot start the pipeline")?;
    let out = |s: &PipelineStats| s.output.frames.load(Ordering::Relaxed);
    let gen = |s: &PipelineStats| s.generator.frames.load(Ordering::Relaxed);
    let mut measuring_since: Option<(Instant, u64)> = None;
    let mut gen0 = 0;
    // Frames written that carry a newly generated frame (not repeats): end-to-end samples.
    let fresh = |s: &PipelineStats| s.end_to_end.frames.load(Ordering::Relaxed);
    let mut fresh0 = 0;
    let (mut iris0, mut checks0, mut face0) = (0, 0, 0);
    let timeout = Instant::now() + Duration::from_secs(600);
    // Measure exactly `frames` frames from wherever the warm-up ended (a fast pipeline writes
    // several frames between two polls).
    while measuring_since.map_or(true, |(_, n0)| out(&stats) < n0 + frames) && !handle.is_finished() && Instant::now() < timeout {
        if measuring_since.is_none() && out(&stats) >= WARMUP {
            for s in stats.stages().into_iter().chain(stats.face_parts.all()) {
                s.reset_recent();
            }
            iris0 = stats.face_parts.iris_runs.load(Ordering::Relaxed);
            checks0 = stats.face_parts.iris_checks.load(Ordering::Relaxed);
            face0 = stats.face.frames.load(Ordering::Relaxed);
            measuring_since = Some((Instant::now(), out(&stats)));
            gen0 = gen(&stats);
            fresh0 = fresh(&stats);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let end = Instant::now();
    let done = out(&stats);
    handle.shutdown().context("bench: pipeline failed")?;
    let (t0, n0) = measuring_since.unwrap_or((end, done));
    let measured = done.saturating_sub(n0);
    let wall = (end - t0).as_secs_f64();
    let throughput = if wall > 0.0 { measured as f64 / wall } else { 0.0 };
    // In live mode the output repeats the last frame when the generator is late, so the rate of
    // newly generated frames is the honest figure; flat out, the two are the same.
    let generated_fps = if wall > 0.0 { gen(&stats).saturating_sub(gen0) as f64 / wall } else { 0.0 };
    let generated = gen(&stats).saturating_sub(gen0);
    let written_fresh = fresh(&stats).saturating_sub(fresh0);
    let ep = stats.ep.read().clone();
    let face_frames = stats.face.frames.load(Ordering::Relaxed).saturating_sub(face0);
    let per_face_frame = |n: &std::sync::atomic::AtomicU64, n0: u64| (face_frames > 0).then(|| n.load(Ordering::Relaxed).saturating_sub(n0) as f64 / face_frames as f64);
    let iris_per_frame = per_face_frame(&stats.face_parts.iris_runs, iris0);
    let checks_per_frame = per_face_frame(&stats.face_parts.iris_checks, checks0);
    let out_rate = if live { puppetcam::pipeline::rate::OutputRate { fps: f64::from(plan.fps), follow_source: plan.fps_follows_source }.now(&stats) } else { f64::from(plan.fps) };

    let ms = |s: &puppetcam::stats::StageStats, p: f64| s.percentile_us(p).map(|v| v / 1e3);
    let rows: Vec<(&str, Option<f64>, Option<f64>, Option<f64>, u64)> =
        stats.stages().iter().map(|s| (s.name, ms(s, 50.0), ms(s, 95.0), ms(s, 99.0), s.drops.load(Ordering::Relaxed))).collect();
    if as_json {
        let stages: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(n, med, p95, p99, drops)| {
                (n.to_string(), json!({ "median_ms": med, "p95_ms": p95, "p99_ms": p99, "max_fps": stage_max_fps(*n, *med), "drops": drops }))
            })
            .collect();
        let parts: serde_json::Map<String, serde_json::Value> = stats
            .face_parts
            .all()
            .iter()
            .map(|s| (s.name.to_string(), json!({ "median_ms": ms(s, 50.0), "p95_ms": ms(s, 95.0), "frames": s.frames.load(Ordering::Relaxed) })))
            .collect();
        let doc = json!({
            "driver": driver,
            "avatar": plan.avatar.display().to_string(),
            "avatar_name": stats.avatar_name.read().clone(),
            "execution_provider": ep.active,
            "fallback_reason": ep.fallback_reason,
            "output": format!("{}x{}", plan.width, plan.height),
            "mode": if live { "live" } else { "flat-out" },
            "warmup_frames": WARMUP,
            "frames": measured,
            "wall_s": wall,
            "throughput_fps": throughput,
            "generated_fps": generated_fps,
            "generated_frames": generated,
            "written_new_frames": written_fresh,
            "load": if load { "one core busy (another process)" } else { "none" },
            "face_lost": stats.face_lost.load(Ordering::Relaxed),
            "stages": stages,
            "face_parts": parts,
            "iris_runs_per_frame": iris_per_frame,
            "iris_checks_per_frame": checks_per_frame,
            "source_fps": stats.source_fps(),
            "output_fps": out_rate,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let mode = if live { "live: driver paced, latest frame wins" } else { "flat out: every frame, end_to_end includes queueing" };
        println!("driver: {driver}; avatar '{}' on {}; output {}x{} (null sink); {mode}", stats.avatar_name.read(), ep.active, plan.width, plan.height);
        if let Some(r) = &ep.fallback_reason {
            println!("execution-provider fallback: {r}");
        }
        if load {
            println!("load: one core kept busy by another process");
        }
        println!("{:<11} {:>10} {:>8} {:>8} {:>9} {:>7}", "stage", "median ms", "p95 ms", "p99 ms", "max fps", "drops");
        for (n, med, p95, p99, drops) in &rows {
            let f = |v: &Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
            let fps = stage_max_fps(n, *med).map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
            println!("{:<11} {:>10} {:>8} {:>8} {:>9} {:>7}", n, f(med), f(p95), f(p99), fps, drops);
        }
        if stats.face_parts.landmark_model.frames.load(Ordering::Relaxed) > 0 {
            let parts: Vec<String> = stats
                .face_parts
                .all()
                .iter()
                .map(|s| format!("{} {}", s.name, ms(s, 50.0).map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())))
                .collect();
            let per = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
            println!(
                "face stage parts, median ms: {} (detector: frames it ran on); iris model runs per frame {}, checks of the distilled model {}",
                parts.join(", "),
                per(iris_per_frame),
                per(checks_per_frame)
            );
        }
        if live {
            let src = stats.source_fps().map(|v| format!("{v:.2}")).unwrap_or_else(|| "unknown".into());
            println!("source {src} fps, output at most {out_rate:.2} fps");
            println!("generated {generated} frames, {written_fresh} of them written (the rest dropped as stale or over the fps cap)");
        }
        println!(
            "pipeline: {throughput:.1} fps written, {generated_fps:.1} fps newly generated, over {measured} frames ({wall:.2} s, after {WARMUP} warm-up frames)"
        );
        if stats.face_lost.load(Ordering::Relaxed) > 0 {
            println!("face lost {} time(s) during the run", stats.face_lost.load(Ordering::Relaxed));
        }
    }
    if measured < frames && done < total {
        eprintln!("bench: the driver ended after {done} frames (asked for {total})");
    }
    Ok(0)
}

/// Frames per second a stage could sustain on its own (1 / median), shown only for the four
/// stages (not end-to-end, which overlaps them) and only above timer noise (0.05 ms), where the
/// inverse would be a meaningless huge number.
fn stage_max_fps(stage: &str, median_ms: Option<f64>) -> Option<f64> {
    median_ms.filter(|m| *m >= 0.05 && stage != "end_to_end").map(|m| 1e3 / m)
}

/// A source with no frames: only to check a `--camera-fps` value before the pipeline starts.
struct NoFrames;

impl puppetcam::source::FrameSource for NoFrames {
    fn next_frame(&mut self) -> puppetcam::Result<Option<puppetcam::core::types::Frame>> {
        Ok(None)
    }
    fn describe(&self) -> String {
        String::new()
    }
}

fn describe_driver(d: &DriverSpec) -> String {
    match d {
        DriverSpec::Embedded { .. } => "embedded animation (no face stage)".into(),
        DriverSpec::Source(SourceSpec::File { path, .. }) => format!("video {}", path.display()),
        DriverSpec::Source(SourceSpec::Image { path, .. }) => format!("image {}", path.display()),
        DriverSpec::Source(SourceSpec::Synthetic { .. }) => "cartoon face (synthetic source)".into(),
        DriverSpec::Source(SourceSpec::Camera { device, .. }) => format!("camera {device}"),
    }
}
