//! Plain data passed between stages: frames and face landmarks.
use std::time::Duration;

/// A tightly packed RGB24 image (row stride = 3 * width).
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// RGB bytes, `3 * width * height` of them.
    pub data: Vec<u8>,
    /// Presentation time from the source (camera clock or file timestamp).
    pub pts: Duration,
    /// Monotonic sequence number assigned by the source; gaps mean dropped frames.
    pub seq: u64,
}

impl Frame {
    /// A black frame of the given size.
    pub fn black(width: u32, height: u32) -> Self {
        Frame { width, height, data: vec![0; 3 * width as usize * height as usize], pts: Duration::ZERO, seq: 0 }
    }
    pub fn len_ok(&self) -> bool {
        self.data.len() == 3 * self.width as usize * self.height as usize
    }
}

/// One iris: centre and radius in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Iris {
    pub cx: f32,
    pub cy: f32,
    pub r: f32,
}

/// Landmarks of one face, in the pixel coordinates of the frame they were found in.
#[derive(Clone, Debug, PartialEq)]
pub struct FaceLandmarks {
    /// MediaPipe's 468-point mesh (x, y in pixels, z in the same scale as x); may be empty when
    /// the landmarks came from a file that only holds the 68 points.
    pub mesh: Vec<[f32; 3]>,
    /// The 68-point iBUG scheme derived from the mesh (see docs/rasteriser.md).
    pub pts68: [[f32; 2]; 68],
    /// Irises: [subject's right (image left), subject's left], when the iris model ran.
    pub iris: Option<[Iris; 2]>,
    /// Landmark-model face presence score in 0..1.
    pub score: f32,
}
