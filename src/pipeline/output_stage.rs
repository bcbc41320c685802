//! The output stage's thread: generated frames to the sink (virtual camera, file, null).
//!
//! Live (realtime pacing), each generated frame is written the moment it arrives: a clocked
//! writer makes every frame wait for its own tick, whose phase against the camera's is random,
//! which adds 0 to one frame period of latency (lips trail the voice). The last frame is written
//! again only when nothing new arrived for 1.5 periods, so v4l2loopback readers never starve
//! (and liveness sees the output tick). The rate (`rate`: the source's own by default, capped by
//! a configured fps) caps writes with a token bucket: a source faster than the cap loses frames
//! evenly spread, a source at the cap with jitter loses none.
//! Offline (every frame), frames are written in order, none dropped.
use super::rate::{wait_until_settled, OutputRate, SETTLE_TIMEOUT};
use super::supervise;
use super::{report_ready, stop_on_err, OutMsg, Pacing, SinkFactory, SinkSwap};
use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::sink::FrameSink;
use crate::stats::PipelineStats;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Nothing new for this many periods: the last frame is written again.
const REPEAT_AFTER_PERIODS: f64 = 1.5;
/// Token-bucket depth, in frames: how much arrival jitter the cap absorbs without a drop.
const BURST: f64 = 2.0;

/// The rate cap: tokens accrue at `fps`, a write spends one.
struct RateCap {
    fps: f64,
    tokens: f64,
    last: Instant,
}

impl RateCap {
    fn new(fps: f64, now: Instant) -> RateCap {
        RateCap { fps, tokens: BURST, last: now }
    }

