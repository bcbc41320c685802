//! The face stage alone, MediaPipe's every-frame iris schedule against the two live ones (its
//! model on one eye per frame, `face::iris_schedule`; the distilled model on both eyes), on the
//! same frames of a clip, the trackers called in turn so that all see the same machine load
//! (issue 19's before/after of the face stage on a shared machine). Prints wall-clock and
//! thread-CPU medians per call and each live tracker's parts.
//! Usage: cargo run --release --example face_ab -- CLIP.mp4 [FRAMES]
use puppetcam::face::iris::IrisKind;
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
    let cfg = |s, k| TrackerConfig { iris_schedule: s, iris_kind: k, ..Default::default() };
    let configs = [
        ("every-frame irises (MediaPipe, before)", cfg(IrisSchedule::EveryFrame, IrisKind::MediaPipe)),
        ("alternating MediaPipe irises", cfg(IrisSchedule::Alternate, IrisKind::MediaPipe)),
        ("distilled irises, both eyes (live default)", cfg(IrisSchedule::Alternate, IrisKind::Distilled)),
    ];
    let mut trackers = configs.iter().map(|(_, c)| FaceTracker::new(&models, *c)).collect::<Result<Vec<_>, _>>()?;
    let n = trackers.len();
    let mut src = open_source(&SourceSpec::File { path: clip.into(), looping: true, realtime: false })?;
    let (mut wall, mut cpu) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    let mut parts: Vec<Vec<[f64; 4]>> = vec![Vec::new(); n];
    let mut runs = vec![0u32; n];
    for i in 0..frames + 10 {
        let f = src.next_frame()?.ok_or("clip ended")?;
        // Rotate which tracker goes first, so none always gets the warmer cache.
        for j in 0..n {
            let k = (i + j) % n;
            let (w0, c0) = (Instant::now(), thread_cpu());
            trackers[k].process(&f)?;
            if i >= 10 {
                wall[k].push(w0.elapsed().as_secs_f64() * 1e3);
                cpu[k].push((thread_cpu() - c0).as_secs_f64() * 1e3);
                let p = trackers[k].profile();
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                parts[k].push([ms(p.landmark_crop), ms(p.landmark_model), ms(p.iris_crop), ms(p.iris_model)]);
                runs[k] += u32::from(p.iris_runs);
            }
        }
    }
    for (k, (name, _)) in configs.iter().enumerate() {
        let col = |j: usize| median(parts[k].iter().map(|p| p[j]).collect());
        println!(
            "{name}: face stage median {:.2} ms wall, {:.2} ms thread CPU; parts, median ms: landmark crop {:.2}, landmark model {:.2}, iris crop {:.2}, iris model {:.2}; iris model runs per frame {:.2}",
            median(wall[k].clone()),
            median(cpu[k].clone()),
            col(0),
            col(1),
            col(2),
            col(3),
            runs[k] as f64 / frames as f64
        );
    }
    Ok(())
}
