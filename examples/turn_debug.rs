//! Scratch: renders an avatar turned by a yaw (degrees) to a PNG, and lists culled triangles.
use puppetcam::avatar::{WarpAvatar, WarpRenderer};
use puppetcam::core::geometry::Similarity;
use puppetcam::core::head3d::{Euler, Rot3};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let av = WarpAvatar::load(std::path::Path::new(&a[1])).unwrap();
    let (w, h) = (av.shots[0].image.width, av.shots[0].image.height);
    let mut r = WarpRenderer::new(&av, w, h).unwrap();
    let rot = Rot3::from_euler(Euler { yaw: a[2].parse::<f64>().unwrap().to_radians(), ..Euler::ZERO });
    let mesh = r.neutral().to_vec();
    let f = r.render_turned(&mesh, r.neutral_iris().as_ref(), &Similarity::IDENTITY, Some(&rot), 0.04).unwrap();
    let m = opencv::core::Mat::new_rows_cols_with_bytes::<opencv::core::Vec3b>(h as i32, w as i32, &f.data).unwrap();
    let mut bgr = opencv::core::Mat::default();
    opencv::imgproc::cvt_color_def(&m, &mut bgr, opencv::imgproc::COLOR_RGB2BGR).unwrap();
    opencv::imgcodecs::imwrite(&a[3], &bgr, &opencv::core::Vector::new()).unwrap();
}
