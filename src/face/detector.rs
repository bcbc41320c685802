//! BlazeFace short-range face detector (MediaPipe face_detection_short_range): letterboxed
//! 128x128 input in [-1, 1], 896 SSD anchors, sigmoid scores, weighted NMS, 6 keypoints.
//! Decoding follows MediaPipe's SsdAnchorsCalculator and TensorsToDetectionsCalculator options for
//! this model.
use super::model;
use super::roi::{crop_to_tensor, frame_mat, rotation_from, Border, RotRect};
use crate::core::types::Frame;
use crate::error::Result;
use ort::session::Session;
use std::path::Path;

const SIZE: usize = 128;
const NUM_ANCHORS: usize = 896;
const NUM_COORDS: usize = 16;
/// Raw scores are clipped before the sigmoid (MediaPipe's score_clipping_thresh).
const SCORE_CLIP: f32 = 100.0;
/// IoU above which detections are merged by weighted NMS.
const NMS_IOU: f32 = 0.3;

/// One face detection in frame pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// `[x0, y0, x1, y1]`
    pub bbox: [f32; 4],
    pub score: f32,
    /// Subject's right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
    pub keypoints: [[f32; 2]; 6],
}

impl Detection {
    /// The landmark model's ROI for this detection: square, 1.5x the box, rotated so the eyes are
    /// level (MediaPipe's face_detection_front_detection_to_roi).
    pub fn roi(&self) -> RotRect {
        RotRect::square_around(self.bbox, rotation_from(self.keypoints[0], self.keypoints[1]), 1.5)
    }
}

