//! Pure core: no I/O, no threads, exhaustively tested. Geometry, rasterising, colour, filters.
pub mod types;
pub mod landmarks;
pub mod raster;
pub mod colour;
pub mod one_euro;
pub mod geometry;
pub mod retarget;
pub mod mesh;
pub mod warp;
pub mod head3d;
pub mod warp3d;
pub mod face_template;
pub mod features;
pub mod mouth_interior;
pub mod mouth_prior;
pub mod pasteback;
pub mod regions;
