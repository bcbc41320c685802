//! The face stage alone, MediaPipe's every-frame iris schedule against the live one
//! (`face::iris_schedule`), on the same frames of a clip, the two trackers called alternately so
//! that both see the same machine load (issue 19's before/after of the face stage on a shared
//! machine). Prints wall-clock and thread-CPU medians per call and the live tracker's parts.
//! Usage: cargo run --release --example face_ab -- CLIP.mp4 [FRAMES]
use puppetcam::face::iris_schedule::IrisSchedule;
use puppetcam::face::{FaceModels, FaceTracker, TrackerConfig};
use puppetcam::source::{open_source, SourceSpec};
use std::time::{Duration, Instant};

/// CPU time of the calling thread: unlike wall time, it does not count the time another process
/// held the core.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let clip = args.get(1).ok_or("usage: face_ab CLIP.mp4 [FRAMES]")?;
    let frames: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(300);
    let models = FaceModels::locate()?;
    let cfg = |s| TrackerConfig { iris_schedule: s, ..Default::default() };
    let mut trackers = [FaceTracker::new(&models, cfg(IrisSchedule::EveryFrame))?, FaceTracker::new(&models, cfg(IrisSchedule::Alternate))?];
    let mut src = open_source(&SourceSpec::File { path: clip.into(), looping: true, realtime: false })?;
    let (mut wall, mut cpu) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let mut parts: Vec<[f64; 4]> = Vec::new();
    let mut runs = 0u32;
    for i in 0..frames + 10 {
        let f = src.next_frame()?.ok_or("clip ended")?;
        // Alternate which tracker goes first, so neither always gets the warmer cache.
        for k in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (w0, c0) = (Instant::now(), thread_cpu());
            trackers[k].process(&f)?;
            if i >= 10 {
                wall[k].push(w0.elapsed().as_secs_f64() * 1e3);
                cpu[k].push((thread_cpu() - c0).as_secs_f64() * 1e3);
            }
        }
        if i >= 10 {
            let p = trackers[1].profile();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            parts.push([ms(p.landmark_crop), ms(p.landmark_model), ms(p.iris_crop), ms(p.iris_model)]);
            runs += u32::from(p.iris_runs);
        }
    }
    for (k, name) in ["every-frame irises (MediaPipe, before)", "live schedule (after)"].iter().enumerate() {
        println!("{name}: face stage median {:.2} ms wall, {:.2} ms thread CPU", median(wall[k].clone()), median(cpu[k].clone()));
    }
    let col = |j: usize| median(parts.iter().map(|p| p[j]).collect());
    println!(
        "live parts, median ms: landmark crop {:.2}, landmark model {:.2}, iris crop {:.2}, iris model {:.2}; iris model runs per frame {:.2}",
        col(0),
        col(1),
        col(2),
        col(3),
        runs as f64 / frames as f64
    );
    Ok(())
}
