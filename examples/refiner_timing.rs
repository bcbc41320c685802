//! Where the refiner's time goes on this machine: crop + raster, the ONNX call, the paste-back,
//! against the plain warp render (the bundled default avatar, its own mesh, mouth opening).
//!   cargo run --release --example refiner_timing
use puppetcam::avatar::{WarpAvatar, WarpRenderer};
use puppetcam::core::regions::{self, RegionKind};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let av = WarpAvatar::load(std::path::Path::new("onnx/default_avatar.pcav"))?;
    let r = av.refiner.clone().expect("default avatar has a refiner");
    let (w, h) = (1280, 720);
    let mut rend = WarpRenderer::new(&av, w, h)?;
    rend.set_fallbacks(false);
    let mesh = rend.neutral().to_vec();
    let iris = rend.neutral_iris();
    for threads in [1usize, 2] {
        let opts = puppetcam::ep::RuntimeOptions { intra_threads: threads, ..puppetcam::ep::RuntimeOptions::cpu() };
        let mut refiner = puppetcam::refine::Refiner::from_blob(&r, &opts)?;
        let (mut t_render, mut t_prep, mut t_all) = (vec![], vec![], vec![]);
        for _ in 0..60 {
            let t = Instant::now();
            let mut f = rend.render(&mesh, iris.as_ref(), &puppetcam::core::geometry::Similarity::IDENTITY, 0.04)?;
            t_render.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let bx = regions::boxes(&mesh).unwrap();
            let kinds = [RegionKind::Mouth, RegionKind::Eye(0), RegionKind::Eye(1)];
            for k in 0..3 {
                let _c = regions::crop(&f, &bx[k]);
                let _r = regions::raster(&bx[k], kinds[k], &mesh, iris.as_ref());
            }
            t_prep.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            refiner.refine(&mut f, &mesh, iris.as_ref())?;
            t_all.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        println!(
            "ORT threads {threads}: warp render {:.2} ms, crops+rasters {:.2} ms, refine total (crops, rasters, ONNX, paste) {:.2} ms",
            med(&mut t_render),
            med(&mut t_prep),
            med(&mut t_all)
        );
    }
    Ok(())
}
