//! # ringkv-py
//!
//! The native half of the Python package `ringkv`: [`pyo3`] classes over `ringkv-core`, exposed
//! as the private module `ringkv._native`. The public API is written in Python
//! (`bindings-python/python/ringkv`) on top of it; that is where arguments get their defaults,
//! types are checked and results become Python objects.
//!
//! | class | wraps |
//! | --- | --- |
//! | `Sim` ([`sim::PySim`]) | [`ringkv_core::sim::Sim`], the deterministic cluster simulator, and its checker |
//! | `Ring` ([`ring::PyRing`]) | [`ringkv_core::ring::Ring`]: placement, preference lists, balance, movement |
//! | `Context`, `VersionVector` ([`version`]) | [`ringkv_core::version::Context`] and its version vector |
//! | `key_partition` ([`ring::key_partition`]) | a key's partition by the core's hash: the live clients route by it |
//!
//! No Rust error or panic crosses into Python as a crash: every error becomes an exception of
//! `ringkv.errors` (imported from Python when raised, so the Python layer owns the hierarchy), and
//! the simulator runs under `catch_unwind`, so a bug in the core surfaces as
//! `ringkv.errors.SimulationError` and retires that one simulator.
//!
//! Built by maturin (`pip install ./bindings-python`); plain `cargo build` only type-checks it.

use pyo3::prelude::*;

pub mod errors;
pub mod ring;
pub mod sim;
pub mod version;

/// Native core of the `ringkv` package. Use the public API in `ringkv` instead.
#[pymodule]
mod _native {
    #[pymodule_export]
    use super::ring::{key_partition, PyRing};
    #[pymodule_export]
    use super::sim::PySim;
    #[pymodule_export]
    use super::version::{PyContext, PyVersionVector};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("CORE_VERSION", env!("CARGO_PKG_VERSION"))?;
        m.add("MAX_PARTITIONS", ringkv_core::ring::MAX_PARTITIONS)?;
        m.add("MAX_TARGET_N", ringkv_core::ring::MAX_TARGET_N)?;
        m.add("MAX_TTL_MS", ringkv_core::bucket::MAX_TTL_MS)?;
        m.add(
            "DEFAULT_MAX_VALUE_BYTES",
            ringkv_core::request::DEFAULT_MAX_VALUE_BYTES,
        )?;
        Ok(())
    }
}
