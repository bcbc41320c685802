//! `puppetcam avatar create`: images -> a warp avatar. The first image is the portrait that is
//! animated; every image is a shot (K = 1..32) whose mouth can stand in for the portrait's.
//! Also the content-hash cache behind `run --portrait IMAGE`.
use super::file::{Shot, WarpAvatar, EXTENSION, MAX_SHOTS, MAX_SIDE};
use crate::core::warp::WarpModel;
use crate::face::still::StillLandmarker;
use crate::face::FaceModels;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What `create` reports about each image.
#[derive(Clone, Debug, PartialEq)]
pub struct ShotReport {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub faces_found: usize,
    pub has_iris: bool,
}

/// Largest side of the shots after the portrait: 31 of them at 2048x1536 plus a 4096-pixel
/// portrait fit `file::MAX_TOTAL_PIXELS`.
const OTHER_SHOT_SIDE: u32 = 2048;

/// Largest distance (in the shot's pixels, relative to its inter-ocular distance) between a
/// stored mesh point and the re-detected one for [`add_depth`] to accept the new depth.
const DEPTH_MATCH_IOD: f32 = 0.03;

/// Measures the depth of every shot's mesh of an avatar made before version 3: re-detects the
/// landmarks on the stored image and keeps their depth when the re-detected points match the
/// stored ones (the same models on the same pixels). Returns the largest point distance, pixels.
pub fn add_depth(av: &mut WarpAvatar, models: &FaceModels) -> Result<f32> {
    let mut lm = StillLandmarker::new(models)?;
    let mut worst = 0.0f32;
    for (k, s) in av.shots.iter_mut().enumerate() {
        let face = lm.landmarks(&s.image)?.ok_or_else(|| Error::Invalid(format!("shot {k} ({}): no face found any more", s.source)))?;
        let iod = crate::core::geometry::dist(s.mesh[33], s.mesh[263]) as f32;
        let d = s.mesh.iter().zip(&face.landmarks.mesh).map(|(a, b)| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()).fold(0.0f32, f32::max);
        if !(d <= DEPTH_MATCH_IOD * iod) {
            return Err(Error::Invalid(format!(
                "shot {k} ({}): re-detected landmarks differ from the stored ones by {d:.1} px (the face models changed?); make the avatar again",
                s.source
            )));
        }
        worst = worst.max(d);
        s.depth = Some(face.landmarks.mesh.iter().map(|p| p[2]).collect());
    }
    av.validate().map_err(|m| Error::Invalid(format!("avatar depth: {m}")))?;
    Ok(worst)
}

/// Builds a warp avatar from `images` (first = portrait). Errors name the image with no face.
pub fn create(images: &[PathBuf], name: &str, models: &FaceModels) -> Result<(WarpAvatar, Vec<ShotReport>)> {
    if images.is_empty() {
        return Err(Error::Invalid("avatar create: give at least one image (the portrait)".into()));
    }
    if images.len() > MAX_SHOTS {
        return Err(Error::Invalid(format!("avatar create: {} images, at most {MAX_SHOTS} shots", images.len())));
    }
    let mut lm = StillLandmarker::new(models)?;
    let mut shots = Vec::new();
    let mut reports = Vec::new();
    for (k, path) in images.iter().enumerate() {
        // Landmarks are found on the shrunk image. The portrait keeps up to MAX_SIDE; the other
        // shots (only their mouth and eyes are used) up to OTHER_SHOT_SIDE, so that 32 shots stay
        // within the file's total-pixel limit.
        let side = if k == 0 { MAX_SIDE } else { OTHER_SHOT_SIDE };
        let img = crate::pipeline::compose::fit_within(crate::imageio::read_image(path)?, side)?;
        let face = lm
            .landmarks(&img)?
            .ok_or_else(|| Error::Invalid(format!("{}: no face found (a frontal, well-lit face of at least ~100 pixels works best)", path.display())))?;
        if face.faces_found > 1 {
            log::warn!("{}: {} faces found; using the largest", path.display(), face.faces_found);
        }
        let mesh: Vec<[f32; 2]> = face.landmarks.mesh.iter().map(|p| [p[0], p[1]]).collect();
        // The mesh's depth turns the portrait's head in 3-D (core::warp3d).
        let depth: Vec<f32> = face.landmarks.mesh.iter().map(|p| p[2]).collect();
        reports.push(ShotReport {
            path: path.clone(),
            width: img.width,
            height: img.height,
            faces_found: face.faces_found,
            has_iris: face.landmarks.iris.is_some(),
        });
        let source = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        shots.push(Shot { image: img, mesh, iris: face.landmarks.iris, depth: Some(depth), source });
    }
    let p = &shots[0];
    let triangles = WarpModel::new(p.image.width, p.image.height, &p.mesh)?.triangles().to_vec();
    let sources: Vec<String> = shots.iter().map(|s| s.source.clone()).collect();
    let av = WarpAvatar {
        name: name.to_string(),
        shots,
        triangles,
        refiner: None,
        created: crate::calibrate::rfc3339_utc(std::time::SystemTime::now()),
        provenance: format!("puppetcam {} avatar create from {}", env!("CARGO_PKG_VERSION"), sources.join(", ")),
    };
    av.validate().map_err(|m| Error::Invalid(format!("avatar create: {m}")))?;
    Ok((av, reports))
}

