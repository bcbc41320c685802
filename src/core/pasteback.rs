//! Paste-back: puts the generator's square face image back into the full portrait with a
//! feathered mask and border-ring colour matching, then letterboxes to the output size.
//!
//! Why this shape: the generator only sees the crop around the face, and its colours drift a
//! little from the portrait's. Blending with a soft mask that is 0 on the crop border and
//! matching the colour statistics of the ring where the blend happens makes the seam vanish.
//! Everything that does not depend on the face (mask, sampling tables, the letterboxed portrait
//! outside the face) is computed once in `new`; `compose` only touches the crop box.
//! Pure Rust, no I/O.
use super::geometry::smoothstep;
use super::types::Frame;
use crate::error::{Error, Result};

/// Tunables of paste-back (the `[retarget]`/`[output]` config may expose them).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PastebackParams {
    /// Mask is 1 inside this radius (fraction of the half crop side, from the crop centre).
    pub feather_inner: f32,
    /// Mask falls (smoothstep) to 0 at this radius; must be > inner and <= 1 so the crop border is 0.
    pub feather_outer: f32,
    /// Match mean/std per channel of the generated ring to the portrait's ring.
    pub colour_match: bool,
    /// Weight of the previous frame's colour correction (0 = none), against flicker.
    pub colour_smoothing: f32,
}

impl Default for PastebackParams {
    fn default() -> Self {
        PastebackParams { feather_inner: 0.7, feather_outer: 0.95, colour_match: true, colour_smoothing: 0.6 }
    }
}

impl PastebackParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::Config { key: format!("pasteback.{k}"), msg: m.into() });
        if !(self.feather_inner >= 0.0 && self.feather_inner < self.feather_outer) {
            return bad("feather_inner", "must be in [0, feather_outer)");
        }
        if !(self.feather_outer <= 1.0) {
            return bad("feather_outer", "must be <= 1 (the crop border must stay untouched)");
        }
        if !(self.colour_smoothing >= 0.0 && self.colour_smoothing < 1.0) {
            return bad("colour_smoothing", "must be in [0, 1)");
        }
        Ok(())
    }
}

/// Bilinear tap: two source indices and the weight of the second.
#[derive(Clone, Copy, Debug)]
struct Tap {
    i0: u32,
    i1: u32,
    w: f32,
}

/// Taps for destination samples at source positions `pos(d)`, clamped (border replicate).
fn taps(n_dst: usize, n_src: usize, pos: impl Fn(usize) -> f64) -> Vec<Tap> {
    let max = (n_src - 1) as f64;
    (0..n_dst)
        .map(|d| {
            let s = pos(d).clamp(0.0, max);
            let i0 = s.floor();
            let w = (s - i0) as f32;
            let i0 = i0 as u32;
            Tap { i0, i1: (i0 + 1).min(n_src as u32 - 1), w }
        })
        .collect()
}

/// All three channels of one bilinear sample (pixel offsets computed once).
#[inline]
fn bilinear3(data: &[u8], width: usize, tx: Tap, ty: Tap) -> [f32; 3] {
    let (r0, r1) = (ty.i0 as usize * width, ty.i1 as usize * width);
    let (a, b) = ((r0 + tx.i0 as usize) * 3, (r0 + tx.i1 as usize) * 3);
    let (c, d) = ((r1 + tx.i0 as usize) * 3, (r1 + tx.i1 as usize) * 3);
    let (pa, pb, pc, pd) = (&data[a..a + 3], &data[b..b + 3], &data[c..c + 3], &data[d..d + 3]);
    let mut out = [0f32; 3];
    for k in 0..3 {
        let top = pa[k] as f32 + (pb[k] as f32 - pa[k] as f32) * tx.w;
        let bot = pc[k] as f32 + (pd[k] as f32 - pc[k] as f32) * tx.w;
        out[k] = top + (bot - top) * ty.w;
    }
    out
}

#[inline]
fn to_u8(v: f32) -> u8 {
    (v + 0.5).clamp(0.0, 255.0) as u8
}

