//! Building a face-model session and checking the model's tensor shapes, so a wrong or stale file
//! fails at load time with a message naming the file and the shapes, not later with garbage output.
use crate::ep::{build_session, Provider, RuntimeOptions};
use crate::error::{Error, Result};
use ort::session::Session;
use std::path::Path;

/// Opens `path` on the CPU with `threads` intra-op threads (`[face] threads`, default 1: these
/// models take a few ms, and a second thread pays only while the generator's core is idle; an
/// extra thread never spins, so it gives its core back at once) and checks its single input
/// shape and its outputs' element counts. `what` names the model in messages.
pub(crate) fn load_checked(path: &Path, what: &str, threads: usize, input: &[i64], outputs: &[(&[i64], &str)]) -> Result<Session> {
    super::ort_env::ensure_ort_loaded()?;
    let opts = RuntimeOptions { providers: vec![Provider::Cpu], intra_threads: threads.max(1), intra_spinning: false, ..RuntimeOptions::default() };
    let (session, _status) = build_session(path, &opts, what)?;
    check_shapes(&session, path, what, input, outputs)?;
    Ok(session)
}

fn dims(o: &ort::value::Outlet) -> Option<Vec<i64>> {
    o.dtype().tensor_shape().map(|s| s.iter().copied().collect())
}

/// Input must match exactly (we feed that tensor); outputs must have the expected number of
/// elements (the layout of a size-1 axis does not matter to the decoder).
fn check_shapes(s: &Session, path: &Path, what: &str, input: &[i64], outputs: &[(&[i64], &str)]) -> Result<()> {
    let err = |msg: String| Error::Model { path: path.to_path_buf(), msg: format!("{what}: {msg}") };
    if s.inputs().len() != 1 {
        return Err(err(format!("expected 1 input of shape {input:?}, the model has {}", s.inputs().len())));
    }
    let got = dims(&s.inputs()[0]);
    if got.as_deref() != Some(input) {
        return Err(err(format!(
            "input `{}` has shape {}, expected {input:?}",
            s.inputs()[0].name(),
            got.map(|g| format!("{g:?}")).unwrap_or_else(|| "(not a tensor)".into())
        )));
    }
    if s.outputs().len() != outputs.len() {
        return Err(err(format!("expected {} outputs, the model has {}", outputs.len(), s.outputs().len())));
    }
    for (i, ((want, name), o)) in outputs.iter().zip(s.outputs()).enumerate() {
        let got = dims(o);
        let n_want: i64 = want.iter().product();
        let n_got: Option<i64> = got.as_ref().map(|g| g.iter().product());
        if n_got != Some(n_want) {
            return Err(err(format!(
                "output {i} `{}` ({name}) has shape {}, expected {want:?}",
                o.name(),
                got.map(|g| format!("{g:?}")).unwrap_or_else(|| "(not a tensor)".into())
            )));
        }
    }
    Ok(())
}

/// Runs `session` on one NCHW f32 tensor and returns each output flattened.
pub(crate) fn run(session: &mut Session, shape: [usize; 4], data: &[f32]) -> Result<Vec<Vec<f32>>> {
    let t = ort::value::TensorRef::from_array_view((shape, data))?;
    let out = session.run(ort::inputs![t])?;
    let mut v = Vec::with_capacity(out.len());
    for i in 0..out.len() {
        let (_, d) = out[i].try_extract_tensor::<f32>()?;
        v.push(d.to_vec());
    }
    Ok(v)
}
