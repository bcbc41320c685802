//! Test fixtures shared by the retargeting tests (and calibration's): a parametric synthetic
//! face and helpers.
use super::*;
use crate::core::geometry::Similarity;

/// A parametric synthetic face (crop-like coordinates): `fw`, `fh` half face width / height,
/// `ew` eye width, `eh` half eye opening, `mw` mouth width, `gap` inner-lip gap.
#[derive(Clone, Copy)]
pub(crate) struct Face {
    pub cx: f32,
    pub cy: f32,
    pub fw: f32,
    pub fh: f32,
    pub ew: f32,
    pub eh: [f32; 2],
    pub mw: f32,
    pub gap: f32,
    pub brow: f32,
}

impl Face {
    pub(crate) fn neutral() -> Self {
        Face { cx: 128.0, cy: 130.0, fw: 60.0, fh: 75.0, ew: 24.0, eh: [5.0, 5.0], mw: 44.0, gap: 0.0, brow: 0.0 }
    }
    pub(crate) fn other() -> Self {
        // A different identity: narrower, longer face, small eyes, wide mouth.
        Face { cx: 300.0, cy: 260.0, fw: 80.0, fh: 120.0, ew: 26.0, eh: [6.0, 6.0], mw: 70.0, gap: 0.0, brow: 0.0 }
    }
    pub(crate) fn pts(&self) -> Pts68 {
        let mut p = [[0f32; 2]; 68];
        let (cx, cy, fw, fh) = (self.cx, self.cy, self.fw, self.fh);
        for i in 0..17 {
            let th = std::f32::consts::PI * (1.0 - i as f32 / 16.0);
            let drop = if (5..=11).contains(&i) { self.gap * 0.8 } else { 0.0 };
            p[i] = [cx + fw * th.cos(), cy + fh * th.sin() + drop];
        }
        for k in 0..5 {
            let x = 0.8 - 0.15 * k as f32;
            let arch = [0.0, 3.0, 4.0, 3.0, 0.0][k];
            p[17 + k] = [cx - x * fw, cy - 0.55 * fh - arch - self.brow];
            p[26 - k] = [cx + x * fw, cy - 0.55 * fh - arch - self.brow];
        }
        for k in 0..4 {
            p[27 + k] = [cx, cy - 0.42 * fh + 0.12 * fh * k as f32];
        }
        for k in 0..5 {
            p[31 + k] = [cx - 0.2 * fw + 0.1 * fw * k as f32, cy + 0.05 * fh + if k == 2 { 2.0 } else { 0.0 }];
        }
        let ey = cy - 0.35 * fh;
        for (e, sign) in [(0usize, -1.0f32), (1, 1.0)] {
            let ec = cx + sign * 0.42 * fw;
            let (w, h) = (self.ew, self.eh[e]);
            let (o, inner) = (ec + sign * w / 2.0, ec - sign * w / 2.0);
            // Right eye (e=0): 36 outer (image left) .. 39 inner; left eye: 42 inner .. 45 outer.
            let (a, b) = if e == 0 { (o, inner) } else { (inner, o) };
            let base = 36 + 6 * e;
            let lerp = |t: f32| a + (b - a) * t;
            p[base] = [a, ey];
            p[base + 1] = [lerp(1.0 / 3.0), ey - h];
            p[base + 2] = [lerp(2.0 / 3.0), ey - h];
            p[base + 3] = [b, ey];
            p[base + 4] = [lerp(2.0 / 3.0), ey + h];
            p[base + 5] = [lerp(1.0 / 3.0), ey + h];
        }
        let my = cy + 0.4 * fh;
        let hw = self.mw / 2.0;
        let g = self.gap;
        // Outer lips: 48 corner, 49-53 upper, 54 corner, 55-59 lower (right to left).
        p[48] = [cx - hw, my];
        for k in 1..6 {
            let x = cx - hw + self.mw * k as f32 / 6.0;
            p[48 + k] = [x, my - 6.0 - if k == 3 { 1.0 } else { 0.0 }];
        }
        p[54] = [cx + hw, my];
        for k in 1..6 {
            let x = cx + hw - self.mw * k as f32 / 6.0;
            p[54 + k] = [x, my + 7.0 + g];
        }
        // Inner lips: 60 corner, 61-63 upper, 64 corner, 65-67 lower.
        p[60] = [cx - hw * 0.8, my];
        for k in 1..4 {
            p[60 + k] = [cx - hw * 0.8 + hw * 1.6 * k as f32 / 4.0, my - 1.0];
        }
        p[64] = [cx + hw * 0.8, my];
        for k in 1..4 {
            p[64 + k] = [cx + hw * 0.8 - hw * 1.6 * k as f32 / 4.0, my + 1.0 + g];
        }
        p
    }
    pub(crate) fn iris(&self, dx: f32, dy: f32) -> [Iris; 2] {
        let ey = self.cy - 0.35 * self.fh;
        [-1.0f32, 1.0].map(|s| Iris { cx: self.cx + s * 0.42 * self.fw + dx, cy: ey + dy, r: self.ew * 0.2 })
    }
    pub(crate) fn shape(&self) -> Shape68 {
        Shape68 { pts68: self.pts(), iris: Some(self.iris(0.0, 0.0)) }
    }
}

pub(crate) fn transform(p: &Pts68, t: &Similarity) -> Pts68 {
    p.map(|q| t.apply(q))
}

pub(crate) fn max_diff(a: &Pts68, b: &Pts68) -> f32 {
    a.iter().zip(b).map(|(p, q)| (p[0] - q[0]).abs().max((p[1] - q[1]).abs())).fold(0.0, f32::max)
}

pub(crate) fn no_smoothing() -> RetargetParams {
    RetargetParams { pose_smoothing: 0.0, ..Default::default() }
}

pub(crate) fn retargeter() -> Retargeter {
    Retargeter::new(Face::neutral().shape(), Some(Face::other().shape()), no_smoothing()).unwrap()
}

pub(crate) fn procrustes(a: &Pts68, b: &Pts68) -> f64 {
    crate::core::geometry::procrustes_distance(a, b).unwrap()
}
