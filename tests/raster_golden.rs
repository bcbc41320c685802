//! Golden test of the landmark raster (docs/rasteriser.md): the Rust rasteriser must reproduce
//! tests/golden/raster_*.png byte for byte, the same files the Python twin is checked against.
//! `PUPPETCAM_BLESS=1 cargo test --test raster_golden` rewrites the PNGs from the current code.
use std::path::{Path, PathBuf};

use opencv::core::{Mat, Vec3b, Vector};
use opencv::imgcodecs;
use opencv::imgproc;
use opencv::prelude::*;
use puppetcam::core::raster::{rasterise, RASTER_BYTES, RASTER_SIZE};
use puppetcam::core::types::Iris;

const CASES: [&str; 4] = ["neutral", "open_mouth_iris", "rotated_subpixel", "partly_outside"];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Reads a landmarks_*.json case: 68 points and optional irises.
fn load_case(name: &str) -> ([[f32; 2]; 68], Option<[Iris; 2]>) {
    let text = std::fs::read_to_string(golden_dir().join(format!("landmarks_{name}.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let pts: Vec<[f32; 2]> = serde_json::from_value(v["pts68"].clone()).unwrap();
    let pts: [[f32; 2]; 68] = pts.try_into().expect("68 points");
    let iris = if v["iris"].is_null() {
        None
    } else {
        let i: Vec<[f32; 3]> = serde_json::from_value(v["iris"].clone()).unwrap();
        Some([Iris { cx: i[0][0], cy: i[0][1], r: i[0][2] }, Iris { cx: i[1][0], cy: i[1][1], r: i[1][2] }])
    };
    (pts, iris)
}

/// RGB bytes -> BGR Mat (imgcodecs works in BGR).
fn rgb_to_bgr_mat(rgb: &[u8]) -> Mat {
    let src = Mat::new_rows_cols_with_bytes::<Vec3b>(RASTER_SIZE as i32, RASTER_SIZE as i32, rgb).unwrap();
    let mut bgr = Mat::default();
    imgproc::cvt_color_def(&src, &mut bgr, imgproc::COLOR_RGB2BGR).unwrap();
    bgr
}

fn read_png_rgb(path: &Path) -> Vec<u8> {
    let bgr = imgcodecs::imread(path.to_str().unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
    assert!(!bgr.empty(), "cannot read {}", path.display());
    assert_eq!((bgr.cols(), bgr.rows()), (RASTER_SIZE as i32, RASTER_SIZE as i32));
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(&bgr, &mut rgb, imgproc::COLOR_BGR2RGB).unwrap();
    rgb.data_bytes().unwrap().to_vec()
}

#[test]
fn raster_matches_goldens() {
    let bless = std::env::var("PUPPETCAM_BLESS").is_ok_and(|v| v == "1");
    for name in CASES {
        let (pts, iris) = load_case(name);
        let img = rasterise(&pts, iris.as_ref()).unwrap();
        assert_eq!(img.len(), RASTER_BYTES);
        let png = golden_dir().join(format!("raster_{name}.png"));
        if bless {
            let params = Vector::<i32>::from_slice(&[imgcodecs::IMWRITE_PNG_COMPRESSION, 9]);
            assert!(imgcodecs::imwrite(png.to_str().unwrap(), &rgb_to_bgr_mat(&img), &params).unwrap());
            eprintln!("blessed {}", png.display());
            continue;
        }
        let want = read_png_rgb(&png);
        let diff = want.iter().zip(&img).filter(|(a, b)| a != b).count();
        let maxd = want.iter().zip(&img).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
        assert_eq!(diff, 0, "{name}: {diff} bytes differ from {} (max |diff| {maxd})", png.display());
    }
}

/// The goldens must exercise what they claim: irises present/absent, clipping, sub-pixel ties.
#[test]
fn golden_cases_cover_the_spec() {
    let (p, i) = load_case("neutral");
    assert!(i.is_none());
    assert!(p.iter().all(|q| (0.0..256.0).contains(&q[0]) && (0.0..256.0).contains(&q[1])));
    assert!(load_case("open_mouth_iris").1.is_some_and(|i| i.iter().all(|x| x.r >= 0.5)));
    let (p, _) = load_case("rotated_subpixel");
    // v*16 + 0.5 an exact integer: a tie that round-half-even would resolve differently.
    let ties = p.iter().flatten().filter(|v| (**v * 16.0 + 0.5).fract() == 0.0 && (**v * 16.0).fract() != 0.0).count();
    assert!(ties >= 4, "only {ties} ties");
    let (p, i) = load_case("partly_outside");
    assert!(p.iter().any(|q| q[0] < 0.0 || q[1] >= 256.0));
    assert!(i.unwrap()[1].r < 0.5);
}