/// Crops the square `crop_box = [x0, y0, side]` of `frame` to `res x res` with the rasteriser's
/// crop rule (`u = (x - x0) * res / side`, bilinear, border replicate). Used to build avatar
/// crops and in tests (a generator that reproduced its input exactly would return this).
pub fn crop_square(frame: &Frame, crop_box: [f32; 3], res: u32) -> Result<Frame> {
    check_frame(frame, "crop source")?;
    let [x0, y0, side] = crop_box;
    if !(side > 0.0 && side.is_finite() && x0.is_finite() && y0.is_finite()) || res == 0 {
        return Err(Error::Invalid(format!("crop box {crop_box:?} / resolution {res} is invalid")));
    }
    let k = side as f64 / res as f64;
    let tx = taps(res as usize, frame.width as usize, |u| u as f64 * k + x0 as f64);
    let ty = taps(res as usize, frame.height as usize, |v| v as f64 * k + y0 as f64);
    let mut out = Frame::black(res, res);
    out.pts = frame.pts;
    out.seq = frame.seq;
    for (v, &yt) in ty.iter().enumerate() {
        for (u, &xt) in tx.iter().enumerate() {
            let px = bilinear3(&frame.data, frame.width as usize, xt, yt);
            for c in 0..3 {
                out.data[(v * res as usize + u) * 3 + c] = to_u8(px[c]);
            }
        }
    }
    Ok(out)
}

fn check_frame(f: &Frame, what: &str) -> Result<()> {
    if f.width == 0 || f.height == 0 || !f.len_ok() {
        return Err(Error::Invalid(format!("{what}: {}x{} frame with {} bytes", f.width, f.height, f.data.len())));
    }
    Ok(())
}

/// Mean and standard deviation per channel.
type Stats = [(f32, f32); 3];

/// Composites generated faces into the portrait and letterboxes the result.
#[derive(Debug)]
pub struct Compositor {
    params: PastebackParams,
    portrait: Frame,
    /// Portrait with the latest face composited; only the box region is rewritten.
    canvas: Vec<u8>,
    crop: [f32; 3],
    /// Crop box clipped to the portrait: x, y, w, h in portrait pixels.
    bx: usize,
    by: usize,
    bw: usize,
    bh: usize,
    mask: Vec<f32>,
    /// Indices (into the box) of the feather ring, where colour statistics are measured.
    ring: Vec<u32>,
    portrait_ring: Stats,
    /// Face sampling tables for the box, for the face resolution `face_res`.
    face_res: u32,
    face_tx: Vec<Tap>,
    face_ty: Vec<Tap>,
    /// Per box row, the half-open column span where the mask is non-zero (the mask is radial,
    /// so it is one span); pixels outside keep the portrait and are never touched per frame.
    spans: Vec<(u32, u32)>,
    colour: Option<[(f32, f32); 3]>,
    out_w: u32,
    out_h: u32,
    /// Letterboxed content rectangle in the output.
    cx: usize,
    cy: usize,
    cw: usize,
    ch: usize,
    out_tx: Vec<Tap>,
    out_ty: Vec<Tap>,
    base_out: Vec<u8>,
    /// Output rectangle (content-relative, half-open) whose samples read the box.
    dirty: (usize, usize, usize, usize),
}

impl Compositor {
    /// `portrait` at its native resolution, `crop_box = [x0, y0, side]` in its pixels (avatar
    /// metadata), output size `out_w x out_h`.
    pub fn new(portrait: Frame, crop_box: [f32; 3], out_w: u32, out_h: u32) -> Result<Self> {
        Self::with_params(portrait, crop_box, out_w, out_h, PastebackParams::default())
    }