    /// Whether a frame arriving at `now` may be written (and spends its token if so).
    fn admit(&mut self, now: Instant) -> bool {
        self.tokens = (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.fps).min(BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Writes each generated frame on arrival (see the module comment). The rate is read again
/// for every frame: a reopened or replaced source may run at another one.
fn live_output(wr: &mut Writer<'_>, w: u32, h: u32, rate: OutputRate, rx: &Receiver<OutMsg>) -> Result<()> {
    let fps = rate.now(wr.stats);
    let mut repeat_after = Duration::from_secs_f64(REPEAT_AFTER_PERIODS / fps);
    let mut current = Arc::new(Frame::black(w, h));
    let mut cap = RateCap::new(fps, Instant::now());
    // Written at once: the device has a frame before the first one is generated.
    let mut last_write = Instant::now() - repeat_after;
    loop {
        let fps = rate.now(wr.stats);
        if fps != cap.fps {
            cap.fps = fps;
            repeat_after = Duration::from_secs_f64(REPEAT_AFTER_PERIODS / fps);
        }
        match rx.recv_deadline(last_write + repeat_after) {
            Ok(mut m) => {
                // Several queued (the writer was slow): the newest wins.
                while let Ok(newer) = rx.try_recv() {
                    wr.stats.output.drop_one();
                    m = newer;
                }
                check_size(&m.frame, w, h)?;
                current = m.frame;
                if !cap.admit(Instant::now()) {
                    // Over the cap: dropped, but a repeat would show it.
                    wr.stats.output.drop_one();
                    continue;
                }
                wr.write(&current, m.captured)?;
            }
            Err(RecvTimeoutError::Timeout) => {
                cap.admit(Instant::now());
                wr.write(&current, None)?;
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        last_write = Instant::now();
    }
}

fn check_size(f: &Frame, w: u32, h: u32) -> Result<()> {
    if f.width != w || f.height != h {
        return Err(Error::Sink(format!("frame {}x{} for a {w}x{h} output", f.width, f.height)));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn output_thread(
    factory: SinkFactory,
    w: u32,
    h: u32,
    rate: OutputRate,
    pacing: Pacing,
    rx: Receiver<OutMsg>,
    swap: Receiver<SinkSwap>,
    stats: Arc<PipelineStats>,
    stop: Arc<AtomicBool>,
    ready: Sender<(&'static str, Result<()>)>,
    faults: Arc<supervise::Faults>,
) -> Result<()> {
    // Live, the sink is opened at the rate it will be written at, so the source's must be known
    // first (the capture stage opens it meanwhile). Offline, the configured rate, as always.
    let fps = match pacing {
        Pacing::Realtime => {
            wait_until_settled(&stats, &stop, SETTLE_TIMEOUT);
            rate.now(&stats)
        }
        Pacing::EveryFrame => rate.fps,
    };
    if pacing == Pacing::Realtime && rate.follow_source {
        log::info!("output rate: {fps:.2} fps (the source's; set [output] fps to cap it)");
    }
    let opened = factory(w, h, fps).inspect(|s| {
        log::info!("output: {}", s.describe());
        *stats.sink_state.write() = format!("writing: {}", s.describe());
    });
    let Some(sink) = report_ready("output", opened, ready, &stop) else { return Ok(()) };
    let mut w_state = Writer { sink, stats: &stats, reader_gone: false, swap, geometry: (w, h, fps), faults: &faults };
    // After a panic the same sink goes on (reopening a v4l2loopback device would make readers
    // renegotiate); a frame in flight may be lost.
    let r = supervise::supervise(&stats.output, &stop, |_| match pacing {
        Pacing::EveryFrame => {
            for m in rx.iter() {
                w_state.write(&m.frame, m.captured)?;
            }
            Ok(())
        }
        Pacing::Realtime => live_output(&mut w_state, w, h, rate, &rx),
    });
    let fin = w_state.sink.finish();
    *stats.sink_state.write() = match (&r, &fin) {
        (Ok(()), Ok(())) => "finished".into(),
        (Err(e), _) | (_, Err(e)) => format!("failed: {e}"),
    };
    stop_on_err(&stop, r.and(fin))
}

struct Writer<'a> {
    sink: Box<dyn FrameSink>,
    stats: &'a PipelineStats,
    reader_gone: bool,
    swap: Receiver<SinkSwap>,
    /// Output width, height and fps, for a replacement sink.
    geometry: (u32, u32, f64),
    faults: &'a supervise::Faults,
}

impl Writer<'_> {
    /// Applies a pending sink replacement: the new sink opens first, so a failure leaves the
    /// running one (and e.g. the v4l2loopback device) untouched.
    fn poll_swap(&mut self) {
        let Ok(SinkSwap(factory, reply)) = self.swap.try_recv() else { return };
        let (w, h, fps) = self.geometry;
        let r = factory(w, h, fps).map(|new| {
            let mut old = std::mem::replace(&mut self.sink, new);
            if let Err(e) = old.finish() {
                log::warn!("output: closing the previous sink: {e}");
            }
            log::info!("output replaced: {}", self.sink.describe());
            *self.stats.sink_state.write() = format!("writing: {}", self.sink.describe());
            self.reader_gone = false;
        });
        let _ = reply.send(r);
    }

    fn write(&mut self, frame: &Arc<Frame>, captured: Option<Instant>) -> Result<()> {
        self.poll_swap();
        self.faults.tick(supervise::OUTPUT);
        let t0 = Instant::now();
        match self.sink.write(frame) {
            Ok(()) => {
                if self.reader_gone {
                    log::info!("output: a reader is back");
                    *self.stats.sink_state.write() = format!("writing: {}", self.sink.describe());
                    self.reader_gone = false;
                }
            }
            // A virtual camera nobody watches is normal: keep going, say it once.
            Err(Error::SinkReaderGone(why)) => {
                self.stats.output.error_one();
                if !self.reader_gone {
                    log::warn!("output: no reader ({why}); still producing frames");
                    *self.stats.sink_state.write() = format!("no reader: {why}");
                    self.reader_gone = true;
                }
            }
            Err(e) => return Err(e),
        }
        self.stats.output.record(t0.elapsed());
        if let Some(c) = captured {
            let e2e = c.elapsed();
            self.stats.end_to_end.record(e2e);
            self.stats.end_to_end_hist.record(e2e);
        }
        *self.stats.preview.lock() = Some(frame.clone());
        Ok(())
    }
}

/// The old clocked writer, kept for comparison in the tests of this module only.
#[cfg(test)]
fn paced_output(wr: &mut Writer<'_>, w: u32, h: u32, fps: f64, rx: &Receiver<OutMsg>) -> Result<()> {
    let tick = Duration::from_secs_f64(1.0 / fps);
    let mut current = Arc::new(Frame::black(w, h));
    let mut pending: Option<OutMsg> = None;
    let mut next = Instant::now();
    let mut disconnected = false;
    loop {
        // Collect until the tick; a newer frame replaces a pending one (counted as a drop).
        while !disconnected {
            match rx.recv_deadline(next) {
                Ok(m) => {
                    if pending.replace(m).is_some() {
                        wr.stats.output.drop_one();
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
        }
        let captured = match pending.take() {
            Some(m) => {
                current = m.frame;
                m.captured
            }
            None => None,
        };
        if current.width != w || current.height != h {
            return Err(Error::Sink(format!("frame {}x{} for a {w}x{h} output", current.width, current.height)));
        }
        wr.write(&current, captured)?;
        if disconnected {
            // Drain anything still queued so a finite run ends with its last frame.
            if let Ok(m) = rx.try_recv() {
                pending = Some(m);
                continue;
            }
            return Ok(());
        }
        next += tick;
        let now = Instant::now();
        if next < now {
            // Fell behind (slow sink): skip the missed ticks rather than bursting.
            next = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    struct NullSink;
    impl FrameSink for NullSink {
        fn write(&mut self, _f: &Frame) -> Result<()> {
            Ok(())
        }
        fn describe(&self) -> String {
            "null".into()
        }
    }

    #[test]
    fn the_cap_drops_evenly_and_absorbs_jitter() {
        let t0 = Instant::now();
        let ms = |v: f64| t0 + Duration::from_secs_f64(v / 1e3);
        // 30 fps into a 25 fps cap for 3 s: 75 written (plus the bucket's start), drops spread.
        let mut cap = RateCap::new(25.0, t0);
        let admitted: Vec<bool> = (1..=90).map(|i| cap.admit(ms(i as f64 * 1000.0 / 30.0))).collect();
        let n = admitted.iter().filter(|&&a| a).count();
        assert!((75..=77).contains(&n), "{n} written");
        assert!(!admitted.windows(2).any(|w| !w[0] && !w[1]), "two drops in a row: {admitted:?}");
        // 30 fps with +-8 ms of jitter into a 30 fps cap: nothing dropped.
        let mut cap = RateCap::new(30.0, t0);
        let jitter = [0.0, 8.0, -8.0, 5.0, -3.0, 8.0, -8.0];
        assert!((1..=300).all(|i| cap.admit(ms(i as f64 * 1000.0 / 30.0 + jitter[i % jitter.len()]))));
    }

    #[test]
    fn a_60_fps_camera_is_written_whole_unless_capped() {
        // Simulated arrival times, no clock: 2 s of a 60 fps camera with +-3 ms of jitter.
        let t0 = Instant::now();
        let at = |i: usize| t0 + Duration::from_secs_f64(i as f64 / 60.0 + [0.0, 0.003, -0.003][i % 3] + 0.01);
        let written = |rate: OutputRate| {
            let mut cap = RateCap::new(rate.effective(Some(60.0)), t0);
            (0..120).map(|i| cap.admit(at(i))).collect::<Vec<bool>>()
        };
        let follow = written(OutputRate { fps: 30.0, follow_source: true });
        assert!(follow.iter().all(|&w| w), "following the source drops nothing");
        let capped = written(OutputRate { fps: 30.0, follow_source: false });
        let n = capped.iter().filter(|&&w| w).count();
        assert!((60..=62).contains(&n), "{n} written under a 30 fps cap");
        assert!(!capped.windows(3).any(|w| w.iter().all(|&x| x) || w.iter().all(|&x| !x)), "drops not even: {capped:?}");
    }

    /// Frames are written on arrival. Construction: at 2 fps the clocked writer ticks at start and
    /// every 500 ms; each frame arrives 50 ms after a tick, so the clocked writer holds it for
    /// 450 ms whatever the machine's load, while the on-arrival writer has no reason to wait at
    /// all. The bound (250 ms) is far from both, so it cannot flap.
    #[test]
    fn frames_are_written_on_arrival_not_on_the_next_tick() {
        fn run(clocked: bool) -> f64 {
            let stats = PipelineStats::default();
            let faults = supervise::Faults::default();
            let (_swap_tx, swap) = bounded(1);
            let mut wr = Writer { sink: Box::new(NullSink), stats: &stats, reader_gone: false, swap, geometry: (8, 8, 2.0), faults: &faults };
            let (tx, rx) = bounded::<OutMsg>(2);
            let feeder = std::thread::spawn(move || {
                let t0 = Instant::now();
                for k in 0..4u32 {
                    let due = t0 + Duration::from_millis(50 + 500 * u64::from(k));
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    tx.send(OutMsg { frame: Arc::new(Frame::black(8, 8)), captured: Some(Instant::now()) }).unwrap();
                }
                std::thread::sleep(Duration::from_millis(100));
            });
            if clocked {
                paced_output(&mut wr, 8, 8, 2.0, &rx).unwrap();
            } else {
                live_output(&mut wr, 8, 8, OutputRate { fps: 2.0, follow_source: false }, &rx).unwrap();
            }
            feeder.join().unwrap();
            assert_eq!(stats.end_to_end.frames.load(std::sync::atomic::Ordering::Relaxed), 4);
            stats.end_to_end.percentile_us(50.0).unwrap() / 1e6
        }
        let on_arrival = run(false);
        assert!(on_arrival < 0.25, "on arrival: median {on_arrival:.3} s");
        let clocked = run(true);
        assert!(clocked > 0.4, "the clocked writer holds each frame to its tick: {clocked:.3} s");
    }
}