/// Anchor centres in [0, 1] for strides [8, 16, 16, 16], two anchors per layer per cell
/// (aspect ratio 1 plus the interpolated scale), fixed anchor size: 16*16*2 + 8*8*6 = 896.
pub fn anchors() -> Vec<[f32; 2]> {
    let strides = [8usize, 16, 16, 16];
    let mut out = Vec::with_capacity(NUM_ANCHORS);
    let mut layer = 0;
    while layer < strides.len() {
        // Consecutive layers with the same stride share one feature map.
        let mut per_cell = 0;
        let mut last = layer;
        while last < strides.len() && strides[last] == strides[layer] {
            per_cell += 2;
            last += 1;
        }
        let fm = SIZE.div_ceil(strides[layer]);
        for y in 0..fm {
            for x in 0..fm {
                for _ in 0..per_cell {
                    out.push([(x as f32 + 0.5) / fm as f32, (y as f32 + 0.5) / fm as f32]);
                }
            }
        }
        layer = last;
    }
    out
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A decoded box in normalised tensor coordinates, before NMS.
#[derive(Clone, Debug)]
struct Raw {
    bbox: [f32; 4],
    score: f32,
    kps: [[f32; 2]; 6],
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Decodes the raw model outputs (tensor-normalised coordinates) and returns detections above
/// `min_score`, merged by MediaPipe's weighted NMS, best first.
fn decode(regressors: &[f32], scores: &[f32], anchors: &[[f32; 2]], min_score: f32) -> Vec<Raw> {
    let mut cands: Vec<Raw> = Vec::new();
    for (i, a) in anchors.iter().enumerate() {
        let score = sigmoid(scores[i].clamp(-SCORE_CLIP, SCORE_CLIP));
        if score < min_score {
            continue;
        }
        let r = &regressors[i * NUM_COORDS..(i + 1) * NUM_COORDS];
        let s = SIZE as f32;
        let (cx, cy) = (r[0] / s + a[0], r[1] / s + a[1]);
        let (w, h) = (r[2] / s, r[3] / s);
        let mut kps = [[0.0; 2]; 6];
        for (k, kp) in kps.iter_mut().enumerate() {
            *kp = [r[4 + 2 * k] / s + a[0], r[5 + 2 * k] / s + a[1]];
        }
        if !(w > 0.0 && h > 0.0) {
            continue;
        }
        cands.push(Raw { bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], score, kps });
    }
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    while !cands.is_empty() {
        let top = cands.remove(0);
        let (mut cluster, rest): (Vec<Raw>, Vec<Raw>) = cands.into_iter().partition(|c| iou(&top.bbox, &c.bbox) > NMS_IOU);
        cands = rest;
        cluster.insert(0, top.clone());
        let total: f32 = cluster.iter().map(|c| c.score).sum();
        let mut merged = Raw { bbox: [0.0; 4], score: top.score, kps: [[0.0; 2]; 6] };
        for c in &cluster {
            let wgt = c.score / total;
            for j in 0..4 {
                merged.bbox[j] += c.bbox[j] * wgt;
            }
            for k in 0..6 {
                merged.kps[k][0] += c.kps[k][0] * wgt;
                merged.kps[k][1] += c.kps[k][1] * wgt;
            }
        }
        out.push(merged);
    }
    out
}

/// The BlazeFace session and its anchors.
pub struct Detector {
    session: Session,
    anchors: Vec<[f32; 2]>,
    input: Vec<f32>,
}

impl Detector {
    pub fn load(path: &Path) -> Result<Self> {
        let session = model::load_checked(
            path,
            "face detector",
            1,
            &[1, 3, SIZE as i64, SIZE as i64],
            &[(&[1, NUM_ANCHORS as i64, NUM_COORDS as i64], "box regressors"), (&[1, NUM_ANCHORS as i64, 1], "scores")],
        )?;
        Ok(Detector { session, anchors: anchors(), input: Vec::new() })
    }

    /// Faces in `frame` with score >= `min_score`, best first, in frame pixels.
    pub fn detect(&mut self, frame: &Frame, min_score: f32) -> Result<Vec<Detection>> {
        let img = frame_mat(frame)?;
        // Letterbox: the whole frame, padded to a square with zeros (keep_aspect_ratio).
        let side = frame.width.max(frame.height) as f32;
        let rect = RotRect { cx: frame.width as f32 / 2.0, cy: frame.height as f32 / 2.0, w: side, h: side, angle: 0.0 };
        self.input = crop_to_tensor(&img, &rect, SIZE, Border::Zero, 2.0 / 255.0, -1.0, false)?;
        let out = model::run(&mut self.session, [1, 3, SIZE, SIZE], &self.input)?;
        let raws = decode(&out[0], &out[1], &self.anchors, min_score);
        Ok(raws
            .into_iter()
            .map(|r| {
                let p = |u: f32, v: f32| rect.to_frame(u * SIZE as f32, v * SIZE as f32, SIZE as f32, SIZE as f32);
                let a = p(r.bbox[0], r.bbox[1]);
                let b = p(r.bbox[2], r.bbox[3]);
                let mut keypoints = [[0.0; 2]; 6];
                for (k, kp) in keypoints.iter_mut().enumerate() {
                    *kp = p(r.kps[k][0], r.kps[k][1]);
                }
                Detection { bbox: [a[0], a[1], b[0], b[1]], score: r.score, keypoints }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_layout() {
        let a = anchors();
        assert_eq!(a.len(), NUM_ANCHORS);
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [1.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], [1.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[895], [7.5 / 8.0, 7.5 / 8.0]);
    }

    fn raw_outputs(boxes: &[(usize, f32, [f32; 4])]) -> (Vec<f32>, Vec<f32>) {
        // boxes: (anchor index, logit, [dx, dy, w, h] in tensor pixels)
        let mut reg = vec![0.0f32; NUM_ANCHORS * NUM_COORDS];
        let mut sc = vec![-50.0f32; NUM_ANCHORS];
        for &(i, logit, b) in boxes {
            reg[i * NUM_COORDS..i * NUM_COORDS + 4].copy_from_slice(&b);
            for k in 0..6 {
                reg[i * NUM_COORDS + 4 + 2 * k] = b[0] + k as f32;
                reg[i * NUM_COORDS + 5 + 2 * k] = b[1];
            }
            sc[i] = logit;
        }
        (reg, sc)
    }

    #[test]
    fn decode_applies_anchor_offsets_and_threshold() {
        let a = anchors();
        let (reg, sc) = raw_outputs(&[(600, 3.0, [12.8, -6.4, 32.0, 64.0]), (10, -3.0, [0.0, 0.0, 10.0, 10.0])]);
        let d = decode(&reg, &sc, &a, 0.5);
        assert_eq!(d.len(), 1, "the low-score box is dropped");
        let (cx, cy) = (a[600][0] + 0.1, a[600][1] - 0.05);
        let want = [cx - 0.125, cy - 0.25, cx + 0.125, cy + 0.25];
        for j in 0..4 {
            assert!((d[0].bbox[j] - want[j]).abs() < 1e-5, "{:?} vs {want:?}", d[0].bbox);
        }
        assert!((d[0].score - sigmoid(3.0)).abs() < 1e-6);
        assert!((d[0].kps[2][0] - (cx + 2.0 / 128.0)).abs() < 1e-5);
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_separate_faces() {
        let a = anchors();
        // Anchors 600 and 601 share a centre: two overlapping boxes; 100 is far away.
        let (reg, sc) = raw_outputs(&[
            (600, 2.0, [0.0, 0.0, 32.0, 32.0]),
            (601, 1.0, [3.2, 0.0, 32.0, 32.0]),
            (100, 0.5, [0.0, 0.0, 16.0, 16.0]),
        ]);
        let d = decode(&reg, &sc, &a, 0.5);
        assert_eq!(d.len(), 2);
        assert!((d[0].score - sigmoid(2.0)).abs() < 1e-6, "merged score is the best one's");
        let (w1, w2) = (sigmoid(2.0), sigmoid(1.0));
        let want_x0 = a[600][0] - 0.125 + 0.025 * w2 / (w1 + w2);
        assert!((d[0].bbox[0] - want_x0).abs() < 1e-5, "{} vs {want_x0}", d[0].bbox[0]);
        assert!(d[1].score < d[0].score);
    }

    #[test]
    fn roi_is_square_rotated_and_scaled() {
        let d = Detection {
            bbox: [100.0, 100.0, 200.0, 180.0],
            score: 0.9,
            keypoints: [[120.0, 130.0], [180.0, 130.0], [150.0, 150.0], [150.0, 170.0], [100.0, 140.0], [200.0, 140.0]],
        };
        let r = d.roi();
        assert_eq!((r.cx, r.cy, r.w, r.h), (150.0, 140.0, 150.0, 150.0));
        assert!(r.angle.abs() < 1e-6);
    }
}
