//! Face landmarks through ONNX Runtime: MediaPipe face detector, 468-point mesh, irises, tracking.
pub mod extract;
