//! The embedded default driver: a procedurally animated face (talking mouth, blinks, gentle head
//! sway) given directly as landmarks, so `puppetcam demo` and `bench` run without a camera, a
//! video file or the face models.
use crate::core::retarget::Shape68;
use crate::core::types::{FaceLandmarks, Iris};
use std::f32::consts::PI;

/// Size of the virtual frame the synthetic face lives in.
pub const FRAME_W: u32 = 640;
pub const FRAME_H: u32 = 480;

/// A frontal 68-point face (iBUG order) centred at the origin, roughly 140 px wide, with the
/// mouth opened by `open` (0..1) and the eyes closed by `blink` (0..1).
fn face_at_origin(open: f32, blink: f32, smile: f32) -> ([[f32; 2]; 68], [Iris; 2]) {
    let mut p = [[0f32; 2]; 68];
    let mut k = 0;
    let mut push = |x: f32, y: f32| {
        p[k] = [x, y];
        k += 1;
    };
    // jaw 0..16: lower half ellipse ear to ear; the chin drops a little when the mouth opens
    for i in 0..17 {
        let t = PI * (1.0 - i as f32 / 16.0);
        push(68.0 * t.cos(), -10.0 + (70.0 + 8.0 * open) * t.sin());
    }
    // brows 17..21, 22..26 (raised slightly with the mouth: a livelier look)
    for side in [-1.0f32, 1.0] {
        for i in 0..5 {
            let x = if side < 0.0 { -55.0 + 10.0 * i as f32 } else { 15.0 + 10.0 * i as f32 };
            push(x, -45.0 - 6.0 * (PI * i as f32 / 4.0).sin() - 3.0 * open);
        }
    }
    // nose bridge 27..30, base 31..35
    for i in 0..4 {
        push(0.0, -30.0 + 11.0 * i as f32);
    }
    for i in 0..5 {
        push(-12.0 + 6.0 * i as f32, 12.0 + 3.0 * (1.0 - (i as f32 - 2.0).abs() / 2.0));
    }
    // eyes 36..41, 42..47: corner, top, top, corner, bottom, bottom
    let lid = 5.0 * (1.0 - blink.clamp(0.0, 1.0));
    for ex in [-32.0f32, 32.0] {
        push(ex - 13.0, -25.0);
        push(ex - 5.0, -25.0 - lid);
        push(ex + 5.0, -25.0 - lid);
        push(ex + 13.0, -25.0);
        push(ex + 5.0, -25.0 + 0.8 * lid);
        push(ex - 5.0, -25.0 + 0.8 * lid);
    }
    // outer lips 48..59, inner lips 60..67 (starting at the right mouth corner, image left)
    let (w, corner_lift) = (24.0 + 4.0 * smile, 4.0 * smile);
    for i in 0..12 {
        let t = 2.0 * PI * i as f32 / 12.0;
        let s = t.sin();
        let h = if s > 0.0 { 10.0 } else { 10.0 + 14.0 * open };
        push(-w * t.cos(), 38.0 - h * s - corner_lift * t.cos().abs());
    }
    for i in 0..8 {
        let t = 2.0 * PI * i as f32 / 8.0;
        let s = t.sin();
        let h = if s > 0.0 { 3.0 } else { 3.0 + 15.0 * open };
        push(-(w - 8.0) * t.cos(), 38.0 - h * s - corner_lift * t.cos().abs());
    }
    debug_assert_eq!(k, 68);
    let r = 4.0 * (1.0 - blink.clamp(0.0, 1.0));
    (p, [Iris { cx: -32.0, cy: -25.0, r }, Iris { cx: 32.0, cy: -25.0, r }])
}

/// The synthetic face at rest (mouth closed, eyes open, no smile, no head motion): the driver
/// neutral handed to the retargeter, so it needs no learning phase.
pub fn neutral_shape() -> Shape68 {
    let (pts, iris) = face_at_origin(0.0, 0.0, 0.0);
    let (cx, cy) = (FRAME_W as f32 / 2.0, FRAME_H as f32 / 2.0);
    let mut pts68 = pts;
    for p in pts68.iter_mut() {
        *p = [p[0] + cx, p[1] + cy];
    }
    Shape68 { pts68, iris: Some(iris.map(|i| Iris { cx: i.cx + cx, cy: i.cy + cy, r: i.r })) }
}

/// The driver's landmarks at time `t` seconds, in a `FRAME_W x FRAME_H` frame.
pub fn landmarks_at(t: f64) -> FaceLandmarks {
    let t = t as f32;
    // Speech-like mouth: two incommensurate syllable rates, clipped to closed between words.
    let open = ((t * 2.0 * PI * 2.3).sin() * 0.6 + (t * 2.0 * PI * 0.7).sin() * 0.4).max(0.0);
    // A blink of ~150 ms every 3.2 s.
    let phase = (t % 3.2) / 0.15;
    let blink = if phase < 1.0 { (phase * PI).sin() } else { 0.0 };
    let smile = 0.5 + 0.5 * (t * 2.0 * PI * 0.11).sin();
    let (pts, iris) = face_at_origin(open, blink, smile);
    let roll = 0.08 * (t * 2.0 * PI * 0.23).sin();
    let yaw_squash = 1.0 - 0.08 * (t * 2.0 * PI * 0.17).sin().abs();
    let (cx, cy) = (FRAME_W as f32 / 2.0 + 20.0 * (t * 2.0 * PI * 0.17).sin(), FRAME_H as f32 / 2.0 + 6.0 * (t * 2.0 * PI * 0.29).sin());
    let (c, s) = (roll.cos(), roll.sin());
    let tf = |x: f32, y: f32| -> [f32; 2] {
        let x = x * yaw_squash;
        [cx + c * x - s * y, cy + s * x + c * y]
    };
    let mut pts68 = [[0f32; 2]; 68];
    for (o, p) in pts68.iter_mut().zip(pts.iter()) {
        *o = tf(p[0], p[1]);
    }
    let iris = iris.map(|i| {
        let [x, y] = tf(i.cx, i.cy);
        Iris { cx: x, cy: y, r: i.r }
    });
    FaceLandmarks { mesh: Vec::new(), pts68, iris: Some(iris), score: 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn face_is_inside_the_frame_and_moves() {
        let a = landmarks_at(0.0);
        let b = landmarks_at(0.4);
        for p in a.pts68.iter().chain(b.pts68.iter()) {
            assert!(p[0] > 0.0 && p[0] < FRAME_W as f32 && p[1] > 0.0 && p[1] < FRAME_H as f32, "{p:?}");
        }
        let moved: f32 = a.pts68.iter().zip(b.pts68.iter()).map(|(p, q)| (p[0] - q[0]).abs() + (p[1] - q[1]).abs()).sum();
        assert!(moved > 10.0, "the synthetic face should animate, moved {moved}");
    }

    #[test]
    fn mouth_opens_and_eyes_blink() {
        let (closed, _) = face_at_origin(0.0, 0.0, 0.0);
        let (open, _) = face_at_origin(1.0, 0.0, 0.0);
        // inner lips: top centre 62, bottom centre 66
        let gap = |p: &[[f32; 2]; 68]| p[66][1] - p[62][1];
        assert!(gap(&open) > gap(&closed) + 10.0);
        let (_, shut) = face_at_origin(0.0, 1.0, 0.0);
        assert!(shut[0].r < 0.5, "closed eyes hide the iris");
    }
}