    pub fn with_params(portrait: Frame, crop_box: [f32; 3], out_w: u32, out_h: u32, params: PastebackParams) -> Result<Self> {
        params.validate()?;
        check_frame(&portrait, "portrait")?;
        let [x0, y0, side] = crop_box;
        if !(side >= 2.0 && side.is_finite() && x0.is_finite() && y0.is_finite()) {
            return Err(Error::Invalid(format!("crop box {crop_box:?}: side must be >= 2 and all values finite")));
        }
        if out_w == 0 || out_h == 0 || out_w > 16384 || out_h > 16384 {
            return Err(Error::Invalid(format!("output size {out_w}x{out_h} is invalid")));
        }
        let (pw, ph) = (portrait.width as usize, portrait.height as usize);
        let bx0 = (x0.ceil().max(0.0) as usize).min(pw);
        let by0 = (y0.ceil().max(0.0) as usize).min(ph);
        let bx1 = (((x0 + side).floor() as f64 + 1.0).max(0.0) as usize).min(pw);
        let by1 = (((y0 + side).floor() as f64 + 1.0).max(0.0) as usize).min(ph);
        if bx1 <= bx0 || by1 <= by0 {
            return Err(Error::Invalid(format!("crop box {crop_box:?} does not overlap the {pw}x{ph} portrait")));
        }
        let (bw, bh) = (bx1 - bx0, by1 - by0);
        // Mask: radial smoothstep in crop-normalised coordinates (centre 0, border +-1).
        let mut mask = vec![0f32; bw * bh];
        let mut ring = Vec::new();
        let half = side as f64 / 2.0;
        let (mcx, mcy) = (x0 as f64 + half, y0 as f64 + half);
        let span = params.feather_outer - params.feather_inner;
        for j in 0..bh {
            for i in 0..bw {
                let nx = ((bx0 + i) as f64 - mcx) / half;
                let ny = ((by0 + j) as f64 - mcy) / half;
                let d = (nx * nx + ny * ny).sqrt() as f32;
                let m = 1.0 - smoothstep((d - params.feather_inner) / span);
                mask[j * bw + i] = m;
                if m > 0.02 && m < 0.98 {
                    ring.push((j * bw + i) as u32);
                }
            }
        }
        // Letterbox geometry.
        let scale = (out_w as f64 / pw as f64).min(out_h as f64 / ph as f64);
        let cw = ((pw as f64 * scale).round() as usize).clamp(1, out_w as usize);
        let ch = ((ph as f64 * scale).round() as usize).clamp(1, out_h as usize);
        let (cx, cy) = ((out_w as usize - cw) / 2, (out_h as usize - ch) / 2);
        let (sx, sy) = (pw as f64 / cw as f64, ph as f64 / ch as f64);
        let out_tx = taps(cw, pw, |d| (d as f64 + 0.5) * sx - 0.5);
        let out_ty = taps(ch, ph, |d| (d as f64 + 0.5) * sy - 0.5);
        let touches = |t: &Tap, lo: usize, hi: usize| (t.i0 as usize >= lo && (t.i0 as usize) < hi) || (t.i1 as usize >= lo && (t.i1 as usize) < hi);
        let cols: Vec<usize> = (0..cw).filter(|&d| touches(&out_tx[d], bx0, bx1)).collect();
        let rows: Vec<usize> = (0..ch).filter(|&d| touches(&out_ty[d], by0, by1)).collect();
        let dirty = match (cols.first(), cols.last(), rows.first(), rows.last()) {
            (Some(&a), Some(&b), Some(&c), Some(&d)) => (a, b + 1, c, d + 1),
            _ => (0, 0, 0, 0),
        };
        let spans: Vec<(u32, u32)> = (0..bh)
                .map(|j| {
                    let row = &mask[j * bw..(j + 1) * bw];
                    match (row.iter().position(|&m| m > 0.0), row.iter().rposition(|&m| m > 0.0)) {
                        (Some(a), Some(b)) => (a as u32, b as u32 + 1),
                        _ => (0, 0),
                    }
                })
                .collect();
        let mut c = Compositor {
            canvas: portrait.data.clone(),
            portrait_ring: [(0.0, 0.0); 3],
            params,
            crop: crop_box,
            bx: bx0,
            by: by0,
            bw,
            bh,
            mask,
            ring,
            face_res: 0,
            face_tx: Vec::new(),
            face_ty: Vec::new(),
            spans,
            colour: None,
            out_w,
            out_h,
            cx,
            cy,
            cw,
            ch,
            out_tx,
            out_ty,
            base_out: vec![0; out_w as usize * out_h as usize * 3],
            dirty,
            portrait,
        };
        c.portrait_ring = c.ring_stats_of_portrait();
        let mut base = std::mem::take(&mut c.base_out);
        c.resample_rect(&mut base, 0, c.cw, 0, c.ch);
        c.base_out = base;
        Ok(c)
    }

