//! Service demo without camera or models: a fake pipeline writes synthetic frames and latencies
//! into `PipelineStats` while the real `puppetcam::service::Service` (HTTP status page, metrics,
//! MJPEG preview, signals, sd_notify) runs around it. Used by the browser test and the soak
//! script's self-test.
//!
//!   cargo run --example service_demo -- [--bind 127.0.0.1:8765] [--seconds N] [--fps 30]
//!       [--ep CUDA] [--fallback "TensorRT: engine build failed"] [--avatar mona]
//!       [--stall-after N] [--leak-kb-per-frame N]
use puppetcam::core::types::Frame;
use puppetcam::service::{HttpOptions, Service, ServiceEvent, ServiceOptions};
use puppetcam::stats::PipelineStats;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    bind: String,
    seconds: Option<f64>,
    fps: f64,
    ep: String,
    fallback: Option<String>,
    avatar: String,
    stall_after: Option<f64>,
    leak_kb_per_frame: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        bind: "127.0.0.1:8765".into(),
        seconds: None,
        fps: 30.0,
        ep: "CUDA".into(),
        fallback: None,
        avatar: "demo-avatar".into(),
        stall_after: None,
        leak_kb_per_frame: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        let num = |s: String| s.parse::<f64>().map_err(|e| format!("{s}: {e}"));
        match k.as_str() {
            "--bind" => a.bind = v()?,
            "--seconds" => a.seconds = Some(num(v()?)?),
            "--fps" => a.fps = num(v()?)?,
            "--ep" => a.ep = v()?,
            "--fallback" => a.fallback = Some(v()?),
            "--avatar" => a.avatar = v()?,
            "--stall-after" => a.stall_after = Some(num(v()?)?),
            "--leak-kb-per-frame" => a.leak_kb_per_frame = num(v()?)? as usize,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(a.fps > 0.0) {
        return Err("--fps must be > 0".into());
    }
    Ok(a)
}

/// A moving colour pattern so the preview visibly updates.
fn synth_frame(w: u32, h: u32, t: f64, seq: u64) -> Frame {
    let mut f = Frame::black(w, h);
    let (cx, cy) = ((w as f64 / 2.0) * (1.0 + 0.6 * (t * 1.3).sin()), (h as f64 / 2.0) * (1.0 + 0.5 * (t * 0.9).cos()));
    for y in 0..h {
        for x in 0..w {
            let i = 3 * (y * w + x) as usize;
            let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
            let face = d < h as f64 / 5.0;
            f.data[i] = if face { 240 } else { (x * 255 / w) as u8 / 2 + 30 };
            f.data[i + 1] = if face { 200 } else { (y * 255 / h) as u8 / 2 + 30 };
            f.data[i + 2] = if face { 170 } else { (128.0 + 100.0 * (t * 0.5).sin()) as u8 };
        }
    }
    f.seq = seq;
    f.pts = Duration::from_secs_f64(t);
    f
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("service_demo: {e}");
            std::process::exit(2);
        }
    };
    let bind = match args.bind.parse() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("service_demo: --bind {}: {e}", args.bind);
            std::process::exit(2);
        }
    };
    let stats = Arc::new(PipelineStats::default());
    stats.ep.write().active = args.ep.clone();
    stats.ep.write().fallback_reason = args.fallback.clone();
    *stats.avatar_name.write() = args.avatar.clone();
    // What READY=1 and /health wait for besides the first captured frame.
    stats.avatar_loaded.store(true, Ordering::Relaxed);
    *stats.source_state.write() = "streaming (synthetic)".into();
    *stats.sink_state.write() = "writing /dev/video10 (demo: nothing written)".into();

    let opts = ServiceOptions { http: Some(HttpOptions { bind, ..HttpOptions::default() }), ..ServiceOptions::default() };
    let svc = match Service::start(&opts, stats.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("service_demo: {e}");
            std::process::exit(1);
        }
    };
    // Machine-readable line for scripts that started us with port 0.
    println!("listening on http://{}/", svc.http_addr().expect("http enabled"));

    let stop = Arc::new(AtomicBool::new(false));
    let (st, stop2, fps) = (stats.clone(), stop.clone(), args.fps);
    let (stall_after, leak) = (args.stall_after, args.leak_kb_per_frame);
    let fake = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut seq = 0u64;
        let mut leaked: Vec<Vec<u8>> = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            let t = t0.elapsed().as_secs_f64();
            if stall_after.is_some_and(|s| t > s) {
                // Simulated hang: no more frames, the thread stays alive.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let jitter = (seq % 7) as u64;
            st.capture.record(Duration::from_micros(800 + jitter * 40));
            st.face.record(Duration::from_micros(4_000 + jitter * 300));
            st.generator.record(Duration::from_micros(14_000 + jitter * 900));
            st.output.record(Duration::from_micros(600 + jitter * 20));
            st.end_to_end.record(Duration::from_micros(24_000 + jitter * 1500));
            if seq % 150 == 149 {
                st.face_lost.fetch_add(1, Ordering::Relaxed);
            }
            if seq % 90 == 89 {
                st.generator.drop_one();
            }
            *st.preview.lock() = Some(Arc::new(synth_frame(320, 240, t, seq)));
            if leak > 0 {
                leaked.push(vec![1u8; leak * 1024]);
            }
            seq += 1;
            std::thread::sleep(Duration::from_secs_f64(1.0 / fps));
        }
    });

    let deadline = args.seconds.map(|s| Instant::now() + Duration::from_secs_f64(s));
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        match svc.next_event(Duration::from_millis(200)) {
            Some(ServiceEvent::Shutdown) => break,
            Some(ServiceEvent::Reload) => {
                svc.reloading();
                log::info!("demo: reload requested (nothing to reload)");
                svc.reloaded("reloaded");
            }
            Some(ServiceEvent::AvatarChanged(p)) => log::info!("demo: avatar changed: {}", p.display()),
            None => {}
        }
    }
    svc.stopping();
    stop.store(true, Ordering::Relaxed);
    let _ = fake.join();
    svc.shutdown();
    log::info!("demo: stopped cleanly");
}
