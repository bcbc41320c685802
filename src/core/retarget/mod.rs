//! Identity-preserving retargeting: turns the driver's 68 landmarks (or its 468-point mesh) into
//! landmarks of the *portrait's* face (crop coordinates) showing the driver's expression and
//! head pose.
//!
//! Why: the generator draws whatever face shape the raster shows. Feeding it the driver's raw
//! landmarks would morph the portrait into the driver. So we separate, per frame,
//! - head pose: a similarity aligning the driver's stable points (eye corners, nose, upper jaw)
//!   to the driver's own neutral face (`pose`);
//! - expression: the aligned driver points minus the driver's neutral, rescaled region by region
//!   to the portrait's proportions, and added to the portrait's neutral (`expression`, with the
//!   lips kept from crossing in `mouth`);
//! - eyes: lid opening transferred as a ratio of the neutral opening (blinks and winks stay
//!   faithful whatever the eye sizes), iris offset in normalised eye coordinates (`eyes`), or,
//!   with eye contact on, from the driver's screen gaze to the portrait looking into the camera
//!   (`eye_contact`);
//!
//! Then the pose is re-applied (limited and smoothed) around the portrait's face centre.
//! The driver's neutral comes from a calibration profile or is estimated (`neutral`) and, without
//! a profile, learned on line (`learning`). `Retargeter` (`retargeter`) runs the steps;
//! `FaceLostEaser` (`ease`) eases to the portrait's neutral when the face is lost.
//! See docs/retargeting.md. Pure: no I/O, never panics on bad input.
mod ease;
mod expression;
mod eye_contact;
mod eyes;
mod learning;
mod mouth;
mod neutral;
pub mod openness;
mod params;
mod pose;
mod retargeter;
mod topology;
#[cfg(test)]
pub(crate) mod tests;

pub use ease::{Blend, EasePhase, FaceLostEaser};
pub use eyes::{mesh_ears, remap_lids, scale_lid_opening};
pub use neutral::{estimate_neutral, NeutralEstimate, NeutralLimits, NeutralStatus, NotNeutral};
pub use params::RetargetParams;
pub use retargeter::{DriverNeutral, Posed, Retargeter};
pub use topology::Topology;

use super::geometry::Pt;
use super::types::Iris;
use crate::error::{Error, Result};

/// 68 points in the iBUG order.
pub type Pts68 = [[f32; 2]; 68];

/// Side of the landmark crop the generator sees (docs/rasteriser.md).
pub const CROP_SIDE: f32 = 256.0;

/// Points that move with the skull but little with expression: upper jaw (near the ears),
/// nose bridge and base, eye corners. Mouth, brows, lids and chin are excluded on purpose.
pub const STABLE: [usize; 15] = [0, 1, 15, 16, 27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45];

/// Landmarks ready for `core::raster::rasterise`: 68 points and optional irises.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape68 {
    pub pts68: Pts68,
    pub iris: Option<[Iris; 2]>,
}

impl Shape68 {
    pub fn is_finite(&self) -> bool {
        self.pts68.iter().all(|p| p[0].is_finite() && p[1].is_finite())
            && self.iris.map_or(true, |ir| ir.iter().all(|i| i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite()))
    }
}

fn check_finite(p: &Pts68, what: &str) -> Result<()> {
    if p.iter().all(|q| q[0].is_finite() && q[1].is_finite()) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{what}: non-finite landmark")))
    }
}

fn stable_pts(p: &Pts68) -> [Pt; STABLE.len()] {
    STABLE.map(|i| p[i])
}
