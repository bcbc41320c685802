//! The generator stage's avatar, of either kind: a warp avatar (`.pcav`: dense warp of the
//! portrait, see `crate::avatar`) or a contract-1 generator ONNX (full-image generator, for
//! GPU-trained models). One interface for the generator thread: load, idle frame, one frame
//! per driver landmarks.
use super::compose::{self, CropPose};
use super::generator_stage::{GenCtx, LoadCtx};
use crate::avatar::{Ease, MeshNeutral, WarpAvatar, WarpStage};
use crate::core::pasteback::Compositor;
use crate::core::raster::rasterise_into;
use crate::core::retarget::{FaceLostEaser, NeutralStatus, Retargeter, Shape68};
use crate::core::types::{FaceLandmarks, Frame};
use crate::error::Result;
use crate::generator::{AvatarMeta, Generator};
use std::path::Path;
use std::sync::Arc;

/// A contract-1 generator avatar with what the generator thread derives from it.
struct OnnxAvatar {
    gen: Generator,
    compositor: Compositor,
    retargeter: Option<Retargeter>,
    easer: FaceLostEaser,
}

enum Kind {
    Onnx(Box<OnnxAvatar>),
    Warp(Box<WarpStage>),
}

/// The loaded avatar.
pub(super) struct Avatar {
    kind: Kind,
    pub(super) idle: Arc<Frame>,
    name: String,
    /// Where the network runs, published with the avatar (a load beside the running avatar must
    /// not change the status before it replaces it).
    ep: crate::stats::EpStatus,
}

impl Avatar {
    /// Loads `path`; touches no shared state (see [`Avatar::publish`]).
    pub(super) fn load(path: &Path, ctx: &LoadCtx, raster: &mut [u8]) -> Result<Avatar> {
        if crate::avatar::file::path_is_warp_avatar(path) {
            return Self::load_warp(path, ctx);
        }
        let mut gen = Generator::open(path, &ctx.runtime)?;
        let meta: &AvatarMeta = gen.meta();
        let neutral = CropPose { pts68: meta.neutral_lm68, iris: meta.neutral_iris };
        let mut compositor = Compositor::new(meta.portrait.clone(), meta.crop_box, ctx.out_w, ctx.out_h)?;
        let target = Shape68 { pts68: neutral.pts68, iris: neutral.iris };
        let retargeter = match &ctx.retarget {
            Some(params) => Some(Retargeter::new(target, ctx.calibration.as_ref().map(|c| c.neutral), params.clone())?),
            None => None,
        };
        let easer = FaceLostEaser::new(target, ctx.ease.hold_s, ctx.ease.out_s, ctx.ease.in_s);
        rasterise_into(&neutral.pts68, neutral.iris.as_ref(), raster)?;
        let face = gen.run(raster)?;
        let idle = Arc::new(compositor.compose(&face)?);
        let ep = gen.ep_status().clone();
        let name = gen.meta().name.clone();
        Ok(Avatar { kind: Kind::Onnx(Box::new(OnnxAvatar { gen, compositor, retargeter, easer })), idle, name, ep })
    }

    fn load_warp(path: &Path, ctx: &LoadCtx) -> Result<Avatar> {
        let wa = WarpAvatar::load(path)?;
        let neutral = ctx.calibration.as_ref().map(|c| MeshNeutral { pts68: c.neutral.pts68, mesh: c.mesh.clone(), depth: c.depth.clone(), iris: c.neutral.iris });
        let params = ctx.retarget.clone().unwrap_or_default();
        let ease = Ease { hold_s: ctx.ease.hold_s, out_s: ctx.ease.out_s, in_s: ctx.ease.in_s };
        let name = wa.name.clone();
        let shots = wa.shots.len();
        let stage = WarpStage::with_fit(wa, ctx.out_w, ctx.out_h, params, neutral.as_ref(), ease, Some(&ctx.runtime), ctx.fit)?;
        let refined = if stage.refiner_ep().is_some() { ", learned refiner" } else { "" };
        log::info!("avatar: warp avatar `{name}` ({shots} shot(s){refined}) from {}", path.display());
        let idle = Arc::new(stage.idle());
        let ep = match stage.refiner_ep() {
            // The warp is plain Rust on the CPU; the refiner network runs where ORT put it.
            Some(ep) => crate::stats::EpStatus { active: format!("{} (refiner; warp on the CPU)", ep.active), fallback_reason: ep.fallback_reason.clone() },
            None => crate::stats::EpStatus { active: "CPU (warp avatar, no network)".into(), fallback_reason: None },
        };
        Ok(Avatar { kind: Kind::Warp(Box::new(stage)), idle, name, ep })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn retarget_status(&self) -> Option<NeutralStatus> {
        match &self.kind {
            Kind::Onnx(o) => o.retargeter.as_ref().map(Retargeter::status),
            Kind::Warp(w) => Some(w.status()),
        }
    }

    /// "Neutral now": the retargeter learns the driver's neutral again from the next steady
    /// frames. False when this avatar does not retarget (`[retarget] enabled = false`).
    pub(super) fn relearn_neutral(&mut self) -> bool {
        match &mut self.kind {
            Kind::Warp(w) => {
                w.relearn_neutral();
                true
            }
            Kind::Onnx(o) => o.retargeter.as_mut().map(Retargeter::relearn_now).is_some(),
        }
    }

    /// Eye contact on or off; false when this avatar does not retarget (nothing to switch).
    pub(super) fn set_eye_contact(&mut self, on: bool) -> bool {
        match &mut self.kind {
            Kind::Warp(w) => {
                w.set_eye_contact(on);
                true
            }
            Kind::Onnx(o) => o.retargeter.as_mut().map(|r| r.set_eye_contact(on)).is_some(),
        }
    }

    /// Whether eye contact is on (false without retargeting).
    pub(super) fn eye_contact(&self) -> bool {
        match &self.kind {
            Kind::Warp(w) => w.eye_contact(),
            Kind::Onnx(o) => o.retargeter.as_ref().is_some_and(Retargeter::eye_contact),
        }
    }

    /// Shows this avatar on the status page and /metrics.
    pub(super) fn publish(&self, ctx: &GenCtx) {
        let source = ctx.load.calibration.as_ref().map_or("", |c| c.source.as_str());
        *ctx.stats.ep.write() = self.ep.clone();
        *ctx.stats.retarget_state.write() = super::retarget_state_text(self.retarget_status(), source);
        *ctx.stats.avatar_name.write() = self.name.clone();
    }

    /// One output frame for this driver frame (`None`: no face). Returns the frame and whether
    /// the driver's face was used (false: lost, rejected or absent).
    pub(super) fn frame(&mut self, lm: Option<&FaceLandmarks>, dt: f32, raster: &mut [u8]) -> Result<(Frame, bool)> {
        match &mut self.kind {
            Kind::Warp(w) => w.frame(lm, dt),
            Kind::Onnx(o) => {
                let driven: Option<CropPose> = match (&mut o.retargeter, lm) {
                    (_, None) => None,
                    (Some(r), Some(l)) => r.step(Some((&l.pts68, l.iris.as_ref()))).map(|s| CropPose { pts68: s.pts68, iris: s.iris }),
                    (None, Some(l)) => compose::driver_to_crop(l),
                };
                let used = driven.is_some();
                let input = driven.map(|p| Shape68 { pts68: p.pts68, iris: p.iris });
                let eased = o.easer.update(input.as_ref(), dt);
                rasterise_into(&eased.pts68, eased.iris.as_ref(), raster)?;
                let face = o.gen.run(raster)?;
                Ok((o.compositor.compose(&face)?, used))
            }
        }
    }
}
