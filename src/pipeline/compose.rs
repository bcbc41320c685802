//! Simple stand-ins used by the generator thread: driver landmarks -> crop coordinates through the
//! driver's own crop box (docs/rasteriser.md), easing towards the neutral pose, and pasting the
//! generated face back into the portrait letterboxed to the output size.
use crate::core::raster::{crop_box_from_68, map_landmarks_to_crop, RASTER_SIZE};
use crate::core::types::{FaceLandmarks, Frame, Iris};
use crate::error::{Error, Result};
use opencv::core::{Mat, Size, Vec3b};
use opencv::imgproc;

/// A pose the generator is driven with: 68 points (and irises) in 256x256 crop coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct CropPose {
    pub pts68: [[f32; 2]; 68],
    pub iris: Option<[Iris; 2]>,
}

/// Driver landmarks (frame pixels) -> the driver's own face crop. `None` when the landmarks are
/// degenerate (treated like a lost face).
pub fn driver_to_crop(lm: &FaceLandmarks) -> Option<CropPose> {
    let crop = crop_box_from_68(&lm.pts68).ok()?;
    let m = map_landmarks_to_crop(lm, &crop, RASTER_SIZE as u32);
    Some(CropPose { pts68: m.pts68, iris: m.iris })
}

/// Moves `cur` a fraction `a` (0..1) of the way to `target` (irises follow when both have them).
pub fn ease(cur: &CropPose, target: &CropPose, a: f32) -> CropPose {
    let a = a.clamp(0.0, 1.0);
    let mut pts68 = cur.pts68;
    for (p, t) in pts68.iter_mut().zip(target.pts68.iter()) {
        p[0] += (t[0] - p[0]) * a;
        p[1] += (t[1] - p[1]) * a;
    }
    let iris = match (&cur.iris, &target.iris) {
        (Some(c), Some(t)) => Some([0, 1].map(|i| Iris {
            cx: c[i].cx + (t[i].cx - c[i].cx) * a,
            cy: c[i].cy + (t[i].cy - c[i].cy) * a,
            r: c[i].r + (t[i].r - c[i].r) * a,
        })),
        (_, t) => *t,
    };
    CropPose { pts68, iris }
}

/// Puts the generated face back into the portrait and letterboxes the result to the output size.
/// Keeps the resized portrait between frames (it only changes with the avatar).
pub struct Paster {
    out_w: u32,
    out_h: u32,
    /// Portrait scaled into the output canvas (letterbox bars black).
    base: Frame,
    /// Crop box mapped into output pixels: x0, y0 (integers) and side.
    dst: (i32, i32, i32),
}

impl Paster {
    pub fn new(portrait: &Frame, crop_box: [f32; 3], out_w: u32, out_h: u32) -> Result<Paster> {
        if !portrait.len_ok() || portrait.width == 0 || portrait.height == 0 || out_w == 0 || out_h == 0 {
            return Err(Error::Invalid(format!(
                "paste-back: portrait {}x{} / output {out_w}x{out_h} unusable",
                portrait.width, portrait.height
            )));
        }
        let s = (out_w as f64 / portrait.width as f64).min(out_h as f64 / portrait.height as f64);
        let (sw, sh) = (((portrait.width as f64 * s).round() as i32).max(1), ((portrait.height as f64 * s).round() as i32).max(1));
        let (ox, oy) = ((out_w as i32 - sw) / 2, (out_h as i32 - sh) / 2);
        let scaled = resize(portrait, sw, sh)?;
        let mut base = Frame::black(out_w, out_h);
        blit(&mut base, &scaled, ox, oy);
        let dst = (
            ox + (crop_box[0] as f64 * s).round() as i32,
            oy + (crop_box[1] as f64 * s).round() as i32,
            ((crop_box[2] as f64 * s).round() as i32).max(1),
        );
        Ok(Paster { out_w, out_h, base, dst })
    }

    /// The portrait alone (idle frame before the generator produced anything).
    pub fn base(&self) -> &Frame {
        &self.base
    }

    /// Composite of a generated `R x R` face into the letterboxed portrait.
    pub fn paste(&self, face: &Frame) -> Result<Frame> {
        let (x, y, side) = self.dst;
        let face = resize(face, side, side)?;
        let mut out = self.base.clone();
        blit(&mut out, &face, x, y);
        debug_assert!(out.width == self.out_w && out.height == self.out_h);
        Ok(out)
    }
}

