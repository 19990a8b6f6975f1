//! numpy arrays in and out: inputs x (n × features, float64, C-contiguous — the Python wrapper
//! converts other dtypes and layouts first) checked into a [`Batch`] with messages naming the
//! argument, and results handed to numpy without a second copy.

use gradflow::error::Error;
use gradflow::Batch;
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

/// x (n × features) as a batch for a model taking `features` inputs per sample, every entry
/// finite. `name` is the argument's name in messages.
pub fn batch_from(
    x: &PyReadonlyArray2<'_, f64>,
    features: usize,
    name: &str,
) -> Result<Batch, Error> {
    let (n, d) = (x.shape()[0], x.shape()[1]);
    if n == 0 {
        return Err(Error::Invalid(format!(
            "{name} has no samples (shape ({n}, {d})): pass at least one row"
        )));
    }
    if d != features {
        return Err(Error::Invalid(format!(
            "{name} has {d} features per sample but the model takes {features}: pass {name} with shape (n, {features})"
        )));
    }
    let data = match x.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => x.as_array().iter().copied().collect(),
    };
    if let Some(k) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "{name}[{}, {}] is {} — the inputs must be finite: remove or impute that sample",
            k / d,
            k % d,
            data[k]
        )));
    }
    Ok(Batch::from_vec(d, n, data))
}

/// A flat parameter vector of length `p`, every entry finite.
pub fn theta_from(
    theta: &PyReadonlyArray1<'_, f64>,
    p: usize,
    name: &str,
) -> Result<Vec<f64>, Error> {
    let v: Vec<f64> = theta.as_array().iter().copied().collect();
    if v.len() != p {
        return Err(Error::Invalid(format!(
            "{name} has {} entries but the model has p = {p} parameters",
            v.len()
        )));
    }
    if let Some(k) = v.iter().position(|z| !z.is_finite()) {
        return Err(Error::Invalid(format!(
            "{name}[{k}] is {}: parameters must be finite",
            v[k]
        )));
    }
    Ok(v)
}

/// A row-major (rows × cols) vector as a numpy array, without copying it.
pub fn matrix_to_py(
    py: Python<'_>,
    data: Vec<f64>,
    rows: usize,
    cols: usize,
) -> Bound<'_, PyArray2<f64>> {
    Array2::from_shape_vec((rows, cols), data)
        .expect("rows × cols entries")
        .into_pyarray(py)
}

pub fn vector_to_py(py: Python<'_>, data: Vec<f64>) -> Bound<'_, PyArray1<f64>> {
    data.into_pyarray(py)
}