    /// The mask value at a portrait pixel (0 outside the crop box).
    pub fn mask_at(&self, x: u32, y: u32) -> f32 {
        let (x, y) = (x as usize, y as usize);
        if x < self.bx || y < self.by || x >= self.bx + self.bw || y >= self.by + self.bh {
            return 0.0;
        }
        self.mask[(y - self.by) * self.bw + (x - self.bx)]
    }

    /// Letterboxed content rectangle in the output: x, y, width, height.
    pub fn content_rect(&self) -> (u32, u32, u32, u32) {
        (self.cx as u32, self.cy as u32, self.cw as u32, self.ch as u32)
    }

    /// The portrait with the latest face composited, at the portrait's resolution.
    pub fn canvas(&self) -> &[u8] {
        &self.canvas
    }

    fn ring_stats_of_portrait(&self) -> Stats {
        let pw = self.portrait.width as usize;
        let mut acc = [(0f64, 0f64); 3];
        for &k in &self.ring {
            let (i, j) = (k as usize % self.bw, k as usize / self.bw);
            let o = ((self.by + j) * pw + self.bx + i) * 3;
            for c in 0..3 {
                let v = self.portrait.data[o + c] as f64;
                acc[c].0 += v;
                acc[c].1 += v * v;
            }
        }
        finish_stats(acc, self.ring.len())
    }

    fn ensure_face_tables(&mut self, res: u32) {
        if self.face_res == res {
            return;
        }
        let [x0, y0, side] = self.crop;
        let k = res as f64 / side as f64;
        let (bx, by) = (self.bx, self.by);
        self.face_tx = taps(self.bw, res as usize, |i| ((bx + i) as f64 - x0 as f64) * k);
        self.face_ty = taps(self.bh, res as usize, |j| ((by + j) as f64 - y0 as f64) * k);
        self.face_res = res;
    }

    /// Composites `face` (the generator output, R x R) and returns the letterboxed output frame
    /// (with `face`'s timestamp and sequence number).
    pub fn compose(&mut self, face: &Frame) -> Result<Frame> {
        let mut out = Frame::black(self.out_w, self.out_h);
        self.compose_into(face, &mut out)?;
        Ok(out)
    }

    /// Like [`compose`](Self::compose) into a caller-owned frame (resized if needed).
    pub fn compose_into(&mut self, face: &Frame, out: &mut Frame) -> Result<()> {
        check_frame(face, "generated face")?;
        if face.width != face.height {
            return Err(Error::Invalid(format!("generated face must be square, got {}x{}", face.width, face.height)));
        }
        self.ensure_face_tables(face.width);
        let fw = face.width as usize;
        // 1. Ring statistics of the face (sampled at the ring pixels only).
        let mut acc = [(0f64, 0f64); 3];
        let colour = if self.params.colour_match && !self.ring.is_empty() {
            for &k in &self.ring {
                let (i, j) = (k as usize % self.bw, k as usize / self.bw);
                let v = bilinear3(&face.data, fw, self.face_tx[i], self.face_ty[j]);
                for c in 0..3 {
                    acc[c].0 += v[c] as f64;
                    acc[c].1 += (v[c] as f64) * (v[c] as f64);
                }
            }
            let fs = finish_stats(acc, self.ring.len());
            // corrected = (f - mu_f) * gain + mu_p  =  f * gain + offset
            let now = [0, 1, 2].map(|c| {
                let (mf, sf) = fs[c];
                let (mp, sp) = self.portrait_ring[c];
                let gain = if sf > 1.0 { (sp / sf).clamp(0.6, 1.6) } else { 1.0 };
                (gain, mp - mf * gain)
            });
            let a = self.params.colour_smoothing;
            let smoothed = match self.colour {
                Some(prev) => [0, 1, 2].map(|c| (a * prev[c].0 + (1.0 - a) * now[c].0, a * prev[c].1 + (1.0 - a) * now[c].1)),
                None => now,
            };
            self.colour = Some(smoothed);
            smoothed
        } else {
            [(1.0, 0.0); 3]
        };
        // 2. Sample and blend into the canvas where the mask is non-zero (elsewhere the canvas
        // holds the portrait already).
        let pw = self.portrait.width as usize;
        for j in 0..self.bh {
            let ty = self.face_ty[j];
            let (a, b) = self.spans[j];
            for i in a as usize..b as usize {
                let m = self.mask[j * self.bw + i];
                let o = ((self.by + j) * pw + self.bx + i) * 3;
                let g = bilinear3(&face.data, fw, self.face_tx[i], ty);
                for c in 0..3 {
                    let p = self.portrait.data[o + c] as f32;
                    let g = g[c] * colour[c].0 + colour[c].1;
                    self.canvas[o + c] = to_u8(p + (g - p) * m);
                }
            }
        }
        // 3. Output: the precomputed letterbox, with the face's rectangle resampled.
        if out.width != self.out_w || out.height != self.out_h || out.data.len() != self.base_out.len() {
            *out = Frame::black(self.out_w, self.out_h);
        }
        out.data.copy_from_slice(&self.base_out);
        out.pts = face.pts;
        out.seq = face.seq;
        let (x0, x1, y0, y1) = self.dirty;
        let mut data = std::mem::take(&mut out.data);
        self.resample_rect(&mut data, x0, x1, y0, y1);
        out.data = data;
        Ok(())
    }