/// Shrinks a frame whose long side exceeds `max_side` to that size (aspect kept); smaller
/// frames are returned as they are.
pub fn fit_within(f: Frame, max_side: u32) -> Result<Frame> {
    let long = f.width.max(f.height);
    if long <= max_side {
        return Ok(f);
    }
    let k = max_side as f64 / long as f64;
    resize(&f, ((f.width as f64 * k).round() as i32).max(1), ((f.height as f64 * k).round() as i32).max(1))
}

/// Resizes an RGB frame with INTER_AREA when shrinking, INTER_LINEAR when enlarging.
pub fn resize(f: &Frame, w: i32, h: i32) -> Result<Frame> {
    if f.width as i32 == w && f.height as i32 == h {
        return Ok(f.clone());
    }
    let src = Mat::new_rows_cols_with_bytes::<Vec3b>(f.height as i32, f.width as i32, &f.data)?;
    let mut out = vec![0u8; 3 * w as usize * h as usize];
    {
        let mut dst = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(h, w, &mut out)?;
        let interp = if w < f.width as i32 { imgproc::INTER_AREA } else { imgproc::INTER_LINEAR };
        imgproc::resize(&src, &mut dst, Size::new(w, h), 0.0, 0.0, interp)?;
    }
    Ok(Frame { width: w as u32, height: h as u32, data: out, pts: f.pts, seq: f.seq })
}

/// Copies `src` into `dst` at (x, y), clipped to `dst`.
pub fn blit(dst: &mut Frame, src: &Frame, x: i32, y: i32) {
    let (dw, dh) = (dst.width as i32, dst.height as i32);
    let (sw, sh) = (src.width as i32, src.height as i32);
    let (x0, x1) = (x.max(0), (x + sw).min(dw));
    let (y0, y1) = (y.max(0), (y + sh).min(dh));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let n = 3 * (x1 - x0) as usize;
    for row in y0..y1 {
        let d = 3 * (row as usize * dw as usize + x0 as usize);
        let s = 3 * ((row - y) as usize * sw as usize + (x0 - x) as usize);
        dst.data[d..d + n].copy_from_slice(&src.data[s..s + n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, rgb: [u8; 3]) -> Frame {
        let mut f = Frame::black(w, h);
        for px in f.data.chunks_exact_mut(3) {
            px.copy_from_slice(&rgb);
        }
        f
    }

    #[test]
    fn blit_clips_at_every_edge() {
        let mut d = Frame::black(4, 4);
        blit(&mut d, &solid(3, 3, [9, 9, 9]), -1, 2);
        // covers x 0..2, y 2..4
        let at = |x: usize, y: usize| d.data[3 * (y * 4 + x)];
        assert_eq!((at(0, 2), at(1, 3), at(2, 2), at(0, 1)), (9, 9, 0, 0));
        blit(&mut d, &solid(3, 3, [7, 7, 7]), 10, 10); // entirely outside: no-op, no panic
    }

    #[test]
    fn paster_letterboxes_and_places_the_face() {
        // 100x200 portrait into 400x400: scale 2, bars of 100 px left and right.
        let p = Paster::new(&solid(100, 200, [50, 60, 70]), [25.0, 50.0, 50.0], 400, 400).unwrap();
        assert_eq!(&p.base().data[0..3], &[0, 0, 0]);
        let px = |f: &Frame, x: usize, y: usize| f.data[3 * (y * 400 + x)..3 * (y * 400 + x) + 3].to_vec();
        assert_eq!(px(p.base(), 150, 10), vec![50, 60, 70]);
        let out = p.paste(&solid(8, 8, [200, 10, 10])).unwrap();
        // face box: x 100 + 50 .. +100, y 100 .. 200
        assert_eq!(px(&out, 151, 101), vec![200, 10, 10]);
        assert_eq!(px(&out, 249, 199), vec![200, 10, 10]);
        assert_eq!(px(&out, 251, 150), vec![50, 60, 70]);
        assert_eq!(px(&out, 150, 99), vec![50, 60, 70]);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(Paster::new(&Frame::black(0, 0), [0.0, 0.0, 1.0], 10, 10).is_err());
        assert!(Paster::new(&Frame::black(2, 2), [0.0, 0.0, 1.0], 0, 10).is_err());
    }

    #[test]
    fn ease_moves_part_way() {
        let a = CropPose { pts68: [[0.0, 0.0]; 68], iris: None };
        let b = CropPose { pts68: [[10.0, -10.0]; 68], iris: None };
        let h = ease(&a, &b, 0.25);
        assert_eq!(h.pts68[5], [2.5, -2.5]);
        assert_eq!(ease(&a, &b, 2.0).pts68[0], [10.0, -10.0]);
    }
}
