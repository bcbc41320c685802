//! Loading ONNX Runtime for the face models. `crate::ep` owns the one-per-process load; this thin
//! wrapper is what the face code calls, so moving the loader later touches one line.

/// Loads ONNX Runtime once (from `ORT_DYLIB_PATH` or the places `crate::ep` searches); later calls
/// are free. The error names the paths tried.
pub fn ensure_ort_loaded() -> crate::Result<()> {
    crate::ep::ensure_ort_loaded(None).map(|_| ())
}