    /// Resamples the canvas into the output for content-relative columns x0..x1, rows y0..y1.
    fn resample_rect(&self, out: &mut [u8], x0: usize, x1: usize, y0: usize, y1: usize) {
        let (ow, pw) = (self.out_w as usize, self.portrait.width as usize);
        for dy in y0..y1 {
            let ty = self.out_ty[dy];
            let row = (self.cy + dy) * ow;
            for dx in x0..x1 {
                let tx = self.out_tx[dx];
                let o = (row + self.cx + dx) * 3;
                let v = bilinear3(&self.canvas, pw, tx, ty);
                for c in 0..3 {
                    out[o + c] = to_u8(v[c]);
                }
            }
        }
    }
}

fn finish_stats(acc: [(f64, f64); 3], n: usize) -> Stats {
    if n == 0 {
        return [(0.0, 0.0); 3];
    }
    acc.map(|(s, s2)| {
        let mean = s / n as f64;
        let var = (s2 / n as f64 - mean * mean).max(0.0);
        (mean as f32, var.sqrt() as f32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured test portrait: smooth gradients plus a checker so resampling errors show.
    fn portrait(w: u32, h: u32) -> Frame {
        let mut f = Frame::black(w, h);
        for y in 0..h {
            for x in 0..w {
                let o = ((y * w + x) * 3) as usize;
                f.data[o] = (40 + (x * 150 / w)) as u8;
                f.data[o + 1] = (60 + (y * 120 / h)) as u8;
                f.data[o + 2] = (90 + ((x / 16 + y / 16) % 2) as u32 * 40) as u8;
            }
        }
        f
    }

    fn px(f: &Frame, x: u32, y: u32) -> [u8; 3] {
        let o = ((y * f.width + x) * 3) as usize;
        [f.data[o], f.data[o + 1], f.data[o + 2]]
    }

    fn no_colour() -> PastebackParams {
        PastebackParams { colour_match: false, ..Default::default() }
    }

    #[test]
    fn output_size_and_letterbox_bars() {
        // Square portrait into 16:9: bars left and right, black.
        let p = portrait(400, 400);
        let mut c = Compositor::new(p, [100.0, 80.0, 200.0], 1280, 720).unwrap();
        assert_eq!(c.content_rect(), (280, 0, 720, 720));
        let face = Frame::black(256, 256);
        let out = c.compose(&face).unwrap();
        assert_eq!((out.width, out.height, out.data.len()), (1280, 720, 1280 * 720 * 3));
        for &(x, y) in &[(0, 0), (279, 360), (1000, 719), (1279, 100)] {
            assert_eq!(px(&out, x, y), [0, 0, 0], "bar at {x},{y}");
        }
        assert_ne!(px(&out, 285, 5), [0, 0, 0]);
        // Portrait taller than the output aspect: bars left/right; wider: bars top/bottom.
        let c = Compositor::new(portrait(300, 600), [50.0, 50.0, 150.0], 640, 480).unwrap();
        assert_eq!(c.content_rect(), (200, 0, 240, 480));
        let c = Compositor::new(portrait(800, 200), [50.0, 20.0, 100.0], 640, 480).unwrap();
        assert_eq!(c.content_rect(), (0, 160, 640, 160));
    }

    #[test]
    fn mask_is_one_in_centre_zero_outside() {
        let c = Compositor::new(portrait(400, 400), [100.0, 80.0, 200.0], 640, 480).unwrap();
        assert_eq!(c.mask_at(200, 180), 1.0);
        assert_eq!(c.mask_at(50, 50), 0.0);
        assert_eq!(c.mask_at(399, 399), 0.0);
        // Box border and corners are 0: no hard seam at the crop edge.
        assert!(c.mask_at(100, 180) < 1e-3 && c.mask_at(200, 80) < 1e-3 && c.mask_at(299, 180) < 0.01);
        assert_eq!(c.mask_at(110, 90), 0.0);
        // Monotone fall-off along a ray from the centre.
        let row: Vec<f32> = (200..300).map(|x| c.mask_at(x, 180)).collect();
        assert!(row.windows(2).all(|w| w[1] <= w[0] + 1e-6));
        assert!(row.iter().any(|&m| m > 0.1 && m < 0.9), "feathered, not hard");
    }

    #[test]
    fn only_the_box_changes() {
        let p = portrait(320, 240);
        let mut c = Compositor::with_params(p.clone(), [100.0, 40.0, 120.0], 320, 240, no_colour()).unwrap();
        let mut face = Frame::black(256, 256);
        face.data.iter_mut().for_each(|v| *v = 255);
        let out = c.compose(&face).unwrap();
        // Output is the portrait at 1:1 here; outside the box it must be byte-identical.
        for y in 0..240 {
            for x in 0..320 {
                let inside = (100..=220).contains(&x) && (40..=160).contains(&y);
                if !inside {
                    assert_eq!(px(&out, x, y), px(&p, x, y), "{x},{y}");
                }
            }
        }
        // Centre shows the face (white).
        assert_eq!(px(&out, 160, 100), [255, 255, 255]);
    }

    #[test]
    fn reproducing_the_crop_leaves_the_portrait_unchanged() {
        let p = portrait(360, 300);
        let crop = [90.0, 50.0, 180.0];
        let mut c = Compositor::new(p.clone(), crop, 360, 300).unwrap();
        let face = crop_square(&p, crop, 256).unwrap();
        let out = c.compose(&face).unwrap();
        let mut worst = 0i32;
        for (a, b) in out.data.iter().zip(&p.data) {
            worst = worst.max((*a as i32 - *b as i32).abs());
        }
        // Down- then up-sampling a 16-px checker blurs its edges a little; nothing else changes.
        assert!(worst <= 40, "{worst}");
        let mean: f64 = out.data.iter().zip(&p.data).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / p.data.len() as f64;
        assert!(mean < 1.0, "{mean}");
    }

    /// Mean absolute difference between output and portrait over the feather ring.
    fn seam_error(c: &Compositor, out: &Frame, p: &Frame) -> f64 {
        let mut acc = 0.0;
        let mut n = 0;
        for y in 0..p.height {
            for x in 0..p.width {
                let m = c.mask_at(x, y);
                if m > 0.05 && m < 0.6 {
                    let (a, b) = (px(out, x, y), px(p, x, y));
                    acc += (0..3).map(|k| (a[k] as f64 - b[k] as f64).abs()).sum::<f64>();
                    n += 3;
                }
            }
        }
        acc / n as f64
    }

    #[test]
    fn colour_matching_reduces_seam_error() {
        let p = portrait(300, 300);
        let crop = [60.0, 60.0, 180.0];
        let mut face = crop_square(&p, crop, 256).unwrap();
        // The generator's colours drift: a cast and a contrast change.
        for (k, v) in face.data.iter_mut().enumerate() {
            let f = *v as f32;
            *v = match k % 3 {
                0 => to_u8(f * 1.2 + 25.0),
                1 => to_u8(f * 0.85 - 10.0),
                _ => to_u8(f + 30.0),
            };
        }
        let mut plain = Compositor::with_params(p.clone(), crop, 300, 300, no_colour()).unwrap();
        let mut matched = Compositor::new(p.clone(), crop, 300, 300).unwrap();
        let out_plain = plain.compose(&face).unwrap();
        let out_matched = matched.compose(&face).unwrap();
        let e_plain = seam_error(&plain, &out_plain, &p);
        let e_matched = seam_error(&matched, &out_matched, &p);
        assert!(e_plain > 10.0, "{e_plain}");
        assert!(e_matched < e_plain / 3.0, "{e_matched} vs {e_plain}");
    }

    #[test]
    fn crop_box_partly_outside_and_other_face_sizes() {
        let p = portrait(200, 200);
        let mut c = Compositor::with_params(p.clone(), [-50.0, 120.0, 160.0], 200, 200, no_colour()).unwrap();
        for res in [128u32, 256, 512] {
            let out = c.compose(&Frame::black(res, res)).unwrap();
            assert_eq!(out.data.len(), 200 * 200 * 3);
            // Face centre (30, 200) is the bottom-left; inside the visible part it is black.
            assert_eq!(px(&out, 20, 190), [0, 0, 0]);
            assert_eq!(px(&out, 150, 50), px(&p, 150, 50));
        }
    }

    #[test]
    fn compose_into_reuses_the_frame_and_keeps_timing() {
        let mut c = Compositor::new(portrait(100, 100), [20.0, 20.0, 60.0], 64, 48).unwrap();
        let mut face = Frame::black(256, 256);
        face.seq = 42;
        face.pts = std::time::Duration::from_millis(1234);
        let mut out = Frame::black(1, 1);
        c.compose_into(&face, &mut out).unwrap();
        assert_eq!((out.width, out.height, out.seq, out.pts), (64, 48, 42, face.pts));
        let ptr = out.data.as_ptr();
        c.compose_into(&face, &mut out).unwrap();
        assert_eq!(ptr, out.data.as_ptr(), "no reallocation on the hot path");
    }

    #[test]
    fn bad_input_is_an_error() {
        let p = portrait(100, 100);
        assert!(Compositor::new(p.clone(), [200.0, 200.0, 50.0], 64, 64).is_err(), "box outside");
        assert!(Compositor::new(p.clone(), [10.0, 10.0, f32::NAN], 64, 64).is_err());
        assert!(Compositor::new(p.clone(), [10.0, 10.0, 0.0], 64, 64).is_err());
        assert!(Compositor::new(p.clone(), [10.0, 10.0, 50.0], 0, 64).is_err());
        assert!(Compositor::new(Frame::black(0, 0), [10.0, 10.0, 50.0], 64, 64).is_err());
        let mut short = p.clone();
        short.data.pop();
        assert!(Compositor::new(short, [10.0, 10.0, 50.0], 64, 64).is_err());
        let params = PastebackParams { feather_inner: 0.9, feather_outer: 0.5, ..Default::default() };
        assert!(Compositor::with_params(p.clone(), [10.0, 10.0, 50.0], 64, 64, params).is_err());
        let mut c = Compositor::new(p.clone(), [10.0, 10.0, 50.0], 64, 64).unwrap();
        assert!(c.compose(&Frame::black(256, 128)).is_err());
        let mut bad = Frame::black(256, 256);
        bad.data.truncate(10);
        assert!(c.compose(&bad).is_err());
        assert!(crop_square(&p, [0.0, 0.0, -1.0], 256).is_err());
        assert!(crop_square(&p, [0.0, 0.0, 10.0], 0).is_err());
    }

    #[test]
    fn crop_square_follows_the_crop_rule() {
        let p = portrait(200, 100);
        // side == res: an exact copy of the window.
        let c = crop_square(&p, [30.0, 20.0, 64.0], 64).unwrap();
        for &(u, v) in &[(0u32, 0u32), (10, 5), (63, 63)] {
            assert_eq!(px(&c, u, v), px(&p, 30 + u, 20 + v));
        }
        // Outside the image: border replicate.
        let c = crop_square(&p, [-10.0, -10.0, 20.0], 20).unwrap();
        assert_eq!(px(&c, 0, 0), px(&p, 0, 0));
    }
}
