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
pub mod features;
pub mod pasteback;
pub mod regions;