/// `$XDG_CACHE_HOME/puppetcam/avatars` (or `~/.cache/...`); `None` without either variable.
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("puppetcam").join("avatars"))
}

/// Content hash of the images (and the avatar format), so an edited portrait gets a new avatar.
pub fn content_key(images: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"puppetcam warp avatar v");
    h.update(super::file::VERSION.to_le_bytes());
    // A refiner made feed-forward from the bundled weights: their bytes are part of the key.
    if let Some(a) = crate::refine::personalise::Assets::locate() {
        for p in [&a.refiner, &a.embedder] {
            h.update(std::fs::read(p).unwrap_or_default());
        }
    }
    for p in images {
        let bytes = std::fs::read(p).map_err(|source| Error::Io { path: p.clone(), source })?;
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect())
}

/// The cached avatar for `images`, created (and cached) when missing. Returns its path.
pub fn cached_avatar(images: &[PathBuf], models: &FaceModels, dir: Option<&Path>) -> Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => cache_dir().ok_or_else(|| Error::Invalid("no cache directory: set XDG_CACHE_HOME or HOME".into()))?,
    };
    let key = content_key(images)?;
    let path = dir.join(format!("{key}.{EXTENSION}"));
    if path.is_file() && super::file::WarpAvatar::load(&path).is_ok() {
        log::info!("avatar: using cached {}", path.display());
        return Ok(path);
    }
    let name = images[0].file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "portrait".into());
    let (mut av, _) = create(images, &name, models)?;
    // Feed-forward refiner (seconds): fine-tuning takes minutes, too long for starting `run`.
    let how = crate::refine::personalise::personalise(&mut av, crate::refine::personalise::Mode::FeedForward, &crate::ep::RuntimeOptions::cpu())?;
    log::info!("avatar: {how}");
    av.save(&path)?;
    log::info!("avatar: created {} from {}", path.display(), images[0].display());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_key_follows_bytes_not_names() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a.png"), d.path().join("b.png"), d.path().join("c.png"));
        std::fs::write(&a, b"one").unwrap();
        std::fs::write(&b, b"one").unwrap();
        std::fs::write(&c, b"two").unwrap();
        assert_eq!(content_key(&[a.clone()]).unwrap(), content_key(&[b.clone()]).unwrap());
        assert_ne!(content_key(&[a.clone()]).unwrap(), content_key(&[c.clone()]).unwrap());
        assert_ne!(content_key(&[a.clone()]).unwrap(), content_key(&[a.clone(), c]).unwrap());
        assert!(content_key(&[d.path().join("missing.png")]).unwrap_err().to_string().contains("missing.png"));
    }

    #[test]
    fn unreadable_images_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("not-an-image.jpg");
        std::fs::write(&p, b"garbage").unwrap();
        let e = crate::imageio::read_image(&p).unwrap_err().to_string();
        assert!(e.contains("not-an-image.jpg"), "{e}");
        assert!(create(&[], "x", &FaceModels::from_dir(d.path())).is_err());
    }
}
