//! Rust errors as Python exceptions.
//!
//! The exception classes live in Python (`ringkv/errors.py`, so they can inherit from both
//! `RingkvError` and the matching built-in such as `ValueError`); they are imported the first time
//! one is raised.

use pyo3::PyErr;

mod py {
    pyo3::import_exception!(ringkv.errors, InvalidRequestError);
    pyo3::import_exception!(ringkv.errors, UnknownNodeError);
    pyo3::import_exception!(ringkv.errors, ContextError);
    pyo3::import_exception!(ringkv.errors, SimulationError);
}

/// Bad input from the caller (a quorum, a configuration, a key): `ringkv.InvalidRequestError`,
/// a `ValueError`.
pub fn invalid(message: impl Into<String>) -> PyErr {
    py::InvalidRequestError::new_err(message.into())
}

/// A node name the simulator does not know: `ringkv.UnknownNodeError`.
pub fn unknown_node(message: impl Into<String>) -> PyErr {
    py::UnknownNodeError::new_err(message.into())
}

/// A context that cannot be decoded or used: `ringkv.ContextError`.
pub fn context(message: impl Into<String>) -> PyErr {
    py::ContextError::new_err(message.into())
}

/// The simulator failed inside (a panic in the core): `ringkv.SimulationError`.
pub fn simulation(message: impl Into<String>) -> PyErr {
    py::SimulationError::new_err(message.into())
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_string()
    }
}
