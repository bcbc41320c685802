//! The fit sheet of docs/api.md ("Filling the frame"): each portrait in a 16:9 output with
//! `[output] fit = contain | cover | blur`, one row per portrait, as one JPEG.
//!   cargo run --example fit_sheet -- OUT.jpg PORTRAIT...
use opencv::core::{Mat, Point, Scalar, Vec3b, Vector};
use opencv::imgproc;
use puppetcam::avatar::WarpRenderer;
use puppetcam::core::fit::Fit;
use puppetcam::core::types::Frame;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() >= 2, "usage: fit_sheet OUT.jpg PORTRAIT...");
    let (tw, th, pad, label) = (480u32, 270u32, 8u32, 28u32);
    let fits = [Fit::Contain, Fit::Cover, Fit::Blur];
    let rows = args.len() - 1;
    let (sw, sh) = (pad + fits.len() as u32 * (tw + pad), pad + rows as u32 * (th + label + pad));
    let mut sheet = Frame::black(sw, sh);
    sheet.data.iter_mut().for_each(|v| *v = 30);
    let models = puppetcam::face::FaceModels::locate()?;
    for (r, p) in args[1..].iter().enumerate() {
        let (av, _) = puppetcam::avatar::create::create(&[p.into()], "sheet", &models)?;
        for (c, fit) in fits.iter().enumerate() {
            let canvas = WarpRenderer::with_fit(&av, tw, th, *fit)?.canvas().clone();
            let (x, y) = (pad + c as u32 * (tw + pad), pad + r as u32 * (th + label + pad) + label);
            puppetcam::pipeline::compose::blit(&mut sheet, &canvas, x as i32, y as i32);
            let name = std::path::Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let text = format!("{} - {} ({}x{})", fit.name(), name, av.shots[0].image.width, av.shots[0].image.height);
            let mut m = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(sh as i32, sw as i32, &mut sheet.data)?;
            imgproc::put_text(&mut m, &text, Point::new(x as i32, y as i32 - 8), imgproc::FONT_HERSHEY_SIMPLEX, 0.55, Scalar::all(230.0), 1, imgproc::LINE_AA, false)?;
        }
    }
    let rgb = Mat::new_rows_cols_with_bytes::<Vec3b>(sh as i32, sw as i32, &sheet.data)?;
    let mut bgr = Mat::default();
    imgproc::cvt_color_def(&rgb, &mut bgr, imgproc::COLOR_RGB2BGR)?;
    let params = Vector::<i32>::from_slice(&[opencv::imgcodecs::IMWRITE_JPEG_QUALITY, 80]);
    anyhow::ensure!(opencv::imgcodecs::imwrite(&args[0], &bgr, &params)?, "cannot write {}", args[0]);
    println!("wrote {}", args[0]);
    Ok(())
}
